"""Deployment: a SavedModel for TF Serving and TFLite models for phones, each verified."""

from netvlad_tf.export.parity import ParityReport, compare_descriptors
from netvlad_tf.export.saved_model import export_saved_model, verify_saved_model
from netvlad_tf.export.tflite import QUANTIZATIONS, export_tflite, run_tflite, verify_tflite

__all__ = [
    "ParityReport",
    "QUANTIZATIONS",
    "compare_descriptors",
    "export_saved_model",
    "export_tflite",
    "run_tflite",
    "verify_saved_model",
    "verify_tflite",
]
