"""Low-precision inference: bfloat16/float16 backbones and int8 on ONNX Runtime give descriptors
close to float32 (the float32 model run by TensorFlow is the reference), `auto` chooses by the
machine, and a descriptor folder or place index keeps one precision."""

import json

import numpy as np
import pytest

from netvlad_tf import build_netvlad_model, embed_database, read_descriptors
from netvlad_tf.backbones import float_layers
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.database.shards import DescriptorFolderError
from netvlad_tf.inference import hardware, int8, precision
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.inference.precision import choose_precision, low_precision_model
from netvlad_tf.initialization.clustering import initialize_clusters
from netvlad_tf.sample_data import nordland_csv

# The bounds a low-precision descriptor must keep to its float32 one (cosine over the bundled
# queries): median ≥ 0.999, as the issue asks, and a least value of 0.995, tighter than its 0.99.
MEDIAN_BOUND, LEAST_BOUND = 0.999, 0.995


@pytest.fixture(scope="module")
def lite0_netvlad(tmp_path_factory):
    """EfficientNet-Lite0 with its bundled ImageNet weights and NetVLAD clusters from k-means on
    the bundled images: real activations, as a deployed model has."""
    dataset = read_csv_dataset(nordland_csv("test"))
    model = build_netvlad_model("efficientnet_lite0", num_clusters=16)
    initialize_clusters(model, dataset.database_paths, num_images=40, verbose=False)
    path = tmp_path_factory.mktemp("model") / "lite0.keras"
    model.save(path)
    return model, path, dataset


def cosines(reference, other):
    return np.sum(reference * other, axis=1)


