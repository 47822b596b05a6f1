"""The backbone layers that stay float32 when the rest runs in low precision (int8 TFLite,
bfloat16/float16/int8 embedding): every `PixelNormalization` (chosen by type, whatever its name,
so converted models keep their preprocessing in float too), the early layers listed here, and
for embedding on a computer also the depthwise convolutions.

Measured on the demo's whitened model (EfficientNet-Lite0 + NetVLAD K = 64, 1024-D; 174 winter
queries at 128×256; `python benchmarks/bench_precision.py --sections 2`): in bfloat16, the whole
backbone gives cosine to float32 0.974 median (least 0.929); the stem and blocks 0–1 in float32
0.9987 (0.9976); and every depthwise convolution too 0.9996 (0.9990), as much as float32 blocks
0–3 give (0.9996, 0.9991) at a quarter of the float32 work (depthwise convolutions are 3 % of
Lite0's multiply-adds, blocks 2–3 18 %). A depthwise convolution sums 9 or 25 products of one
channel, so its rounding is not averaged away over hundreds of input channels as in a 1×1
convolution. In int8 the same layers lift the ONNX model from 0.986 to 0.991 median. The
phone's TFLite keeps only the early layers in float (0.993 there): each float island costs a
conversion on a small core.
"""

from __future__ import annotations

import keras

from netvlad_tf.backbones.preprocessing import PixelNormalization

# Backbone name prefix → name prefixes of its early layers kept in float32.
FLOAT_EARLY_LAYERS = {
    "efficientnet_lite0": ("stem_", "block0_", "block1_"),
}
# Backbone name prefix → name prefixes of the layers also kept in float32 when embedding on a
# computer (bfloat16, float16, int8 on ONNX Runtime): its depthwise convolutions.
FLOAT_EMBEDDING_LAYERS = {
    "efficientnet_lite0": tuple(f"block{block}_dw_conv" for block in range(16)),
}


def float_layer_names(backbone: keras.Model, embedding: bool = False) -> tuple[str, ...]:
    """Name prefixes of the backbone's layers that stay float32 in low precision.

    Args:
        backbone: the backbone model (its name selects the table's row).
        embedding: also the layers kept float32 when embedding on a computer
            (`FLOAT_EMBEDDING_LAYERS`), not in the phone's TFLite.

    Returns:
        Layer name prefixes.

    Example:
    >>> from netvlad_tf.backbones.vgg16 import vgg16_conv5_3
    >>> float_layer_names(vgg16_conv5_3(weights=None))
    ('vgg16_preprocessing',)
    """
    tables = (FLOAT_EARLY_LAYERS, FLOAT_EMBEDDING_LAYERS) if embedding else (FLOAT_EARLY_LAYERS,)
    listed = tuple(prefix for table in tables
                   for name, prefixes in table.items() if backbone.name.startswith(name) for prefix in prefixes)
    return listed + tuple(layer.name for layer in backbone.layers if isinstance(layer, PixelNormalization))


def stays_float(layer: keras.layers.Layer, prefixes: tuple[str, ...]) -> bool:
    """Whether `layer` is one of `float_layer_names`' layers."""
    return layer.name.startswith(prefixes)
