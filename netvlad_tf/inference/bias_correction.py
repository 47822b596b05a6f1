"""Empirical bias correction of a statically quantised ONNX model (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019, §4.2, its empirical
form): rounding a convolution's weights and inputs to 8 bits shifts the mean of its outputs, and
the shifts add up layer after layer. Measured on the calibration images against the float model,
each quantised convolution's mean error per output channel is taken off its (int32) bias, in the
order the layers run, so each measurement sees the corrections before it.

On the demo's model it moved the int8 descriptors' median cosine to float32 from 0.9973 to 0.9981
on the winter queries (the images were summer ones; `docs/benchmarks.md`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def correct_biases(float_path: Path, quantised_path: Path, images: Sequence[np.ndarray]) -> int:
    """Rewrites `quantised_path` with each quantised convolution's bias corrected.

    Args:
        float_path: the float32 ONNX model `quantised_path` was quantised from (QDQ format,
            node names kept).
        quantised_path: the QDQ model; a convolution counts as quantised when its weights and
            bias come through `DequantizeLinear` nodes.
        images: the calibration batches, `(B, H, W, 3)` float32, as fed to the models' one input.

    Returns:
        How many convolutions were corrected.

    Example (`quantize_int8` runs it after ONNX Runtime's `quantize_static`):
    >>> images = [batch for _, batch in indexed_image_batches(paths, (480, 640), None, batch_size=1)]  # doctest: +SKIP
    >>> correct_biases(Path("float.onnx"), Path("int8.onnx"), images)  # doctest: +SKIP
    14
    """
    import onnx
    import onnxruntime
    from onnx import helper, numpy_helper

    float_model, quantised = onnx.load(str(float_path)), onnx.load(str(quantised_path))
    producers = {output: node for node in quantised.graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in quantised.graph.initializer}

    def dequantized_initializer(name):
        node = producers.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            return None
        return node

    convolutions = [node for node in quantised.graph.node if node.op_type == "Conv" and len(node.input) == 3
                    and dequantized_initializer(node.input[1]) and dequantized_initializer(node.input[2])]
    if not convolutions:
        return 0
    float_outputs = {node.name: node.output[0] for node in float_model.graph.node}
    for node in convolutions:
        float_model.graph.output.append(helper.make_tensor_value_info(float_outputs[node.name], onnx.TensorProto.FLOAT, None))
        quantised.graph.output.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    input_name = float_model.graph.input[0].name
    float_means = _channel_means(onnxruntime.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"]),
                                 [float_outputs[node.name] for node in convolutions], input_name, images)
    # Unfused, the QDQ graph computes what the int8 kernels compute, and shows each convolution's
    # output before it is requantised.
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    for node, float_mean in zip(convolutions, float_means):
        session = onnxruntime.InferenceSession(quantised.SerializeToString(), options, providers=["CPUExecutionProvider"])
        [quantised_mean] = _channel_means(session, [node.output[0]], input_name, images)
        dequantize = producers[node.input[2]]
        bias = initializers[dequantize.input[0]]
        scale = numpy_helper.to_array(initializers[dequantize.input[1]])
        corrected = numpy_helper.to_array(bias).astype(np.int64) - np.round((quantised_mean - float_mean) / scale).astype(np.int64)
        bias.CopyFrom(numpy_helper.from_array(np.clip(corrected, -2**31, 2**31 - 1).astype(np.int32), bias.name))
    del quantised.graph.output[-len(convolutions):]
    onnx.save(quantised, str(quantised_path))
    return len(convolutions)


def _channel_means(session, output_names: list[str], input_name: str, images) -> list[np.ndarray]:
    """Per-channel means of `output_names` (NCHW) over every image and position."""
    sums, counts = [0.0] * len(output_names), [0] * len(output_names)
    for batch in images:
        for index, output in enumerate(session.run(output_names, {input_name: batch})):
            sums[index] = sums[index] + output.sum(axis=(0, 2, 3), dtype=np.float64)
            counts[index] += output.size // output.shape[1]
    return [total / count for total, count in zip(sums, counts)]
