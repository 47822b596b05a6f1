"""The backbone layers that stay float32 when the rest runs in low precision: every
`PixelNormalization` (chosen by type, whatever its name, so converted models keep their
preprocessing in float too), the early layers listed here, for embedding on a computer a few more,
and for int8 embedding more again. The measurements that chose the lists are in
docs/benchmarks.md ("Which layers stay float32").
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
# The precisions images are embedded in on a computer with some layers kept float32.
EMBEDDING_PRECISIONS = ("bfloat16", "float16", "int8")


def tflite_float_layers(backbone: keras.Model) -> tuple[str, ...]:
    """Name prefixes of the backbone's layers that stay float32 in the int8 TFLite file (each
    float island costs a conversion on a phone's small core, so only the earliest layers).

    Args:
        backbone: the backbone model (its name selects the table rows).

    Returns:
        Layer name prefixes.

    Example:
    >>> from netvlad_tf.backbones.vgg16 import vgg16_conv5_3
    >>> tflite_float_layers(vgg16_conv5_3(weights=None))
    ('vgg16_preprocessing',)
    """
    return _listed(backbone, [FLOAT_EARLY_LAYERS])


def embedding_float_layers(backbone: keras.Model, precision: str) -> tuple[str, ...]:
    """Name prefixes of the backbone's layers that stay float32 when images are embedded in
    `precision` on a computer (`netvlad_tf.inference.precision`).

    Args:
        backbone: the backbone model (its name selects the table rows).
        precision: `"bfloat16"`, `"float16"` (also `FLOAT_EMBEDDING_LAYERS`) or `"int8"` (also
            `FLOAT_INT8_LAYERS`).

    Returns:
        Layer name prefixes.

    Example:
    >>> from netvlad_tf.backbones.efficientnet_lite import efficientnet_lite0
    >>> "block7_" in embedding_float_layers(efficientnet_lite0(weights=None), "int8")
    True
    """
    if precision not in EMBEDDING_PRECISIONS:
        raise ValueError(f"Layers are kept float32 for {', '.join(EMBEDDING_PRECISIONS)}, not {precision!r}.")
    tables = [FLOAT_EARLY_LAYERS, FLOAT_EMBEDDING_LAYERS] + ([FLOAT_INT8_LAYERS] if precision == "int8" else [])
    return _listed(backbone, tables)


def _listed(backbone: keras.Model, tables: list[dict]) -> tuple[str, ...]:
    """The tables' prefixes for this backbone, then its `PixelNormalization` layers."""
    listed = tuple(prefix for table in tables
                   for name, prefixes in table.items() if backbone.name.startswith(name) for prefix in prefixes)
    return listed + tuple(layer.name for layer in backbone.layers if isinstance(layer, PixelNormalization))


def stays_float(layer: keras.layers.Layer, prefixes: tuple[str, ...]) -> bool:
    """Whether `layer` is one of the listed layers (`tflite_float_layers`, `embedding_float_layers`)."""
    return layer.name.startswith(prefixes)
