"""One way to run a model on images: `ModelRunner` decides the precision, `open_model` opens the
file; nothing else in the package does either (a scan of the source), and the loop detector
runs its frames through one too."""

import ast
from pathlib import Path

import numpy as np
import pytest

import netvlad_tf
from netvlad_tf import LoopDetector, build_netvlad_model
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.io.keras_archive import ModelFileError
from netvlad_tf.models.model_files import open_model
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE, clustered_tiny_model

PACKAGE_ROOT = Path(netvlad_tf.__file__).parent
# The calls that decide how a model runs or open a model file, and the modules allowed to make them.
DECIDING_CALLS = {
    "low_precision_model": {"inference/runner.py"},
    "OnnxRuntimeModel": {"inference/runner.py", "inference/int8.py"},
    "calibrated_int8_model": {"inference/runner.py"},
    "load_keras_archive": {"models/model_files.py", "models/preset_loading.py"},
}


def deciding_calls(source: str) -> set[str]:
    """The names of `DECIDING_CALLS` that `source` calls (`f(...)` or `module.f(...)`)."""
    called = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in DECIDING_CALLS:
                called.add(name)
    return called


def test_the_scan_sees_a_second_way():
    """The purpose-made mistake: a module deciding a precision itself is seen."""
    source = "from netvlad_tf.inference.precision import low_precision_model\nrun = low_precision_model(m, 'bfloat16')\n"
    assert deciding_calls(source) == {"low_precision_model"}
    assert deciding_calls("import x\nx.load_keras_archive(path)\n") == {"load_keras_archive"}


def test_only_the_runner_decides_how_a_model_runs_and_only_open_model_opens_one():
    offenders = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        module = path.relative_to(PACKAGE_ROOT).as_posix()
        for name in deciding_calls(path.read_text()):
            if module not in DECIDING_CALLS[name]:
                offenders.append(f"{module} calls {name}")
    assert not offenders, offenders


def test_a_low_precision_runner_keeps_the_head_float32_and_the_descriptors_close():
    model = clustered_tiny_model()
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 64, 3)).astype(np.float32)
    reference = np.asarray(model(images))
    runner = ModelRunner(model, "bfloat16")
    assert runner.model is model and runner.forward is not model
    assert runner.forward.pooling.compute_dtype == "float32"
    low = runner.embed_arrays(images)
    cosine = np.sum(reference * low, axis=1)
    assert np.all(cosine > 0.99) and not np.allclose(reference, low, atol=1e-6)
    assert ModelRunner(model).forward is model  # float32 runs the model itself


def test_bad_runner_requests_are_one_line_errors():
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    with pytest.raises(ValueError, match="got 'auto'"):
        ModelRunner(model, "auto")
    with pytest.raises(ValueError, match="needs its calibrated model"):
        ModelRunner(model, "int8")
    with pytest.raises(ValueError, match="holds no int8 model"):
        ModelRunner(model).in_precision("int8")


def test_open_model_cuts_dims_and_refuses_what_needs_a_netvlad_model(tmp_path):
    import keras

    images = keras.Input((8, 8, 3))
    plain = keras.Model(images, keras.layers.GlobalAveragePooling2D()(images))
    plain.save(tmp_path / "plain.keras")
    assert open_model(tmp_path / "plain.keras").output.shape[-1] == 3
    with pytest.raises(ModelFileError, match="not a netvlad_tf model"):
        open_model(tmp_path / "plain.keras", netvlad=True)
    with pytest.raises(ModelFileError, match="not a netvlad_tf model"):
        open_model(tmp_path / "plain.keras", dims=2)


@pytest.mark.slow
def test_a_loop_detector_embeds_frames_in_its_precision_and_keeps_it(tmp_path):
    model = clustered_tiny_model()
    paths = read_csv_dataset(nordland_csv("test")).database_paths[:4]
    reference = LoopDetector(model, 0.9, 1, image_size=(32, 64))
    reference.add_images(paths, verbose=False)
    low = LoopDetector(model, 0.9, 1, image_size=(32, 64), precision="bfloat16")
    low.add_images(paths, verbose=False)
    cosine = np.sum(reference.descriptors * low.descriptors, axis=1)
    assert np.all(cosine > 0.99) and not np.allclose(reference.descriptors, low.descriptors, atol=1e-6)
    low.save(tmp_path / "detector")
    loaded = LoopDetector.load(tmp_path / "detector")
    assert loaded.runner.precision == "bfloat16"
    loaded.add(paths[0])
    np.testing.assert_allclose(loaded.descriptors[-1], low.descriptors[0], atol=1e-5)
    with pytest.raises(ValueError, match="int8 is calibrated on images like the stream"):
        LoopDetector(model, 0.9, 1, precision="int8")
