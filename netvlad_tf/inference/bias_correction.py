"""Empirical bias correction of a statically quantised ONNX model (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019, §4.2, its empirical
form): rounding a convolution's weights and inputs to 8 bits shifts the mean of its outputs, and
the shifts add up layer after layer. Measured on the calibration images against the float model,
each quantised convolution's mean error per output channel is taken off its (int32) bias, in the
order the layers run, so each measurement sees the corrections before it.

On the demo's model, with Lite0's blocks 4–10 in int8, it moved the int8 descriptors' median
cosine to float32 from 0.9972 to 0.9981 on every second winter query (calibrated on summer
images; `docs/benchmarks.md`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netvlad_tf.inference.onnx_files import onnx_runtime_session
from netvlad_tf.io.progress import Progress

# Images the means are taken over: each convolution costs a pass of the network up to it, and
# on the demo's model 8 images corrected as well as 32 (docs/benchmarks.md).
BIAS_CORRECTION_IMAGES = 8


def correct_biases(float_path: Path, quantised_path: Path, images: Sequence[np.ndarray], verbose: bool = False) -> int:
    """Rewrites `quantised_path` with each quantised convolution's bias corrected.

    Args:
        float_path: the float32 ONNX model `quantised_path` was quantised from (QDQ format,
            node names kept).
        quantised_path: the QDQ model; a convolution counts as quantised when its weights and
            bias come through `DequantizeLinear` nodes.
        images: the calibration batches, `(B, H, W, 3)` float32, as fed to the models' one input;
            the first `BIAS_CORRECTION_IMAGES` are used.
        verbose: show progress (a pass of the network up to each convolution; minutes for
            VGG16 at 480×640 on a laptop CPU).

    Returns:
        How many convolutions were corrected.

    Example (`quantize_int8` runs it after ONNX Runtime's `quantize_static`):
    >>> images = [batch for _, batch in indexed_image_batches(paths, (480, 640), None, batch_size=1)]  # doctest: +SKIP
    >>> correct_biases(Path("float.onnx"), Path("int8.onnx"), images)  # doctest: +SKIP
    14
    """
    import onnx
    from onnx import numpy_helper

    images = list(images)[:BIAS_CORRECTION_IMAGES]
    if not images:
        return 0
    float_model, quantised = onnx.load(str(float_path)), onnx.load(str(quantised_path))
    producers = {output: node for node in quantised.graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in quantised.graph.initializer}

    def dequantized_initializer(name):
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in initializers

    convolutions = [node for node in quantised.graph.node if node.op_type == "Conv" and len(node.input) == 3
                    and dequantized_initializer(node.input[1]) and dequantized_initializer(node.input[2])]
    if not convolutions:  # e.g. batch normalisations at their initial values: no biases to correct
        return 0
    float_outputs = {node.name: node.output[0] for node in float_model.graph.node}
    float_means = _channel_means(float_model, [float_outputs[node.name] for node in convolutions], images)
    progress = Progress(len(convolutions), unit="convolution", verbose=verbose, label="int8 bias correction")
    for done, (node, float_mean) in enumerate(zip(convolutions, float_means), 1):
        # Up to this convolution only; the earlier quantised layers run on the int8 kernels, this
        # one (a graph output now, so not fused) shows its output before requantisation.
        [quantised_mean] = _channel_means(_graph_up_to(quantised, node.output[0]), [node.output[0]], images)
        dequantize = producers[node.input[2]]
        bias = initializers[dequantize.input[0]]
        scale = numpy_helper.to_array(initializers[dequantize.input[1]])
        corrected = numpy_helper.to_array(bias).astype(np.int64) - np.round((quantised_mean - float_mean) / scale).astype(np.int64)
        bias.CopyFrom(numpy_helper.from_array(np.clip(corrected, -2**31, 2**31 - 1).astype(np.int32), bias.name))
        progress.update(done)
    onnx.save(quantised, str(quantised_path))
    return len(convolutions)


def _graph_up_to(model, output_name: str):
    """A copy of `model` with only the nodes `output_name` needs, and `output_name` its output
    (ONNX Runtime computes every node of a graph, whatever output is asked for)."""
    import onnx
    from onnx import helper

    producers = {output: node for node in model.graph.node for output in node.output}
    needed, pending = set(), [output_name]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    nodes = [node for node in model.graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input),
                              [helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, None)],
                              [tensor for tensor in model.graph.initializer if tensor.name in used])
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def _channel_means(model, output_names: list[str], images) -> list[np.ndarray]:
    """Per-channel means of `model`'s tensors `output_names` (NCHW) over every image and position."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {output.name for output in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in output_names if name not in known)
    session = onnx_runtime_session(model.SerializeToString())
    input_name = model.graph.input[0].name
    sums, counts = [0.0] * len(output_names), [0] * len(output_names)
    for batch in images:
        for index, output in enumerate(session.run(output_names, {input_name: batch})):
            sums[index] = sums[index] + output.sum(axis=(0, 2, 3), dtype=np.float64)
            counts[index] += output.size // output.shape[1]
    return [total / count for total, count in zip(sums, counts)]
