"""`quantize_onnx` on a hand-made convolution with a dead output channel (weights a billionth of
the others', bias +0.5): the int8 model, run by ONNX Runtime, gives that channel the float
model's constant 0.5 (the reference: the float graph run by ONNX Runtime); without zeroing the
channel first, its bias overflows int32 and is clipped to almost nothing."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netvlad_tf.inference import int8  # noqa: E402

DEAD = 1


def convolution_with_a_dead_channel(path):
    """conv 1×1 (3→3) → ReLU, as ONNX; output channel `DEAD` has weights ~1e-9 and bias +0.5."""
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32)
    weights[DEAD] = rng.normal(0, 1e-9, (3, 1, 1))
    bias = np.array([0.1, 0.5, -0.1], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["c"], name="conv"),
         helper.make_node("Relu", ["c"], ["out"], name="relu")],
        "dead_channel",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3, 8, 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def dead_channel_outputs(tmp_path):
    """The float and the int8 model's output for channel `DEAD` on held-out images."""
    convolution_with_a_dead_channel(tmp_path / "float.onnx")
    rng = np.random.default_rng(1)
    images = [rng.uniform(-2, 2, (2, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    int8.quantize_onnx(tmp_path / "float.onnx", tmp_path / "int8.onnx", images)
    held_out = rng.uniform(-2, 2, (2, 3, 8, 8)).astype(np.float32)
    float_out = onnxruntime.InferenceSession(str(tmp_path / "float.onnx")).run(None, {"images": held_out})[0]
    int8_out = int8.OnnxRuntimeModel(tmp_path / "int8.onnx")(held_out)
    return float_out[:, DEAD], int8_out[:, DEAD], float_out.max() / 255


@pytest.fixture(autouse=True)
def _uint8_weights(monkeypatch):
    """The weight type of a CPU without VNNI (uint8), where a dead channel's scale is not widened
    and its bias overflows: on a VNNI CPU (int8 weights) ONNX Runtime widens the scale itself, so
    the purpose-made mistake below would pass there. Every machine tests the uint8 case."""
    monkeypatch.setattr(int8, "int8_products_saturate", lambda: True)


def test_a_dead_channel_keeps_its_bias(tmp_path):
    wanted, found, activation_step = dead_channel_outputs(tmp_path)
    np.testing.assert_allclose(wanted, 0.5, atol=1e-6)  # the reference is what the test says it is
    assert np.abs(found - wanted).max() <= activation_step, np.abs(found - wanted).max()


def test_without_zeroing_the_dead_channel_loses_its_bias(tmp_path, monkeypatch):
    """The purpose-made mistake: no channel counts as dead."""
    monkeypatch.setattr(int8, "DEAD_CHANNEL", 0.0)
    wanted, found, activation_step = dead_channel_outputs(tmp_path)
    assert np.abs(found - wanted).max() > 10 * activation_step  # the bias is lost: 0.5 off
