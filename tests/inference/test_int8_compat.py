"""Canaries for the names the int8 path relies on (the versions `pyproject.toml` pins), as
`test_keras_compat.py` is for Keras: each fails the day a name moves, instead of int8 quietly
quantising the wrong layers.

1. ONNX Runtime's optimiser `WeightBiasQuantization` (`onnx_files.KEEP_FLOAT_CONVOLUTIONS`)
   quantises a float convolution found between a dequantisation and a quantisation; disabled
   by that name, the convolution stays float.
2. tf2onnx names the nodes of a Keras export so that `int8._float_nodes` can place them: every
   convolution of the backbone carries `/<backbone name>/` and its Keras layer's name in its own
   name or its weights' names.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netvlad_tf.inference.onnx_files import KEEP_FLOAT_CONVOLUTIONS  # noqa: E402


def optimised_op_types(disabled: list[str]) -> list[str]:
    """The op types ONNX Runtime runs for Q → DQ → float Conv → Q → DQ, with `disabled` optimisers off."""
    rng = np.random.default_rng(0)
    scale, zero = numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Conv", ["xd", "w", "b"], ["c"], name="float_conv"),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "canary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32), "w"),
                               numpy_helper.from_array(np.zeros(4, np.float32), "b"), scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
        options.log_severity_level = 3
        onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                     disabled_optimizers=disabled)
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def test_onnx_runtime_still_has_the_optimiser_we_disable_by_name():
    assert "QLinearConv" in optimised_op_types([]), "ONNX Runtime no longer quantises a float Conv between QDQ"
    kept = optimised_op_types(list(KEEP_FLOAT_CONVOLUTIONS))
    assert "Conv" in kept and "QLinearConv" not in kept, f"{KEEP_FLOAT_CONVOLUTIONS} no longer keeps it float: {kept}"


def test_tf2onnx_names_the_backbone_convolutions_as_int8_places_them(tmp_path):
    pytest.importorskip("tf2onnx")
    from netvlad_tf import build_netvlad_model
    from netvlad_tf.inference.onnx_files import write_onnx
    from tests.support.tiny_backbone import TINY_BACKBONE

    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=2)
    write_onnx(model, tmp_path / "model.onnx")
    convolutions = [node for node in onnx.load(str(tmp_path / "model.onnx")).graph.node if node.op_type == "Conv"]
    layers = [layer.name for layer in model.backbone.layers if "conv" in layer.name]
    assert len(convolutions) == len(layers)
    for node in convolutions:
        names = [node.name, *node.input[1:]]
        assert any(f"/{model.backbone.name}" in name for name in names), names
        assert sum(any(f"/{layer}" in name for name in names) for layer in layers) == 1, names
