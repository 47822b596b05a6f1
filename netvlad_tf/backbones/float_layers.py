"""The backbone layers that stay float32 when the rest runs in low precision (int8 TFLite,
bfloat16/float16 inference): every `PixelNormalization` (chosen by type, whatever its name, so
converted models keep their preprocessing in float too) and the early layers listed here.

Measured on the trained demo model (EfficientNet-Lite0 + NetVLAD, head in float32): the whole
Lite0 backbone in full int8 gives cosine 0.89 to the float32 descriptor, with its stem and
blocks 0–1 in float 0.995 (up to block 0 only: 0.979); in bfloat16, median 0.9977 (minimum
0.994) over 18 bundled queries, with the same layers in float32 0.9998 (0.9994). Their
activations are what 8 bits of mantissa or of integer do not resolve.
"""

from __future__ import annotations

import keras

from netvlad_tf.backbones.preprocessing import PixelNormalization

# Backbone name prefix → name prefixes of its early layers kept in float32.
FLOAT_EARLY_LAYERS = {
    "efficientnet_lite0": ("stem_", "block0_", "block1_"),
}


def float_layer_names(backbone: keras.Model) -> tuple[str, ...]:
    """Name prefixes of the backbone's layers that stay float32 in low precision.

    Example:
    >>> from netvlad_tf.backbones.vgg16 import vgg16_conv5_3
    >>> float_layer_names(vgg16_conv5_3(weights=None))
    ('vgg16_preprocessing',)
    """
    early = next((layers for name, layers in FLOAT_EARLY_LAYERS.items() if backbone.name.startswith(name)), ())
    return early + tuple(layer.name for layer in backbone.layers if isinstance(layer, PixelNormalization))


def stays_float(layer: keras.layers.Layer, prefixes: tuple[str, ...]) -> bool:
    """Whether `layer` is one of `float_layer_names`' layers."""
    return layer.name.startswith(prefixes)
