"""Deployment: a SavedModel for TF Serving, TFLite for phones, ONNX for onnxruntime/TensorRT,
each verified against the Keras model and described by a model card."""

from netvlad_tf.export.model_card import model_card, model_card_path, write_model_card
from netvlad_tf.export.onnx import export_onnx, run_onnx, verify_onnx
from netvlad_tf.export.parity import ParityReport, compare_descriptors
from netvlad_tf.export.saved_model import export_saved_model, verify_saved_model
from netvlad_tf.export.tflite import QUANTIZATIONS, export_tflite, run_tflite, verify_tflite

__all__ = [
    "ParityReport",
    "QUANTIZATIONS",
    "compare_descriptors",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "model_card",
    "model_card_path",
    "run_onnx",
    "run_tflite",
    "verify_onnx",
    "verify_saved_model",
    "verify_tflite",
    "write_model_card",
]
