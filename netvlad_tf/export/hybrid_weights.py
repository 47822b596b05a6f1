"""int8 weights with float activations for the float matrix products of a TFLite model.

Full int8 keeps the NetVLAD + whitening head in float32 because its activations do not survive
8 bits; but the whitening matrix is most of the file (4096 × 32 768 at the paper's size). LiteRT
runs a float `FULLY_CONNECTED` whose weights are int8 as a hybrid op: the input is quantised on
the fly per row and the product rescaled by the weights' per-row scales. Storing the whitening
that way shrinks it 4× while its activations stay float.
"""

from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from netvlad_tf.export.flatbuffers import builtin_code, read_model, tensor_name, write_model


def int8_weights_for_float_matmuls(flatbuffer: bytes, weight_name_contains: str = "") -> bytes:
    """Stores the constant float32 weights of the float32 `FULLY_CONNECTED` ops whose weight
    tensor's name contains `weight_name_contains` (all by default) as int8, symmetric with one
    scale per output row (`scale = max|row| / 127`); the rest is unchanged.

    Example:
    >>> import tensorflow as tf
    >>> weights = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> product = tf.function(lambda x: tf.matmul(x, weights),
    ...                       input_signature=[tf.TensorSpec((1, 64), tf.float32)])
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [product.get_concrete_function()])
    >>> float_model = converter.convert()
    >>> len(int8_weights_for_float_matmuls(float_model)) < len(float_model)
    True
    """
    model = read_model(flatbuffer)
    buffer_users = np.zeros(len(model.buffers), dtype=np.int64)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer_users[tensor.buffer] += 1
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if builtin_code(model, op) != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            activations, weights = (subgraph.tensors[index] for index in op.inputs[:2])
            data = model.buffers[weights.buffer].data
            if (activations.type != schema.TensorType.FLOAT32 or weights.type != schema.TensorType.FLOAT32
                    or data is None or len(data) == 0 or buffer_users[weights.buffer] != 1
                    or weight_name_contains not in tensor_name(weights)):
                continue
            _quantize_rows(model.buffers[weights.buffer], weights)
            if op.builtinOptions is not None:
                op.builtinOptions.asymmetricQuantizeInputs = True
    return write_model(model)


def _quantize_rows(buffer, tensor) -> None:
    """In place: float32 `(out, in)` weights → int8 with a scale per output row."""
    matrix = np.frombuffer(bytes(buffer.data), dtype=np.float32).reshape(tensor.shape)
    rows = matrix.reshape(matrix.shape[0], -1)
    scales = np.abs(rows).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    quantized = np.clip(np.round(rows / scales[:, None]), -127, 127).astype(np.int8)
    buffer.data = np.frombuffer(quantized.tobytes(), dtype=np.uint8)
    tensor.type = schema.TensorType.INT8
    parameters = schema.QuantizationParametersT()
    parameters.scale = scales.astype(np.float32).tolist()
    parameters.zeroPoint = [0] * len(scales)
    parameters.quantizedDimension = 0
    tensor.quantization = parameters