@pytest.fixture(scope="module")
def float32_queries(lite0_netvlad):
    model, _, dataset = lite0_netvlad
    return embed_images(model, dataset.query_paths[::12], verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("name, median", [("bfloat16", MEDIAN_BOUND), ("float16", 0.9999)])
def test_a_low_precision_backbone_keeps_descriptors_close(lite0_netvlad, float32_queries, name, median):
    model, _, dataset = lite0_netvlad
    low = low_precision_model(model, name)
    assert low.backbone.get_layer("block5_project_conv").compute_dtype == name
    assert low.pooling.compute_dtype == "float32" and low.backbone.get_layer("stem_conv").compute_dtype == "float32"
    assert low.backbone.get_layer("block5_dw_conv").compute_dtype == "float32"
    assert all(weight.dtype == "float32" for weight in low.weights)
    found = cosines(float32_queries, embed_images(low, dataset.query_paths[::12], verbose=False))
    assert np.median(found) >= median and found.min() >= LEAST_BOUND, (np.median(found), found.min())


@pytest.mark.slow
def test_the_bound_catches_early_layers_in_bfloat16(lite0_netvlad, float32_queries, monkeypatch):
    """The purpose-made mistake: without the float32 layers, bfloat16 falls under the bound."""
    model, _, dataset = lite0_netvlad
    monkeypatch.setattr(float_layers, "FLOAT_EARLY_LAYERS", {})
    monkeypatch.setattr(float_layers, "FLOAT_EMBEDDING_LAYERS", {})
    found = cosines(float32_queries, embed_images(low_precision_model(model, "bfloat16"), dataset.query_paths[::12],
                                                  verbose=False))
    assert np.median(found) < MEDIAN_BOUND


def test_auto_chooses_by_the_machine(monkeypatch):
    monkeypatch.setattr(precision, "gpu_names", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(precision, "describe_cpu", lambda: "x86_64: AVX2 only (no VNNI, no BF16)")
    chosen, reason = choose_precision("auto")
    assert chosen == "float32" and "no bfloat16 unit" in reason and "emulated" in reason
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16", "avx512_vnni"}))
    assert choose_precision("auto")[0] == "bfloat16"
    monkeypatch.setattr(precision, "gpu_names", lambda: ["/physical_device:GPU:0"])
    assert choose_precision("auto")[0] == "float16"
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        choose_precision("fp8")
    assert hardware.describe_cpu(frozenset({"avx2", "avx512_vnni", "avx512_bf16"})).endswith("avx512_vnni avx512_bf16 avx2")


def test_an_asked_precision_without_its_unit_says_so(monkeypatch):
    monkeypatch.setattr(precision, "gpu_names", lambda: [])
    monkeypatch.setattr(precision, "describe_cpu", lambda: "x86_64: AVX2 only (no VNNI, no BF16)")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(precision, "int8_products_saturate", lambda: True)
    for name in ("int8", "bfloat16", "float16"):
        chosen, reason = choose_precision(name)
        assert chosen == name and reason.startswith(f"precision {name} (as asked); this CPU has no ")
        assert reason.endswith("no faster than float32 here") and "(x86_64: AVX2 only" in reason
    assert choose_precision("float32")[1] == "precision float32 (as asked)"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert choose_precision("bfloat16")[1] == "precision bfloat16 (as asked)"
    monkeypatch.setattr(precision, "gpu_names", lambda: ["/physical_device:GPU:0"])
    assert choose_precision("float16")[1] == "precision float16 (as asked)"
    monkeypatch.setattr(precision, "int8_products_saturate", lambda: False)  # VNNI
    assert choose_precision("int8")[1] == "precision int8 (as asked)"


def onnx_convolutions(model, tmp_path):
    """The Conv nodes of `model`'s ONNX export (prepared as `quantize_int8` prepares it)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from netvlad_tf.inference.onnx_files import write_onnx

    write_onnx(model, tmp_path / "float.onnx")
    quant_pre_process(str(tmp_path / "float.onnx"), str(tmp_path / "prepared.onnx"), skip_symbolic_shape=True)
    return tmp_path / "prepared.onnx", [node.name for node in onnx.load(str(tmp_path / "prepared.onnx")).graph.node
                                        if node.op_type == "Conv"]


def test_int8_quantises_every_backbone_convolution_but_the_float_ones(tmp_path):
    """Reference: the Keras backbone's own convolution layers outside the float table. (The
    exporter names a convolution fused with its batch normalisation `Conv__N`; placing nodes by
    name alone quantised Lite0's depthwise convolutions only.)"""
    import keras

    model = build_netvlad_model("efficientnet_lite0", num_clusters=4)  # ImageNet: its batch norms fuse
    prepared, convolutions = onnx_convolutions(model, tmp_path)
    kept_float = float_layers.embedding_float_layers(model.backbone, "int8")
    expected = [layer.name for layer in model.backbone.layers
                if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                and not float_layers.stays_float(layer, kept_float)]
    quantised = [name for name in convolutions if name not in int8._float_nodes(prepared, model.backbone)]
    assert len(expected) == 6 and len(quantised) == len(expected), (len(quantised), expected)


@pytest.mark.slow  # two quantisations of Lite0 at 32×64
@pytest.mark.parametrize("saturating, weight_dtype", [(True, np.uint8), (False, np.int8)])
def test_int8_weights_are_unsigned_where_products_saturate(lite0_netvlad, tmp_path, monkeypatch, saturating,
                                                           weight_dtype):
    import onnx
    from onnx import numpy_helper

    model, _, dataset = lite0_netvlad
    monkeypatch.setattr(int8, "int8_products_saturate", lambda: saturating)
    path = int8.quantize_int8(model, dataset.database_paths[:2], tmp_path / "int8.onnx", image_size=(32, 64))
    graph = onnx.load(str(path)).graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    quantised_weights = [weights[node.input[0]] for node in graph.node
                         if node.op_type == "DequantizeLinear" and node.input[0] in weights and weights[node.input[0]].ndim == 4]
    assert len(quantised_weights) == 6 and {array.dtype for array in quantised_weights} == {np.dtype(weight_dtype)}
    # Made here, it runs here; int8 weights brought to a saturating CPU are refused by name.
    int8.OnnxRuntimeModel(path)
    monkeypatch.setattr(int8, "int8_products_saturate", lambda: True)
    if weight_dtype == np.int8:
        with pytest.raises(ValueError, match=r"int8\.onnx has int8 weights, .* saturates their products"):
            int8.OnnxRuntimeModel(path)
    else:
        int8.OnnxRuntimeModel(path)


@pytest.mark.slow  # two quantisations of Lite0
def test_int8_embeds_a_folder_close_to_float32_and_keeps_its_precision(lite0_netvlad, tmp_path, capsys):
    _, path, dataset = lite0_netvlad
    paths, coordinates = dataset.database_paths[:80], dataset.database_utm[:80]
    reference = read_descriptors(embed_database(path, paths, coordinates, tmp_path / "float32", verbose=False))
    folder = embed_database(path, paths, coordinates, tmp_path / "int8", shard_size=40, precision="int8")
    assert "int8 parity: least cosine to float32" in capsys.readouterr().out
    assert json.loads((folder / "manifest.json").read_text())["precision"] == "int8"
    found = cosines(reference.descriptors, read_descriptors(folder).descriptors)
    assert found.min() >= int8.INT8_MIN_COSINE, found.min()
    with pytest.raises(DescriptorFolderError, match=r"another precision \('int8' there, 'bfloat16' now\)"):
        embed_database(path, paths, coordinates, folder, shard_size=40, precision="bfloat16", verbose=False)
    with pytest.raises(DescriptorFolderError, match=r"another precision \('float32' there, 'int8' now\)"):
        embed_database(path, paths, coordinates, tmp_path / "float32", precision="int8", verbose=False)


def int8_query_cosines(model, dataset, float32_queries, tmp_path):
    quantised = int8.calibrated_int8_model(model, dataset.database_paths, tmp_path / "int8.onnx", verbose=False)
    return cosines(float32_queries, embed_images(quantised, dataset.query_paths[::12], verbose=False))


@pytest.mark.slow  # a quantisation of Lite0
def test_int8_keeps_descriptors_close(lite0_netvlad, float32_queries, tmp_path):
    """Measured here: median 0.9996, least 0.9978 (blocks 4–10 in int8 instead: median 0.9990)."""
    model, _, dataset = lite0_netvlad
    found = int8_query_cosines(model, dataset, float32_queries, tmp_path)
    assert np.median(found) >= MEDIAN_BOUND and found.min() >= LEAST_BOUND, (np.median(found), found.min())


@pytest.mark.slow  # a quantisation of Lite0
def test_the_bound_catches_int8_without_its_float_blocks(lite0_netvlad, float32_queries, tmp_path, monkeypatch):
    """The purpose-made mistake: int8 keeps only the phone's float layers (blocks 2–7 and the
    depthwise convolutions quantised too)."""
    model, _, dataset = lite0_netvlad
    monkeypatch.setattr(float_layers, "FLOAT_EMBEDDING_LAYERS", {})
    monkeypatch.setattr(float_layers, "FLOAT_INT8_LAYERS", {})
    assert np.median(int8_query_cosines(model, dataset, float32_queries, tmp_path)) < MEDIAN_BOUND


@pytest.mark.slow  # a quantisation of Lite0
def test_int8_that_strays_is_refused_in_one_line(lite0_netvlad, tmp_path, monkeypatch):
    """The purpose-made mistake: the head quantised too (nothing kept float32)."""
    model, _, dataset = lite0_netvlad
    monkeypatch.setattr(int8, "_float_nodes", lambda onnx_path, backbone: [])
    with pytest.raises(ValueError, match=r"stray from float32 \(least cosine 0\.\d+ over 8 held-back images"):
        int8.calibrated_int8_model(model, dataset.database_paths, tmp_path / "int8.onnx", verbose=False)
    assert not (tmp_path / "int8.onnx").exists()


@pytest.mark.slow  # a quantisation of Lite0
def test_a_place_index_queries_in_its_database_precision(lite0_netvlad, tmp_path, monkeypatch):
    model, _, dataset = lite0_netvlad
    small = dataset.select(np.arange(dataset.num_database) < 60, np.zeros(dataset.num_queries, bool))
    sessions = []
    monkeypatch.setattr(int8, "onnx_runtime_session", lambda data, opened=int8.onnx_runtime_session: (
        sessions.append(len(data)), opened(data))[1])
    built = PlaceIndex.build(model, small, precision="int8", verbose=False)
    assert len(sessions) == 1, "the calibrated model is held, not opened again from the folder"
    built.save(tmp_path / "index")
    loaded = PlaceIndex.load(tmp_path / "index")
    assert loaded.runner.precision == "int8" and (tmp_path / "index/model_int8.onnx").is_file()
    photo = dataset.database_paths[30]
    assert loaded.query([photo], top_k=1)[0][0].image_path == photo
    assert loaded.query([photo], top_k=1, precision="float32")[0][0].image_path == photo
    float_index = PlaceIndex.build(model, small, verbose=False)
    with pytest.raises(ValueError, match="holds no int8 model"):
        float_index.query([photo], precision="int8")


@pytest.mark.slow
def test_the_command_line_says_what_auto_chose(lite0_netvlad, tmp_path, capsys, monkeypatch):
    from netvlad_tf.cli import main

    _, path, _ = lite0_netvlad
    monkeypatch.setattr(precision, "gpu_names", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    common = [f"--model={path}", f"--dataset={nordland_csv('test')}", "--image_size=32,64", "--split=test"]
    assert main(["netvlad-tf", "embed", *common, f"--output={tmp_path / 'db'}", "--precision=auto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("precision auto")] == [
        next(line for line in lines if line.startswith("precision auto → float32: this CPU has no bfloat16 unit"))]
    manifest = json.loads((tmp_path / "db/manifest.json").read_text())
    assert manifest["precision"] == "float32"
    assert main(["netvlad-tf", "index", f"--descriptors={tmp_path / 'db'}", f"--output={tmp_path / 'i'}",
                 "--precision=int8"]) == 1
    assert "set when it is embedded" in capsys.readouterr().err
