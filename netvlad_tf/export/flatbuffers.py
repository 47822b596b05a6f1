"""Reading and writing a TFLite flatbuffer as objects (the schema's object API)."""

from __future__ import annotations

from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils


def read_model(flatbuffer: bytes) -> schema.ModelT:
    """The model in `flatbuffer` as mutable schema objects.

    Example:
    >>> import tensorflow as tf
    >>> add_one = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec((1,), tf.float32)])
    >>> model = read_model(tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [add_one.get_concrete_function()]).convert())
    >>> [builtin_code(model, op) == schema.BuiltinOperator.ADD for op in model.subgraphs[0].operators]
    [True]
    """
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))


def write_model(model: schema.ModelT) -> bytes:
    """The flatbuffer bytes of `model`."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def builtin_code(model: schema.ModelT, op) -> int:
    """The `schema.BuiltinOperator` of `op` (old files keep it in the deprecated field)."""
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def tensor_name(tensor) -> str:
    """A tensor's name as text."""
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
