"""The place-recognition model: composition, whitening, `.keras` round trip, one fit step."""

import keras
import numpy as np
import pytest

from netvlad_tf import (
    GeMPooling,
    MACPooling,
    NetVLAD,
    PlaceRecognitionModel,
    build_netvlad_model,
    fit_pca_whitening,
    initialize_clusters,
)
from tests.support.tiny_backbone import TINY_BACKBONE, TINY_DIM


@pytest.fixture
def images(rng):
    return (rng.random((6, 32, 32, 3)) * 255).astype("float32")


def test_paper_model_end_to_end(images, tmp_path):
    model = build_netvlad_model(weights=None, num_clusters=4, whitening_dim=5)
    assert isinstance(model.pooling, NetVLAD)
    alpha = initialize_clusters(model, [images[:3], images[3:]], num_descriptors=24, descriptors_per_image=4)
    assert alpha > 0
    pooled = model.pooled_model.predict(images, verbose=0)
    assert pooled.shape == (6, 4 * 512)
    whitening = fit_pca_whitening(pooled, output_dim=5)
    model = model.with_whitening(whitening)

    descriptors = model.predict(images, verbose=0)
    expected = whitening.transform(pooled)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(descriptors, expected, atol=1e-4)

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, PlaceRecognitionModel)
    assert reloaded.whitening_dim == 5 and reloaded.pooling.num_clusters == 4
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), descriptors)


@pytest.mark.parametrize("pooling, layer_class, dim", [("mac", MACPooling, TINY_DIM), ("gem", GeMPooling, TINY_DIM)])
def test_baseline_poolings(images, pooling, layer_class, dim):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling=pooling)
    assert isinstance(model.pooling, layer_class)
    descriptors = model.predict(images, verbose=0)
    assert descriptors.shape == (6, dim)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_one_fit_step_changes_only_trainable_layers(images):
    model = build_netvlad_model(weights=None, num_clusters=4, whitening_dim=3)
    frozen_before = np.array(model.backbone.get_layer("block1_conv1").kernel)
    trained_before = np.array(model.backbone.get_layer("block5_conv3").kernel)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(images, np.ones((6, 3), dtype="float32"), batch_size=6, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.backbone.get_layer("block1_conv1").kernel, frozen_before)
    assert not np.allclose(model.backbone.get_layer("block5_conv3").kernel, trained_before)


def test_whitening_errors(rng):
    with pytest.raises(ValueError, match=rf"whitening_dim must be an integer in \[1, {TINY_DIM}\]"):
        build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac", whitening_dim=600)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    with pytest.raises(ValueError, match=f"pooling gives {TINY_DIM}"):
        model.with_whitening(fit_pca_whitening(rng.normal(size=(20, 64)), 4))


def test_compiled_model_reloads_compiled_with_its_ranking_loss(tmp_path):
    import warnings

    from netvlad_tf import RankingLoss

    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9), loss=RankingLoss(margin=0.2))
    model.save(tmp_path / "compiled.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = keras.models.load_model(tmp_path / "compiled.keras")
    assert not [w for w in caught if "compile()" in str(w.message)]
    assert isinstance(reloaded.ranking_loss, RankingLoss) and reloaded.ranking_loss.margin == 0.2
    assert isinstance(reloaded.optimizer, keras.optimizers.SGD)
