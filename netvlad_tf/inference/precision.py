"""The number format a model runs in: float32, bfloat16 or float16 (Keras mixed precision in the
backbone), or int8 (ONNX Runtime, `int8.py`); and `auto`, which picks by this machine.

Only the backbone goes low: VGG16's convolutions are almost all of the work (~187 GFLOPs at
480×640, against ~0.1 for NetVLAD at K = 64), while the soft-assignment softmax, the residual
sums, the normalisations, the whitening and the final L2 need float32's range and mantissa,
and cost nothing beside the backbone. The backbone's pixel normalisation and the layers of
`netvlad_tf.backbones.float_layers` also stay float32 (on the demo's Lite0 model they lift the
bfloat16 descriptors' cosine to float32 from 0.974 to 0.9998 median). Weights stay float32
throughout (Keras' `mixed_*` policies), so a `.keras` file saved in float32 runs in any
precision unchanged.
"""

from __future__ import annotations

import keras

from netvlad_tf.backbones.float_layers import embedding_float_layers, stays_float
from netvlad_tf.inference.hardware import BF16_FLAGS, FP16_FLAGS, cpu_flags, describe_cpu, gpu_names, int8_products_saturate

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "auto")
# Keras' dtype policy of the backbone per low precision: float32 weights, computation in 16 bits.
KERAS_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def choose_precision(requested: str) -> tuple[str, str]:
    """The precision to run and one line saying why: `requested` itself, or for `"auto"` the
    fastest this machine runs without calibration: float16 on a GPU, bfloat16 on a CPU with
    bfloat16 units (AVX512_BF16, AMX), else float32 (bfloat16 emulated on AVX2 is not faster:
    measured in `benchmarks/bench_precision.py`). int8 is never chosen for you: it needs
    calibration images and moves descriptors more (ask for it with `"int8"`). A low precision
    asked for on a machine without its unit runs, and the line says it will be no faster.

    Args:
        requested: one of `PRECISIONS`.

    Returns:
        `(precision, reason)`.

    Example:
    >>> choose_precision("float32")
    ('float32', 'precision float32 (as asked)')
    """
    if requested not in PRECISIONS:
        raise ValueError(f"Unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}.")
    if requested != "auto":
        return requested, f"precision {requested} (as asked){_without_its_unit(requested)}"
    gpus = gpu_names()
    if gpus:
        return "float16", f"precision auto → float16: {len(gpus)} GPU(s) ({gpus[0]})"
    cpu = describe_cpu()
    if any(flag in cpu_flags() for flag in BF16_FLAGS):
        return "bfloat16", f"precision auto → bfloat16: this CPU has bfloat16 units ({cpu})"
    return "float32", (f"precision auto → float32: this CPU has no bfloat16 unit ({cpu}); bfloat16 "
                       "would be emulated, no faster than float32")


def _without_its_unit(precision: str) -> str:
    """For a low precision this machine has no unit for: what to expect (measured on an AVX2-only
    CPU in `benchmarks/bench_precision.py`); else an empty string."""
    cpu = describe_cpu()
    if precision == "int8" and int8_products_saturate():
        return f"; this CPU has no int8 dot-product unit ({cpu}): no faster than float32 here"
    if precision in KERAS_POLICIES and not gpu_names():
        units = BF16_FLAGS if precision == "bfloat16" else FP16_FLAGS
        if not any(flag in cpu_flags() for flag in units):
            return f"; this CPU has no {precision} unit ({cpu}): emulated, no faster than float32 here"
    return ""


def low_precision_model(model: keras.Model, precision: str) -> keras.Model:
    """A copy of a `PlaceRecognitionModel` whose backbone computes in `precision` (bfloat16 or
    float16) with float32 weights, while pooling, whitening and L2 stay float32; `"float32"`
    returns `model` itself. The weights are copied, not shared with training.

    Args:
        model: a netvlad_tf `PlaceRecognitionModel` (its backbone is a functional model).
        precision: `"float32"`, `"bfloat16"` or `"float16"`.

    Returns:
        The model to run.

    Raises:
        ValueError: another kind of Keras model, or another precision.

    Example:
    >>> from netvlad_tf import build_netvlad_model
    >>> fast = low_precision_model(build_netvlad_model(weights=None, num_clusters=4), "bfloat16")
    >>> fast.backbone.layers[-1].compute_dtype, fast.pooling.compute_dtype
    ('bfloat16', 'float32')

    Reference: arXiv 1511.07247, Sec. 3 (the NetVLAD layer the head keeps in float32).
    """
    from netvlad_tf.models.model import WHITENING_LAYER, PlaceRecognitionModel

    if precision == "float32":
        return model
    if precision not in KERAS_POLICIES:
        raise ValueError(f"low_precision_model runs bfloat16 or float16, not {precision!r}.")
    if not isinstance(model, PlaceRecognitionModel):
        raise ValueError(f"--precision={precision} needs a netvlad_tf PlaceRecognitionModel (backbone + pooling), "
                         f"not a Keras {type(model).__name__}.")
    policy = keras.DTypePolicy(KERAS_POLICIES[precision])
    kept_float = embedding_float_layers(model.backbone, precision)

    def in_policy(layer):
        config = layer.get_config()
        if not stays_float(layer, kept_float):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    backbone = keras.models.clone_model(model.backbone, clone_function=in_policy)
    backbone.set_weights(model.backbone.get_weights())
    pooling = model.pooling.__class__.from_config({**model.pooling.get_config(), "dtype": "float32"})
    low = PlaceRecognitionModel(backbone, pooling, model.whitening_dim, name=f"{model.name}_{precision}")
    pooling.set_weights(model.pooling.get_weights())
    if model.whitening_dim is not None:
        low.get_layer(WHITENING_LAYER).set_weights(model.get_layer(WHITENING_LAYER).get_weights())
    return low

