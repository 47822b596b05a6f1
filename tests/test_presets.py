"""Named presets: built ones give the configured model; converted ones need their file."""

from pathlib import Path

import numpy as np
import pytest

import netvlad_tf
from netvlad_tf.converters import PRESETS, from_preset

FIXTURES = Path(__file__).with_name("fixtures")


def test_built_preset_has_its_configuration_and_overrides():
    model = netvlad_tf.build_netvlad_model.from_preset("efficientnet_lite0_imagenet", num_clusters=4)
    assert model.backbone.output.shape[-1] == 112  # stride-16 cut of Lite0
    assert model.pooling.num_clusters == 4 and model.descriptor_dim == 4 * 112
    stride32 = from_preset("efficientnet_lite0_stride32_imagenet", num_clusters=2, whitening_dim=16)
    assert stride32.backbone.output.shape[-1] == 320 and stride32.descriptor_dim == 16


def test_converted_preset_reads_the_given_file_and_says_which_file_it_needs():
    expected = np.load(FIXTURES / "pytorch_netvlad_expected.npz")
    model = from_preset("vgg16_pitts30k_pytorch", weights=FIXTURES / "pytorch_netvlad_checkpoint.pth.tar")
    np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-5)
    with pytest.raises(ValueError, match="vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat"):
        from_preset("vgg16_pitts30k_matconvnet")
    with pytest.raises(ValueError, match="choose one of"):
        from_preset("resnet_imagenet")


def test_every_preset_says_what_it_was_trained_on():
    for name, preset in PRESETS.items():
        assert preset.description and preset.trained_on, name
        assert (preset.converter is None) == (preset.weights_file is None), name


def test_from_preset_is_a_classmethod_of_the_model_class():
    from netvlad_tf import PlaceRecognitionModel

    model = PlaceRecognitionModel.from_preset("efficientnet_lite0_imagenet", num_clusters=4)
    assert isinstance(model, PlaceRecognitionModel) and model.pooling.num_clusters == 4
    assert model.descriptor_dim == 4 * 112
