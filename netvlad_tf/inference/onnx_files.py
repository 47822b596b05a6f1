"""Writing a Keras model as ONNX (Keras' `model.export(format="onnx")`, tf2onnx underneath): what
the ONNX export and the int8 runtime both start from."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.io.atomic_writes import atomic_file, refuse_existing

ONNX_EXTRA_HINT = "ONNX export needs tf2onnx and onnxruntime: pip install 'netvlad_tf[onnx]'."


def require_onnx_packages(hint: str = ONNX_EXTRA_HINT) -> None:
    """A one-line error (`hint`, naming the extra) when tf2onnx or onnxruntime is not installed."""
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as error:
        raise ValueError(f"{hint} ({error})") from None


def write_onnx(model: keras.Model, path, overwrite: bool = False) -> Path:
    """Writes the full model as ONNX with a dynamic batch and image size, atomically.

    Args:
        model: the Keras model.
        path: the `.onnx` file.
        overwrite: replace an existing file.

    Returns:
        `path` as a Path.
    """
    require_onnx_packages()
    path = Path(path)
    refuse_existing(path, overwrite)
    model(np.zeros((1, 32, 32, 3), np.float32), training=False)  # Keras exports called models only
    with atomic_file(path, overwrite) as staging, warnings.catch_warnings():
        # Keras' bundled tf2onnx probes `np.object`, which NumPy answers with a FutureWarning.
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        model.export(str(staging), format="onnx", verbose=False)
    return path


# ONNX Runtime's transformer that quantises a float convolution found between a dequantisation
# and a quantisation (after it drops the activation between them): in an int8 model it would
# quantise the float layers that follow a quantised one. ONNX Runtime ignores an unknown name, so
# tests/inference/test_int8_compat.py checks that this one still keeps such a convolution float.
KEEP_FLOAT_CONVOLUTIONS = ("WeightBiasQuantization",)


def onnx_runtime_session(model_bytes: bytes):
    """An ONNX Runtime CPU session for `model_bytes` that leaves a quantised model's float layers
    float (`KEEP_FLOAT_CONVOLUTIONS`); otherwise ONNX Runtime's full optimisation.

    Args:
        model_bytes: a serialised ONNX model.

    Returns:
        An `onnxruntime.InferenceSession`.
    """
    import onnxruntime

    return onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(KEEP_FLOAT_CONVOLUTIONS))
