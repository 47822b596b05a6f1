"""int8 weights with float activations for TFLite matrix products."""

import numpy as np
import tensorflow as tf

from netvlad_tf.export.hybrid_weights import int8_weights_for_float_matmuls


def _matmul_model(weights: np.ndarray) -> bytes:
    product = tf.function(lambda x: tf.matmul(x, weights),
                          input_signature=[tf.TensorSpec((8, weights.shape[0]), tf.float32)])
    return tf.lite.TFLiteConverter.from_concrete_functions([product.get_concrete_function()]).convert()


def _run(flatbuffer: bytes, inputs: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    interpreter.invoke()
    dtypes = [tensor["dtype"] for tensor in interpreter.get_tensor_details()]
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), dtypes


def test_int8_weights_per_output_row_keep_every_output_dimension():
    rng = np.random.default_rng(0)
    # Output dimensions on scales four decades apart, as in a PCA whitening.
    weights = (rng.normal(size=(512, 96)) * np.logspace(-2, 2, 96)).astype(np.float32)
    inputs = rng.normal(size=(8, 512)).astype(np.float32)
    reference = inputs.astype(np.float64) @ weights

    float_model = _matmul_model(weights)
    hybrid = int8_weights_for_float_matmuls(float_model)
    outputs, dtypes = _run(hybrid, inputs)

    assert np.int8 in dtypes
    assert len(hybrid) < 0.3 * len(float_model)
    assert outputs.dtype == np.float32
    # Each output dimension is accurate relative to its own scale: a single scale for the
    # whole matrix would lose the small ones entirely.
    relative = np.abs(outputs - reference).mean(axis=0) / np.abs(reference).mean(axis=0)
    assert np.median(relative) < 0.02 and np.median(relative[:24]) < 0.02 and relative.max() < 0.1
    cosine = (outputs * reference).sum(1) / np.linalg.norm(outputs, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.999


def test_models_without_float_matmuls_are_unchanged():
    conv = tf.function(lambda x: tf.nn.conv2d(x, np.ones((3, 3, 1, 2), np.float32), 1, "SAME"),
                       input_signature=[tf.TensorSpec((1, 8, 8, 1), tf.float32)])
    float_model = tf.lite.TFLiteConverter.from_concrete_functions([conv.get_concrete_function()]).convert()
    inputs = np.random.default_rng(1).normal(size=(1, 8, 8, 1)).astype(np.float32)
    before, _ = _run(float_model, inputs)
    after, dtypes = _run(int8_weights_for_float_matmuls(float_model), inputs)
    np.testing.assert_array_equal(before, after)
    assert np.int8 not in dtypes


def test_only_matmuls_with_the_named_weights_change():
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(64, 8)).astype(np.float32)
    float_model = _matmul_model(weights)
    inputs = rng.normal(size=(8, 64)).astype(np.float32)
    untouched, dtypes = _run(int8_weights_for_float_matmuls(float_model, weight_name_contains="/whitening"), inputs)
    assert np.int8 not in dtypes
    np.testing.assert_array_equal(untouched, _run(float_model, inputs)[0])
