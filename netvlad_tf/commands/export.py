"""`netvlad-tf export`: SavedModel (TF Serving), TFLite (phones) or ONNX (onnxruntime, TensorRT),
each verified against the Keras model and described by a model card written beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import flags

from netvlad_tf.commands.shared_flags import define_dims_flag, parse_image_size, require_flags
from netvlad_tf.data.csv_dataset import read_csv_dataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.export import (
    QUANTIZATIONS,
    export_onnx,
    export_saved_model,
    export_tflite,
    model_card,
    verify_onnx,
    verify_saved_model,
    verify_tflite,
    write_model_card,
)
from netvlad_tf.io.atomic_writes import refuse_existing
from netvlad_tf.models.model_files import open_model
from netvlad_tf.sample_data import nordland_csv

SUMMARY = "Export a model as a SavedModel (TF Serving), TFLite (phones) or ONNX and check it against Keras."
EXAMPLE = (
    "netvlad-tf export --model=model.keras --format=saved_model --output=serving\n"
    "  netvlad-tf export --model=model.keras --format=tflite --calibration=my_photos.csv "
    "--output=netvlad_int8.tflite\n"
    "  netvlad-tf export --model=model.keras --format=onnx --output=netvlad.onnx"
)
CALIBRATION_IMAGES = 64
CHECK_IMAGES = 8
# The paper's image size (Pittsburgh, Tokyo): the TFLite input and the `encoded` signature's.
DEFAULT_EXPORT_IMAGE_SIZE = "480,640"
# Without --quantize: full int8 for TFLite (the phone default: 4× smaller and, where the CPU has
# int8 dot products, about twice as fast), float32 elsewhere.
DEFAULT_QUANTIZATION = {"tflite": "int8", "saved_model": "none", "onnx": "none"}


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (required).", flag_values=fv)
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite", "onnx"], "What to export.", flag_values=fv)
    flags.DEFINE_enum("quantize", None, list(QUANTIZATIONS),
                      "TFLite quantisation; default int8 (full int8, calibrated on --calibration at "
                      "--image_size). SavedModel and ONNX are float32.", flag_values=fv)
    flags.DEFINE_string("calibration", None, "Dataset CSV whose images calibrate int8 and check parity; "
                        "default: the bundled Nordland images.", flag_values=fv)
    flags.DEFINE_string("image_size", DEFAULT_EXPORT_IMAGE_SIZE,
                        "HEIGHT,WIDTH of the TFLite input, of the SavedModel's `encoded` signature and of "
                        "the parity-check images (default: the paper's 480,640). ONNX takes any size.",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "SavedModel base folder, .tflite or .onnx file (required).", flag_values=fv)
    flags.DEFINE_string("model_name", "netvlad", "SavedModel: <output>/<model_name>/<version>.", flag_values=fv)
    flags.DEFINE_integer("version", 1, "SavedModel version folder.", flag_values=fv)
    flags.DEFINE_string("training_data", None, "For the model card: what the weights were trained on.", flag_values=fv)
    flags.DEFINE_string("weights_license", None, "For the model card: the licence of the weights.", flag_values=fv)
    flags.DEFINE_string("results", None, "For the model card: a results.json of `netvlad-tf evaluate` "
                        "whose Recall@N it quotes.", flag_values=fv)
    define_dims_flag(fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing export.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "model", "output")
    quantize = fv.quantize or DEFAULT_QUANTIZATION[fv.format]
    if fv.format != "tflite" and quantize != "none":
        raise ValueError("--quantize applies to --format=tflite only.")
    recall = _recall_from(fv.results)
    target = Path(fv.output) / fv.model_name / str(fv.version) if fv.format == "saved_model" else fv.output
    refuse_existing(target, fv.overwrite)  # before the minutes of work, not after
    model = open_model(fv.model, fv.dims)
    image_size = parse_image_size(fv.image_size)
    paths = read_csv_dataset(fv.calibration or nordland_csv("train"), require_queries=False).database_paths
    calibration = np.concatenate(list(image_batches(evenly_spaced(paths, CALIBRATION_IMAGES), image_size, batch_size=16)))
    check = calibration[:: max(1, len(calibration) // CHECK_IMAGES)][:CHECK_IMAGES]
    height, width = image_size
    if fv.format == "saved_model":
        path = export_saved_model(model, fv.output, fv.model_name, fv.version,
                                  encoded_image_size=image_size, overwrite=fv.overwrite)
        report = verify_saved_model(path, model, np.round(check).astype(np.uint8))
        card_input = {"serving_default": "uint8 RGB (B, H, W, 3), sides 32–2048",
                      "encoded": f"JPEG/PNG bytes (B,), resized to {height}×{width}"}
    elif fv.format == "tflite":
        path = export_tflite(model, fv.output, quantize, image_size,
                             list(calibration) if quantize == "int8" else None, fv.overwrite)
        report = verify_tflite(path, model, check, quantize)
        card_input = {"dtype": "float32", "range": "RGB 0–255", "shape": [1, height, width, 3],
                      "quantization": quantize}
    else:
        path = export_onnx(model, fv.output, fv.overwrite)
        report = verify_onnx(path, model, check)
        card_input = {"name": "images", "dtype": "float32", "range": "RGB 0–255",
                      "shape": ["batch", "height", "width", 3]}
    print(report.line())
    print(json.dumps(report.as_dict()))
    card = write_model_card(path, model_card(model, report, card_input, fv.training_data,
                                             fv.weights_license, recall), fv.overwrite)
    print(f"Model card: {card}")
    if not report.passed:
        print(f"netvlad-tf export: {report.artefact} misses its parity bar ({report.bar}); it was written "
              f"to {path} for inspection.")
        return 1
    return 0


def _recall_from(results_path: str | None) -> dict | None:
    if results_path is None:
        return None
    try:
        return json.loads(Path(results_path).read_text(encoding="utf-8"))["recall"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--results {results_path}: not a results.json of `netvlad-tf evaluate` ({error}).") from None
