"""`netvlad-tf export`: SavedModel for TF Serving or TFLite for phones, verified on export."""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from netvlad_tf.commands.common import parse_image_size, require_flags
from netvlad_tf.data.csv_dataset import read_csv_dataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.export import (
    QUANTIZATIONS,
    export_saved_model,
    export_tflite,
    verify_saved_model,
    verify_tflite,
)
from netvlad_tf.model_files import load_model_file
from netvlad_tf.sample_data import nordland_csv

SUMMARY = "Export a model as a SavedModel (TF Serving) or TFLite and check it against Keras."
EXAMPLE = (
    "netvlad-tf export --model=model.keras --format=saved_model --output=serving\n"
    "  netvlad-tf export --model=model.keras --format=tflite --quantize=int8 "
    "--calibration=my_photos.csv --image_size=480,640 --output=netvlad_int8.tflite"
)
CALIBRATION_IMAGES = 64
CHECK_IMAGES = 8


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model", None, "The .keras model (required).", flag_values=fv)
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"], "What to export.", flag_values=fv)
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS), "TFLite quantisation.", flag_values=fv)
    flags.DEFINE_string("calibration", None, "Dataset CSV whose images calibrate int8 and check parity; "
                        "default: the bundled Nordland images.", flag_values=fv)
    flags.DEFINE_string("image_size", None, "HEIGHT,WIDTH of the TFLite input and of the SavedModel's "
                        "`encoded` signature (default: the calibration images' size, 480,640 for encoded).",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "SavedModel base folder or .tflite file (required).", flag_values=fv)
    flags.DEFINE_string("model_name", "netvlad", "SavedModel: <output>/<model_name>/<version>.", flag_values=fv)
    flags.DEFINE_integer("version", 1, "SavedModel version folder.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing export.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    require_flags(fv, "model", "output")
    if fv.format == "saved_model" and fv.quantize != "none":
        raise ValueError("--quantize applies to --format=tflite only.")
    model = load_model_file(fv.model)
    image_size = parse_image_size(fv.image_size)
    paths = read_csv_dataset(fv.calibration or nordland_csv("train"), require_queries=False).database_paths
    sample_size = image_size or _native_size(paths[0])
    step = max(1, len(paths) // CALIBRATION_IMAGES)
    calibration = np.concatenate(list(image_batches(paths[::step][:CALIBRATION_IMAGES], sample_size, batch_size=16)))
    check = calibration[:: max(1, len(calibration) // CHECK_IMAGES)][:CHECK_IMAGES]
    if fv.format == "saved_model":
        path = export_saved_model(model, fv.output, fv.model_name, fv.version,
                                  encoded_image_size=image_size or (480, 640), overwrite=fv.overwrite)
        report = verify_saved_model(path, model, np.round(check).astype(np.uint8))
    else:
        path = export_tflite(model, fv.output, fv.quantize, sample_size,
                             list(calibration) if fv.quantize == "int8" else None, fv.overwrite)
        report = verify_tflite(path, model, check, fv.quantize)
    print(report.line())
    print(json.dumps(report.as_dict()))
    if not report.passed:
        print(f"netvlad-tf export: {report.artefact} misses its parity bar ({report.bar}); it was written "
              f"to {path} for inspection.")
        return 1
    return 0


def _native_size(path) -> tuple[int, int]:
    from netvlad_tf.data.images import load_image

    height, width = load_image(path).shape[:2]
    return int(height), int(width)
