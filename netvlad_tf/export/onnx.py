"""ONNX export for onnxruntime, NVIDIA TensorRT and Jetson, through Keras' own
`model.export(format="onnx")` (tf2onnx underneath), verified with onnxruntime."""

from __future__ import annotations

import functools
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.export.parity import ParityReport, measure_parity
from netvlad_tf.inference.onnx_files import require_onnx_packages, write_onnx

ONNX_MAX_ABS_DIFF = 1e-4


def export_onnx(model: keras.Model, path, overwrite: bool = False) -> Path:
    """Writes the full model (whitening included) as ONNX with a dynamic batch and image size.

    Input `images`: float32 RGB in 0–255, `(B, H, W, 3)`, any B, H and W; output: the
    `(B, dim)` L2-normalised descriptor.

    Args:
        model: the Keras model.
        path: the `.onnx` file to write (atomically).
        overwrite: replace an existing file.

    Returns:
        `path` as a Path.

    Raises:
        ValueError: tf2onnx or onnxruntime is not installed (`pip install 'netvlad_tf[onnx]'`).

    Example (a few seconds)::

        export_onnx(keras.models.load_model("model.keras"), "netvlad.onnx")
        # onnxruntime.InferenceSession("netvlad.onnx").run(None, {"images": images})
    """
    return write_onnx(model, path, overwrite)


def run_onnx(path, images: np.ndarray) -> np.ndarray:
    """Descriptors of `(B, H, W, 3)` images from an `.onnx` model with onnxruntime (CPU); the
    session of a file is made once and reused while the file is unchanged."""
    require_onnx_packages()
    path = Path(path)
    session = _session(str(path.resolve()), path.stat().st_mtime_ns)
    return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]


@functools.lru_cache(maxsize=4)
def _session(path: str, modified_ns: int):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def verify_onnx(path, model: keras.Model, images: np.ndarray) -> ParityReport:
    """Compares onnxruntime's descriptors with the Keras model's on `images` (bar: max abs diff
    ≤ 1e-4).

    Args:
        path: the exported artefact.
        model: the Keras model it came from.
        images: `(B, H, W, 3)` check images in 0–255.

    Returns:
        A `ParityReport` (size, max |Δ|, min cosine, latency, whether the bar is met).
    """
    return measure_parity("onnx", path, model, images, lambda batch: run_onnx(path, batch),
                          f"max|Δ| ≤ {ONNX_MAX_ABS_DIFF:g}", lambda max_abs_diff, _: max_abs_diff <= ONNX_MAX_ABS_DIFF)
