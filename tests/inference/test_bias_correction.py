"""Empirical bias correction: after it, each quantised convolution's mean output per channel on
the calibration images equals the float model's to within half a step of its int32 bias (the
float model run by ONNX Runtime is the reference), where before it was further off."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netvlad_tf.inference.bias_correction import correct_biases  # noqa: E402


def two_convolutions(path, biases=True):
    """conv 3×3 (3→8) → ReLU → conv 1×1 (8→4), weights with a non-zero mean, as ONNX; with
    `biases=False` the convolutions have none (as the exporter writes zero ones)."""
    rng = np.random.default_rng(0)
    first = (rng.normal(0.05, 0.3, (8, 3, 3, 3))).astype(np.float32)
    second = (rng.normal(0.1, 0.5, (4, 8, 1, 1))).astype(np.float32)
    bias_1, bias_2 = (["b1"], ["b2"]) if biases else ([], [])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w1", *bias_1], ["c1"], name="first", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
         helper.make_node("Conv", ["r1", "w2", *bias_2], ["out"], name="second")],
        "two_convolutions",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 3, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 12, 12])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")]
        + [numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
           numpy_helper.from_array(np.zeros(4, np.float32), "b2")][:2 if biases else 0])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def mean_errors_in_bias_steps(float_path, quantised_path, images):
    """Per convolution: |mean quantised output − mean float output| per channel, in steps of its bias."""
    model = onnx.load(str(quantised_path))
    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    float_model = onnx.load(str(float_path))
    errors = {}
    for name, float_output in (("first", "c1"), ("second", "out")):
        conv = next(node for node in model.graph.node if node.name == name)
        model.graph.output.append(helper.make_tensor_value_info(conv.output[0], TensorProto.FLOAT, None))
        float_model.graph.output.append(helper.make_tensor_value_info(float_output, TensorProto.FLOAT, None))
        quantised = onnxruntime.InferenceSession(model.SerializeToString(), options)
        reference = onnxruntime.InferenceSession(float_model.SerializeToString())
        found = np.concatenate([quantised.run([conv.output[0]], {"images": batch})[0] for batch in images])
        wanted = np.concatenate([reference.run([float_output], {"images": batch})[0] for batch in images])
        bias_scale = initializers[producers[conv.input[2]].input[1]]
        errors[name] = np.abs(found.mean(axis=(0, 2, 3)) - wanted.mean(axis=(0, 2, 3))) / bias_scale
    return errors


def quantised_two_convolutions(tmp_path, biases=True):
    """`two_convolutions` and its QDQ quantisation by ONNX Runtime; the calibration images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    two_convolutions(tmp_path / "float.onnx", biases)
    rng = np.random.default_rng(1)
    images = [rng.uniform(-1, 3, (2, 3, 12, 12)).astype(np.float32) for _ in range(4)]

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), Images(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8)
    return images


def test_bias_correction_takes_the_mean_error_off_each_convolution(tmp_path):
    images = quantised_two_convolutions(tmp_path)
    before = mean_errors_in_bias_steps(tmp_path / "float.onnx", tmp_path / "int8.onnx", images)
    assert correct_biases(tmp_path / "float.onnx", tmp_path / "int8.onnx", images) == 2
    after = mean_errors_in_bias_steps(tmp_path / "float.onnx", tmp_path / "int8.onnx", images)
    for name in ("first", "second"):
        assert before[name].max() > 2, (name, before[name])  # the error the correction is for
        # Rounding the correction to the bias's int32 step leaves at most half a step.
        assert after[name].max() <= 0.5 + 1e-3, (name, after[name])


def test_convolutions_without_biases_are_left_as_they_are(tmp_path):
    images = quantised_two_convolutions(tmp_path, biases=False)
    written = (tmp_path / "int8.onnx").read_bytes()
    assert correct_biases(tmp_path / "float.onnx", tmp_path / "int8.onnx", images) == 0
    assert (tmp_path / "int8.onnx").read_bytes() == written
