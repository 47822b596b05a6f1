"""A small JSON model card written beside every export: what goes in, what comes out, how well."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from netvlad_tf.export.parity import ParityReport
from netvlad_tf.io.atomic_writes import write_bytes_atomically

MODEL_CARD_SUFFIX = ".model_card.json"


def model_card_path(artefact) -> Path:
    """`m.tflite` → `m.tflite.model_card.json`; a SavedModel `serving/netvlad/1` →
    `serving/netvlad/1.model_card.json` (beside the version folder, which TF Serving ignores)."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + MODEL_CARD_SUFFIX)


def model_card(model: keras.Model, report: ParityReport, input_description: dict,
               training_data: str | None = None, weights_license: str | None = None,
               recall: dict | None = None) -> dict:
    """The card's content.

    Args:
        model: the exported Keras model.
        report: the export's parity check.
        input_description: dtype, value range, layout and size of the artefact's input.
        training_data: what the weights were trained on (free text).
        weights_license: the licence of the weights.
        recall: measured Recall@N (e.g. `results.json["recall"]` of `netvlad-tf evaluate`).

    Returns:
        A JSON-ready dict.

    Example:
    >>> from netvlad_tf import MACPooling, PlaceRecognitionModel, vgg16_conv5_3
    >>> model = PlaceRecognitionModel(vgg16_conv5_3(weights=None), MACPooling())
    >>> report = ParityReport("onnx", "m.onnx", 10, 0.0, 1.0, 1.0, "max|Δ| ≤ 1e-4", True)
    >>> model_card(model, report, {"dtype": "float32"})["output"]["dimension"]
    512
    """
    pooling = getattr(model, "pooling", None)
    whitening_dim = getattr(model, "whitening_dim", None)
    return {
        "format": report.artefact,
        "input": input_description,
        "output": {
            "name": "descriptor",
            "dimension": int(model.output.shape[-1]),
            "dtype": "float32",
            "normalisation": "L2 (unit length): compare with dot products or Euclidean distance",
            "pooling": type(pooling).__name__ if pooling is not None else None,
            "clusters": getattr(pooling, "num_clusters", None),
            "layout": getattr(pooling, "output_layout", None),
            "whitening": f"PCA whitening to {whitening_dim}-D + L2" if whitening_dim else None,
        },
        "backbone": getattr(getattr(model, "backbone", None), "name", None),
        "parity": {key: value for key, value in report.as_dict().items() if key not in ("path", "artefact")},
        "training_data": training_data or "not stated (netvlad-tf export --training_data=...)",
        "weights_license": weights_license or "not stated (netvlad-tf export --weights_license=...)",
        "recall": recall,
        "reference": "Arandjelović et al., NetVLAD, CVPR 2016 (arXiv 1511.07247)",
    }


def write_model_card(artefact, card: dict, overwrite: bool = False) -> Path:
    """Writes `card` beside `artefact` (see `model_card_path`), atomically.

    Args:
        artefact: the exported file or SavedModel version folder.
        card: the content (see `model_card`).
        overwrite: replace an existing card.

    Returns:
        The card's path.
    """
    return write_bytes_atomically(model_card_path(artefact), json.dumps(card, indent=2).encode(), overwrite)
