"""Backbones: functional models from RGB images to maps of local descriptors."""

from netvlad_tf.backbones.efficientnet_lite import (
    efficientnet_lite0,
    efficientnet_lite0_classifier,
)
from netvlad_tf.backbones.preprocessing import PixelNormalization
from netvlad_tf.backbones.registry import BACKBONES, get_backbone, register_backbone
from netvlad_tf.backbones.vgg16 import vgg16_conv5_3

__all__ = [
    "BACKBONES",
    "PixelNormalization",
    "efficientnet_lite0",
    "efficientnet_lite0_classifier",
    "get_backbone",
    "register_backbone",
    "vgg16_conv5_3",
]
