"""TFLite (LiteRT) export for phones: float32, float16, dynamic-range int8 and full int8."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.backbones.float_layers import tflite_float_layers
from netvlad_tf.export.constant_graph import constant_forward
from netvlad_tf.export.flatbuffers import read_model, tensor_name
from netvlad_tf.export.hybrid_weights import int8_weights_for_float_matmuls
from netvlad_tf.export.parity import ParityReport, measure_parity
from netvlad_tf.io.atomic_writes import refuse_existing, write_bytes_atomically
from netvlad_tf.models.model import WHITENING_LAYER

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
            activations) or `"int8"` (int8 weights and activations in the backbone, float32
            input/output). In `"int8"` the NetVLAD + whitening head stays float32 — its L2
            normalisations, softmax and sums of squares of small numbers do not survive 8-bit
            activations (cosine ≈ 0 to the Keras descriptor) — and so do the backbone's
            pixel normalisation (every `PixelNormalization` layer, by type) and the early layers
            of `netvlad_tf.backbones.float_layers`. The whitening's weights are still
            stored in int8 (one scale per output dimension) and run as a hybrid op with float
            activations: the whitening matrix is most of the model's size.
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
    refuse_existing(path, overwrite)
    frozen = constant_forward(model, (1, *image_size, 3))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable_obj=model)
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
        flatbuffer = int8_weights_for_float_matmuls(_selectively_quantized(converter, frozen, model),
                                                    weight_name_contains=f"/{WHITENING_LAYER}")
    else:
        flatbuffer = converter.convert()
    return write_bytes_atomically(path, flatbuffer, overwrite)


def _selectively_quantized(converter, frozen, model: keras.Model) -> bytes:
    """int8 everywhere except the float layers: the quantisation debugger's denylist."""
    float_nodes = _float_node_names(frozen, model)
    with warnings.catch_warnings():
        # The debugger builds TensorFlow's own interpreter (deprecated for LiteRT's, which
        # netvlad_tf runs models with) only to debug, which this conversion never does; and
        # the converter's note on input statistics concerns int8 inputs, ours are float32.
        warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter is deprecated", UserWarning)
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=converter.representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes),
        )
        return debugger.get_nondebug_quantized_model()


def _float_node_names(frozen, model: keras.Model) -> list[str]:
    """Output tensor names of the ops to keep in float32, read from a float conversion."""
    float_model = read_model(tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable_obj=model).convert())
    subgraph = float_model.subgraphs[0]
    backbone = getattr(model, "backbone", None)
    backbone_name = f"/{backbone.name}" if backbone is not None else None
    prefixes = tflite_float_layers(backbone) if backbone is not None else ()
    float_nodes = []
    for op in subgraph.operators:
        if op.outputs is None or len(op.outputs) == 0:
            continue
        name = tensor_name(subgraph.tensors[op.outputs[0]])
        in_head = backbone_name is None or backbone_name not in name
        in_float_layer = any(f"/{prefix}" in name for prefix in prefixes)
        if in_head or in_float_layer:
            float_nodes.append(name)
    return float_nodes


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
    """Compares the `.tflite` model's descriptors with the Keras model's on `images` (bars per
    quantisation: `PARITY_BARS`).

    Args:
        path: the exported artefact.
        model: the Keras model it came from.
        images: `(B, H, W, 3)` check images in 0–255, at the model's input size.

        quantize: which bar applies (`"none"`, `"float16"`, `"dynamic"`, `"int8"`).

    Returns:
        A `ParityReport` (size, max |Δ|, min cosine, latency, whether the bar is met).
    """
    bar, meets = PARITY_BARS[quantize]
    return measure_parity(f"tflite/{quantize}", path, model, images, lambda batch: run_tflite(path, batch),
                          bar, meets)
