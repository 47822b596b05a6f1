"""TFLite (LiteRT) export for phones: float32, float16, dynamic-range int8 and full int8."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.export.freezing import frozen_forward
from netvlad_tf.export.parity import ParityReport, compare_descriptors

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# The parity each variant must reach against the Keras model.
PARITY_BARS = {
    "none": ("max|Δ| ≤ 1e-4", lambda diff, cos: diff <= 1e-4),
    "float16": ("cos ≥ 0.999", lambda diff, cos: cos >= 0.999),
    "dynamic": ("cos ≥ 0.98", lambda diff, cos: cos >= 0.98),
    "int8": ("cos ≥ 0.98", lambda diff, cos: cos >= 0.98),
}


def export_tflite(
    model: keras.Model,
    path,
    quantize: str = "none",
    image_size: tuple[int, int] = (480, 640),
    representative_images: Iterable[np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Converts the full model (whitening included) to a `.tflite` file with builtin ops only.

    The input is fixed: float32 RGB in 0–255, `(1, H, W, 3)` with `(H, W) = image_size`; the
    output is the `(1, dim)` descriptor. Resize photos to `image_size` before inference.

    Args:
        quantize: `"none"` (float32), `"float16"` (weights), `"dynamic"` (int8 weights, float
            activations) or `"int8"` (int8 weights and activations, float32 input/output).
        representative_images: `(H, W, 3)` images at the deployment resolution that calibrate
            `"int8"` activations (calibrating at another size costs accuracy).

    Returns:
        `path`, written atomically.

    Example (a minute for VGG16)::

        export_tflite(model, "netvlad_int8.tflite", "int8", (240, 320), calibration_images)
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantize {quantize!r}; use one of {QUANTIZATIONS}.")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another path or pass --overwrite.")
    frozen = frozen_forward(model, (1, *image_size, 3))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative_images is None:
            raise ValueError("Full int8 needs representative images at the deployment resolution.")
        images = list(representative_images)
        wrong = [img.shape for img in images if tuple(img.shape) != (*image_size, 3)]
        if wrong or not images:
            raise ValueError(f"Representative images must be {(*image_size, 3)}; got {wrong[:1] or 'none'}.")
        converter.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(flatbuffer)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    return path


def run_tflite(path, images: np.ndarray) -> np.ndarray:
    """Descriptors of `(B, H, W, 3)` images from a `.tflite` model with LiteRT, one at a time.

    Example (needs a model file)::

        descriptors = run_tflite("netvlad.tflite", images)
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    expected = tuple(input_detail["shape"][1:])
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"{path} takes images of shape {expected}, got {tuple(images.shape[1:])}.")
    outputs = []
    for image in images:
        interpreter.set_tensor(input_detail["index"], image[None].astype(np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0].copy())
    return np.stack(outputs)


def verify_tflite(path, model: keras.Model, images: np.ndarray, quantize: str) -> ParityReport:
    """Compares the `.tflite` model's descriptors with the Keras model's on `images`."""
    reference = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    run_tflite(path, images[:1])
    start = time.perf_counter()
    exported = run_tflite(path, images)
    latency_ms = 1000 * (time.perf_counter() - start) / len(images)
    max_abs_diff, cosine = compare_descriptors(reference, exported)
    bar, meets = PARITY_BARS[quantize]
    return ParityReport(f"tflite/{quantize}", str(path), Path(path).stat().st_size, max_abs_diff,
                        cosine, latency_ms, bar, meets(max_abs_diff, cosine))
