"""Splitting a model into its frozen trunk and trainable head."""

import keras
import numpy as np
import pytest

from netvlad_tf import RankingLoss, build_netvlad_model
from tests.support.tiny_backbone import TINY_BACKBONE


@pytest.mark.parametrize("backbone", ["vgg16", "efficientnet_lite0", TINY_BACKBONE])
def test_head_of_trunk_is_the_model(backbone):
    model = build_netvlad_model(backbone, weights=None, num_clusters=4)
    split = model.frozen_split()
    assert split.trunk.trainable_weights == []
    assert {id(v) for v in split.head.trainable_weights} == {id(v) for v in model.trainable_weights}
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(split.head(split.trunk(images)), model(images), atol=1e-6)


def test_vgg16_trunk_is_pool4():
    model = build_netvlad_model(weights=None, num_clusters=4)
    split = model.frozen_split()
    pool4 = keras.Model(model.backbone.input, model.backbone.get_layer("block4_pool").output)
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    assert split.cut_layer == "block5_conv1"
    np.testing.assert_array_equal(split.trunk(images), pool4(images))


def test_whitening_is_part_of_the_head():
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, whitening_dim=16)
    assert model.frozen_split().head.output.shape == (None, 16)


def test_no_split_when_the_whole_backbone_trains():
    assert build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, trainable_from=None).frozen_split() is None


def test_whole_backbone_frozen_puts_only_pooling_in_the_head():
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, pooling="mac")
    model.backbone.trainable = False
    split = model.frozen_split()
    assert split.cut_layer == ""
    images = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(split.head(split.trunk(images)), model(images), atol=1e-6)


def test_a_step_on_trunk_features_equals_the_step_on_images():
    """Same tuple, once as images and once as their trunk features: identical updates."""
    keras.utils.set_random_seed(0)
    from_images = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    from_features = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    from_features.set_weights(from_images.get_weights())
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (6, 48, 64, 3)).astype("float32")
    features = np.asarray(from_features.frozen_split().trunk(images))
    masks = {"positive_mask": np.ones((1, 1), "float32"), "negative_mask": np.array([[1, 1, 1, 0]], "float32")}
    image_batch = {"query": images[None, 0], "positives": images[None, 1:2], "negatives": images[None, 2:], **masks}
    feature_batch = {"query_features": features[None, 0], "positive_features": features[None, 1:2],
                     "negative_features": features[None, 2:], **masks}
    initial = [np.array(v) for v in from_images.trainable_weights]
    losses = []
    for model, batch in ((from_images, image_batch), (from_features, feature_batch)):
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9),
                      loss=RankingLoss(margin=10.0, normalization="none"))
        losses.append([model.train_on_batch(batch) for _ in range(2)])
    assert losses[0][0] > 0
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    trained = [np.array(v) for v in from_images.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(initial, trained))
    for after_images, after_features in zip(from_images.get_weights(), from_features.get_weights()):
        np.testing.assert_allclose(after_images, after_features, atol=1e-5)
