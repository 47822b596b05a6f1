"""The backbone layers that stay float32 when the rest runs in low precision (int8 TFLite,
bfloat16/float16/int8 embedding): every `PixelNormalization` (chosen by type, whatever its name,
so converted models keep their preprocessing in float too), the early layers listed here, for
embedding on a computer a few more, and for int8 embedding more again.

Measured on the demo's whitened model (EfficientNet-Lite0 + NetVLAD K = 64, 1024-D), every
other winter query (174) at 128×256, cosine to the float32 descriptor, median (least); int8
with uint8 weights on an AVX2-only CPU; "work": the multiply-adds left in float32:

| kept float32                        | bfloat16        | int8 (ONNX Runtime) | work |
|-------------------------------------|-----------------|---------------------|------|
| nothing                             | 0.974 (0.929)   | 0.64 (0.51)         | 0 %  |
| stem, blocks 0–1                    | 0.9987 (0.9976) | 0.986 (0.974)       | 21 % |
| … and every depthwise convolution   | 0.9996 (0.9990) | 0.991 (0.983)       | 30 % |
| … and blocks 2–3                    | 0.9998 (0.9995)¹| 0.995 (0.990)       | 45 % |

¹ all 348 queries (`python benchmarks/bench_precision.py --sections 2`); int8 there 0.995 (0.986).

A depthwise convolution sums 9 or 25 products of one channel, so its rounding is not averaged
away over hundreds of input channels as in a 1×1 convolution; blocks 2–3 are where int8's
per-tensor activation ranges lose most. Embedding keeps the last row (int8's least cosine
gains most from it; bfloat16's speed target is VGG16, whose only float layer is its pixel
normalisation). The phone's TFLite keeps the second row (cosine 0.993 there): each float
island costs a conversion on a small core.

int8 on ONNX Runtime (ReLU6 folded, biases corrected: `netvlad_tf.inference.int8`) loses most
to its per-tensor 8-bit activations, spread evenly: leaving any one of them float gains at most
0.0002. Each further block kept float32, measured as above (every other winter query):

| kept float32, beyond the last row above | int8 (ONNX Runtime) | work |
|-----------------------------------------|---------------------|------|
| nothing more                            | 0.9981 (0.9956)     | 45 % |
| blocks 4–5                              | 0.9987 (0.9972)     | 56 % |
| … and block 6                           | 0.9989 (0.9975)     | 62 % |
| … and block 7                           | 0.9992 (0.9982)     | 68 % |
| … and block 8                           | 0.9996 (0.9992)     | 76 % |

int8 embedding keeps blocks 4–7: the first row past a median cosine of 0.999, the bound the
descriptors are held to. (VGG16 has no such table: its only float layer is its normalisation.)
"""

from __future__ import annotations

import keras

from netvlad_tf.backbones.preprocessing import PixelNormalization

# Backbone name prefix → name prefixes of its early layers kept in float32.
FLOAT_EARLY_LAYERS = {
    "efficientnet_lite0": ("stem_", "block0_", "block1_"),
}
# Backbone name prefix → name prefixes of the layers also kept in float32 when embedding on a
# computer (bfloat16, float16, int8 on ONNX Runtime).
FLOAT_EMBEDDING_LAYERS = {
    "efficientnet_lite0": ("block2_", "block3_") + tuple(f"block{block}_dw_conv" for block in range(16)),
}
# Backbone name prefix → name prefixes of the layers also kept in float32 when embedding in int8.
FLOAT_INT8_LAYERS = {
    "efficientnet_lite0": ("block4_", "block5_", "block6_", "block7_"),
}
# Where a model runs in low precision: the phone's int8 TFLite, or embedding on a computer.
RUNS_IN = ("phone", "bfloat16", "float16", "int8")


def float_layer_names(backbone: keras.Model, runs_in: str = "phone") -> tuple[str, ...]:
    """Name prefixes of the backbone's layers that stay float32 in low precision.

    Args:
        backbone: the backbone model (its name selects the tables' rows).
        runs_in: `"phone"` (the int8 TFLite), or the precision it is embedded in on a computer:
            `"bfloat16"`, `"float16"` (also `FLOAT_EMBEDDING_LAYERS`) or `"int8"` (also
            `FLOAT_INT8_LAYERS`).

    Returns:
        Layer name prefixes.

    Example:
    >>> from netvlad_tf.backbones.vgg16 import vgg16_conv5_3
    >>> float_layer_names(vgg16_conv5_3(weights=None), runs_in="int8")
    ('vgg16_preprocessing',)
    """
    if runs_in not in RUNS_IN:
        raise ValueError(f"Unknown place to run {runs_in!r}; use one of {RUNS_IN}.")
    tables = [FLOAT_EARLY_LAYERS]
    if runs_in != "phone":
        tables.append(FLOAT_EMBEDDING_LAYERS)
    if runs_in == "int8":
        tables.append(FLOAT_INT8_LAYERS)
    listed = tuple(prefix for table in tables
                   for name, prefixes in table.items() if backbone.name.startswith(name) for prefix in prefixes)
    return listed + tuple(layer.name for layer in backbone.layers if isinstance(layer, PixelNormalization))


def stays_float(layer: keras.layers.Layer, prefixes: tuple[str, ...]) -> bool:
    """Whether `layer` is one of `float_layer_names`' layers."""
    return layer.name.startswith(prefixes)
