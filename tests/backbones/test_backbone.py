"""VGG16 conv5_3 before ReLU, checked against Keras' own VGG16."""

import keras
import numpy as np
import pytest

from netvlad_tf import vgg16_conv5_3
from netvlad_tf.backbones import get_backbone


@pytest.fixture(scope="module")
def vgg16_weights_file(tmp_path_factory):
    keras.utils.set_random_seed(7)
    source = keras.applications.VGG16(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.weights.h5"
    source.save_weights(path)
    return path


def test_conv5_3_is_pre_relu_and_matches_keras_vgg16(rng, vgg16_weights_file):
    images = (rng.random((2, 64, 96, 3)) * 255).astype("float32")
    backbone = vgg16_conv5_3(weights=vgg16_weights_file)
    features = np.array(backbone(images))
    assert features.shape == (2, 4, 6, 512)  # stride 16, 512 channels
    assert (features < 0).any(), "conv5_3 must be taken before its ReLU"

    reference_vgg = keras.applications.VGG16(include_top=False, weights=None)
    reference_vgg.load_weights(vgg16_weights_file)
    after_relu = keras.Model(reference_vgg.input, reference_vgg.get_layer("block5_conv3").output)
    expected = after_relu.predict(keras.applications.vgg16.preprocess_input(images.copy()), verbose=0)
    np.testing.assert_allclose(np.maximum(features, 0), expected, rtol=1e-4, atol=1e-3)


def test_random_weights_backbone_shapes(rng):
    backbone = get_backbone("vgg16", weights=None)
    assert backbone.output.shape[-1] == 512
    assert np.array(backbone(rng.random((1, 32, 48, 3)) * 255)).shape == (1, 2, 3, 512)


def test_trainable_from_policy():
    backbone = vgg16_conv5_3(weights=None, trainable_from="block5_conv1")
    trainable = {layer.name: layer.trainable for layer in backbone.layers if layer.weights}
    assert not trainable["block4_conv3"]
    assert trainable["block5_conv1"] and trainable["block5_conv3"]
    assert len(backbone.trainable_weights) == 6
    everything = vgg16_conv5_3(weights=None, trainable_from=None)
    assert len(everything.trainable_weights) == 26


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vgg16_conv5_3(weights=tmp_path / "nope.h5")


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="not a VGG16 layer"):
        vgg16_conv5_3(weights=None, trainable_from="block6_conv1")
    with pytest.raises(ValueError, match="choose one of"):
        get_backbone("resnet9000")


def test_keras_named_weights_file_with_wrong_checksum_is_a_clear_error(tmp_path):
    from netvlad_tf.backbones.vgg16 import KERAS_VGG16_NOTOP_FILE

    truncated = tmp_path / KERAS_VGG16_NOTOP_FILE
    truncated.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    with pytest.raises(ValueError, match="MD5"):
        vgg16_conv5_3(weights=truncated)
