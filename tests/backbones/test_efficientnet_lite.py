"""EfficientNet-Lite0: the Keras port against the original PyTorch model's ImageNet logits."""

from pathlib import Path

import numpy as np
import pytest

from netvlad_tf.backbones import get_backbone
from netvlad_tf.backbones.efficientnet_lite import efficientnet_lite0, efficientnet_lite0_classifier
from netvlad_tf.backbones.lite0_weights import lite0_imagenet_state_dict, load_lite0_state_dict
from netvlad_tf.sample_data import nordland_csv

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.slow
def test_imagenet_logits_match_the_original_pytorch_model():
    # Reference written by torch running the model the weights were released for
    # (fixtures/make_lite0_reference.py), on real Nordland images.
    reference = np.load(FIXTURES / "lite0_reference_logits.npz")
    root = Path(nordland_csv("test")).parent
    import tensorflow as tf

    images = np.stack([
        tf.image.resize(tf.io.decode_png(tf.io.read_file(str(root / path)), channels=3), (224, 224)).numpy()
        for path in reference["image_paths"]
    ])
    logits = efficientnet_lite0_classifier(weights="imagenet").predict(images, verbose=0)
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(logits.argmax(axis=1), reference["logits"].argmax(axis=1))


@pytest.mark.parametrize("cut, stride, channels", [("stride16", 16, 112), ("stride32", 32, 320)])
def test_cuts_are_linear_maps_at_their_stride(cut, stride, channels, rng):
    backbone = get_backbone("efficientnet_lite0", weights="imagenet", cut=cut)
    images = (rng.random((1, 4 * stride, 3 * stride, 3)) * 255).astype("float32")
    features = np.asarray(backbone(images))
    assert features.shape == (1, 4, 3, channels)
    assert (features < 0).any(), "the cut is a linear projection, before any ReLU6"


@pytest.mark.slow
def test_cut_equals_the_classifier_inner_layer(rng):
    classifier = efficientnet_lite0_classifier(weights="imagenet")
    import keras

    inner = keras.Model(classifier.input, classifier.get_layer("block10_add").output)
    images = (rng.random((2, 64, 64, 3)) * 255).astype("float32")
    np.testing.assert_allclose(
        np.asarray(efficientnet_lite0(cut="stride16")(images)), inner.predict(images, verbose=0),
        atol=1e-4,
    )


def test_freezing_policy_keeps_batch_norm_frozen():
    backbone = efficientnet_lite0(weights=None, cut="stride16")
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    # Stage 5 is blocks 8–10; only their convolutions train.
    assert trainable == {f"block{b}_{part}_conv" for b in (8, 9, 10) for part in ("expand", "dw", "project")}
    everything = efficientnet_lite0(weights=None, cut="stride32", trainable_from=None)
    assert not any(layer.trainable for layer in everything.layers if "_bn" in layer.name)
    assert len(everything.trainable_weights) == 1 + 15 * 3 + 2  # stem + blocks 1–15 + block 0


@pytest.mark.slow
def test_bad_arguments_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        efficientnet_lite0(weights=None, cut="stride8")
    with pytest.raises(ValueError, match="not a layer"):
        efficientnet_lite0(weights=None, trainable_from="block99_dw_conv")
    with pytest.raises(FileNotFoundError):
        efficientnet_lite0(weights=tmp_path / "missing.pth")
    state_dict = dict(lite0_imagenet_state_dict("imagenet"))
    del state_dict["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(ValueError, match="_blocks.3._depthwise_conv.weight"):
        load_lite0_state_dict(efficientnet_lite0(weights=None), state_dict)
    state_dict = dict(lite0_imagenet_state_dict("imagenet"))
    state_dict["_conv_stem.weight"] = state_dict["_conv_stem.weight"][:16]
    with pytest.raises(ValueError, match="shapes"):
        load_lite0_state_dict(efficientnet_lite0(weights=None), state_dict)


@pytest.mark.slow
def test_netvlad_model_on_lite0_round_trips_through_keras_file(tmp_path, rng):
    import keras

    from netvlad_tf import build_netvlad_model

    model = build_netvlad_model(
        backbone="efficientnet_lite0", weights="imagenet", num_clusters=4,
        backbone_options={"cut": "stride32"},
    )
    assert model.descriptor_dim == 4 * 320
    images = (rng.random((2, 64, 64, 3)) * 255).astype("float32")
    model.save(tmp_path / "lite0.keras")
    reloaded = keras.models.load_model(tmp_path / "lite0.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
