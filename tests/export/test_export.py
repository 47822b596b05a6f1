"""SavedModel and TFLite exports reproduce the Keras model; serving requests round-trip."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from netvlad_tf import build_netvlad_model, initialize_clusters
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.data.images import image_batches, load_image
from netvlad_tf.export import (
    export_saved_model,
    export_tflite,
    run_tflite,
    verify_saved_model,
    verify_tflite,
)
from netvlad_tf.export.serving_clients import (
    grpc_encoded_request,
    rest_encoded_request,
    rest_pixels_request,
)
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE, TINY_DIM

IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    dataset = read_csv_dataset(nordland_csv("test"))
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, whitening_dim=None)
    initialize_clusters(model, image_batches(dataset.database_paths[:30], IMAGE_SIZE), num_descriptors=400,
                        descriptors_per_image=8, verbose=False)
    return model


@pytest.fixture(scope="module")
def images():
    paths = read_csv_dataset(nordland_csv("test")).query_paths[:4]
    return np.concatenate(list(image_batches(paths, IMAGE_SIZE)))


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    return export_saved_model(model, tmp_path_factory.mktemp("serving"), encoded_image_size=IMAGE_SIZE)


@pytest.mark.slow
def test_saved_model_layout_and_parity(saved_model, model, images):
    assert saved_model.parts[-2:] == ("netvlad", "1") and (saved_model / "saved_model.pb").is_file()
    report = verify_saved_model(saved_model, model, np.round(images).astype(np.uint8))
    assert report.passed and report.max_abs_diff <= 1e-5


@pytest.mark.slow
def test_saved_model_holds_one_copy_of_the_weights(tmp_path):
    # A 1024 × 1024 whitening (4 MB) dwarfs the graph: twice the weights would show.
    heavy = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=64, whitening_dim=1024)
    path = export_saved_model(heavy, tmp_path, encoded_image_size=IMAGE_SIZE)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    weight_bytes = sum(np.prod(w.shape) * 4 for w in heavy.weights)
    assert weight_bytes > 4_000_000 and size < 1.2 * weight_bytes


@pytest.mark.slow  # TensorFlow's saved_model_cli, twice, each a fresh process
def test_saved_model_cli_runs_both_signatures(saved_model, model, images, tmp_path):
    pixels = np.round(images[:2]).astype(np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", str(saved_model),
                    "--tag_set", "serve", "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'pixels.npy'}",
                    "--outdir", str(tmp_path / "out1")], check=True, capture_output=True)
    expected = model.predict(pixels.astype(np.float32), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "out1" / "descriptor.npy"), expected, atol=1e-5)

    png = tf.io.encode_png(tf.constant(pixels[0])).numpy()
    np.save(tmp_path / "encoded.npy", np.array([png], dtype=object), allow_pickle=True)
    subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", str(saved_model),
                    "--tag_set", "serve", "--signature_def", "encoded", "--inputs", f"images={tmp_path / 'encoded.npy'}",
                    "--outdir", str(tmp_path / "out2")], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "out2" / "descriptor.npy"), expected[:1], atol=1e-5)


def test_bad_requests_are_errors_not_crashes(saved_model):
    loaded = tf.saved_model.load(str(saved_model))
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["encoded"](images=tf.constant([b"definitely not an image"]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 3), tf.float32))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros((8, 8, 3), tf.uint8))


def test_export_is_atomic(model, tmp_path, monkeypatch):
    export_saved_model(model, tmp_path, encoded_image_size=IMAGE_SIZE)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_saved_model(model, tmp_path, encoded_image_size=IMAGE_SIZE)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, tmp_path, version=2, encoded_image_size=IMAGE_SIZE)
    assert sorted(p.name for p in (tmp_path / "netvlad").iterdir()) == ["1"]


def test_serving_requests_round_trip(saved_model, model, images):
    pixels = np.round(images[:2]).astype(np.uint8)
    encoded = [tf.io.encode_png(tf.constant(image)).numpy() for image in pixels]
    body = rest_encoded_request(encoded)
    assert body["signature_name"] == "encoded" and len(body["instances"]) == 2
    assert rest_pixels_request(pixels)["instances"] == pixels.tolist()
    with pytest.raises(ValueError, match="uint8"):
        rest_pixels_request(images)

    request = grpc_encoded_request(encoded)
    loaded = tf.saved_model.load(str(saved_model))
    signature = loaded.signatures[request.model_spec.signature_name]
    spec = signature.structured_input_signature[1]["images"]
    assert request.inputs["images"].dtype == spec.dtype.as_datatype_enum
    decoded = tf.make_ndarray(request.inputs["images"])
    served = signature(images=tf.constant(decoded))["descriptor"].numpy()
    np.testing.assert_allclose(served, model.predict(pixels.astype(np.float32), verbose=0), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic"])
def test_tflite_variants_meet_their_bars(model, images, tmp_path, quantize):
    path = export_tflite(model, tmp_path / f"{quantize}.tflite", quantize, IMAGE_SIZE)
    report = verify_tflite(path, model, images, quantize)
    assert report.passed, report.line()


@pytest.mark.slow
def test_int8_calibration_uses_the_representative_images(model, images, tmp_path, caplog):
    import warnings

    real = list(images) * 4
    constant = [np.full((*IMAGE_SIZE, 3), 128.0, np.float32)] * len(real)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = export_tflite(model, tmp_path / "real.tflite", "int8", IMAGE_SIZE, real)
    deprecated = [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    deprecated += [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]
    assert not deprecated, "the export path prints TensorFlow's deprecation warnings"
    second = export_tflite(model, tmp_path / "constant.tflite", "int8", IMAGE_SIZE, constant)
    assert first.read_bytes() != second.read_bytes()
    assert run_tflite(first, images).shape == (len(images), 4 * TINY_DIM)
    with pytest.raises(ValueError, match="representative images"):
        export_tflite(model, tmp_path / "none.tflite", "int8", IMAGE_SIZE)
    with pytest.raises(ValueError, match=r"must be \(32, 64, 3\)"):
        export_tflite(model, tmp_path / "bad.tflite", "int8", IMAGE_SIZE, [np.zeros((8, 8, 3))])


def test_tflite_rejects_other_image_sizes(model, images, tmp_path):
    path = export_tflite(model, tmp_path / "f.tflite", "none", IMAGE_SIZE)
    with pytest.raises(ValueError, match="takes images of shape"):
        run_tflite(path, np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(FileExistsError):
        export_tflite(model, path, "none", IMAGE_SIZE)


def test_load_image_matches_encoded_signature_resize(saved_model, model):
    path = read_csv_dataset(nordland_csv("test")).query_paths[0]
    loaded = tf.saved_model.load(str(saved_model))
    served = loaded.signatures["encoded"](images=tf.constant([Path(path).read_bytes()]))["descriptor"].numpy()
    local = model.predict(load_image(path, IMAGE_SIZE).numpy()[None], verbose=0)
    np.testing.assert_allclose(served, local, atol=1e-5)


@pytest.mark.slow  # a real-size int8 conversion
def test_int8_on_real_weights_meets_its_bar_with_the_head_in_float(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from netvlad_tf import fit_pca_whitening
    from netvlad_tf.inference.embedding import embed_images

    size = (64, 128)
    dataset = read_csv_dataset(nordland_csv("train"))
    lite = build_netvlad_model(backbone="efficientnet_lite0", weights="imagenet", num_clusters=8)
    initialize_clusters(lite, image_batches(dataset.database_paths[:40], size), num_descriptors=2000,
                        descriptors_per_image=50, verbose=False)
    pooled = embed_images(lite.pooled_model, dataset.database_paths[::8][:100], size, verbose=False)
    lite = lite.with_whitening(fit_pca_whitening(pooled, output_dim=64))
    calibration = list(np.concatenate(list(image_batches(dataset.database_paths[::40][:16], size))))
    path = export_tflite(lite, tmp_path / "int8.tflite", "int8", size, calibration)
    check = np.concatenate(list(image_batches(read_csv_dataset(nordland_csv("test")).query_paths[:6], size)))
    report = verify_tflite(path, lite, check, "int8")
    assert report.passed, report.line()
    interpreter = Interpreter(model_path=str(path))
    dtypes = {tensor["name"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    assert any(dtype == np.int8 and "block5_" in name for name, dtype in dtypes.items()), "backbone in int8"
    assert not any(dtype == np.int8 and "/netvlad" in name and "stride16" not in name
                   for name, dtype in dtypes.items()), "the NetVLAD layer stays float"
    whitening = [(name, dtype) for name, dtype in dtypes.items() if "whitening" in name]
    assert (any(dtype == np.int8 for _, dtype in whitening)
            and any(dtype == np.float32 for _, dtype in whitening)), "int8 whitening weights, float activations"



@pytest.mark.slow  # a fresh process
def test_requests_the_graph_refuses_leave_the_server_alive(saved_model, tmp_path):
    """Calls the signatures' graphs directly (as TF Serving's C++ loop does, without Python's
    signature checks), oneDNN on, in a subprocess: every bad request is an InvalidArgumentError
    naming the limit, the process survives, and a 400-megapixel PNG bomb (a few hundred KB) is
    refused from its header without being decoded."""
    import json
    import os

    from tests.support.image_files import blank_png

    (tmp_path / "bomb.png").write_bytes(blank_png(20_000, 20_000))
    (tmp_path / "small.png").write_bytes(blank_png(64, 48))
    script = f"""
import json, resource, sys
import tensorflow as tf
loaded = tf.saved_model.load({str(saved_model)!r})
pixels, encoded = loaded.signatures["serving_default"], loaded.signatures["encoded"]
bomb = open({str(tmp_path / 'bomb.png')!r}, "rb").read()
small = open({str(tmp_path / 'small.png')!r}, "rb").read()
requests = {{
    "good": (pixels, tf.zeros((1, 40, 40, 3), tf.uint8)),
    "good_png": (encoded, tf.constant([small])),
    "rank3": (pixels, tf.zeros((8, 8, 3), tf.uint8)),
    "rank5": (pixels, tf.zeros((1, 1, 40, 40, 3), tf.uint8)),
    "four_channels": (pixels, tf.zeros((1, 40, 40, 4), tf.uint8)),
    "too_small": (pixels, tf.zeros((1, 8, 8, 3), tf.uint8)),
    "too_large": (pixels, tf.zeros((1, 4000, 40, 3), tf.uint8)),
    "empty_batch": (pixels, tf.zeros((0, 40, 40, 3), tf.uint8)),
    "png_bomb": (encoded, tf.constant([bomb])),
    "truncated_png": (encoded, tf.constant([bomb[:12]])),
    "gif": (encoded, tf.constant([b"GIF89a" + bytes(40)])),
}}
outcomes = {{}}
for name, (function, value) in requests.items():
    if name == "png_bomb":  # after both signatures ran once: the peak so far is the baseline
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = function._call_flat([value], function.captured_inputs)
        outcomes[name] = "ok " + str(tuple(result["descriptor"].shape))
    except tf.errors.InvalidArgumentError as error:
        outcomes[name] = "refused " + error.message.replace("\\n", " ")[:400]
print("OUTCOMES" + json.dumps(outcomes))
print("PEAK_GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024)
"""
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcomes = json.loads(completed.stdout.split("OUTCOMES", 1)[1].splitlines()[0])
    expected = {
        "rank3": "shape", "rank5": "shape", "four_channels": "shape",
        "too_small": "at least 32 pixels", "too_large": "at most 2048 pixels",
        "png_bomb": "at most 50331648 pixels (its header says more)", "truncated_png": "PNG header is truncated",
        "gif": "JPEG or PNG",
    }
    for name, words in expected.items():
        assert outcomes[name].startswith("refused") and words in outcomes[name], (name, outcomes[name])
    assert outcomes["good"].startswith("ok (1, ") and outcomes["good_png"].startswith("ok (1, ")
    assert outcomes["empty_batch"].startswith(("ok (0, ", "refused")), outcomes["empty_batch"]
    # Decoding the bomb would take 1.2 GB as uint8 and 4.8 GB as float32.
    assert float(completed.stdout.split("PEAK_GROWTH_MB", 1)[1]) < 200


def test_exports_are_readable_by_other_users_under_umask_022(model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        tflite = export_tflite(model, tmp_path / "m.tflite", "none", IMAGE_SIZE)
        saved = export_saved_model(model, tmp_path / "serving", encoded_image_size=IMAGE_SIZE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(tflite.stat().st_mode) == 0o644
    for path in [saved, *saved.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))  # group and others can read
        if path.is_dir():
            assert mode & 0o011 == 0o011, (path, oct(mode))  # and enter


def test_onnx_export_matches_keras_at_any_batch_and_size(model, tmp_path):
    from netvlad_tf.export import export_onnx, run_onnx, verify_onnx

    path = export_onnx(model, tmp_path / "netvlad.onnx")
    rng = np.random.default_rng(0)
    for shape in [(1, 32, 64, 3), (3, 48, 80, 3), (2, 64, 48, 3)]:  # batch, height and width all vary
        images = rng.uniform(0, 255, shape).astype(np.float32)
        np.testing.assert_allclose(run_onnx(path, images), model.predict(images, verbose=0), atol=1e-4)
    report = verify_onnx(path, model, rng.uniform(0, 255, (2, 32, 64, 3)).astype(np.float32))
    assert report.passed and report.max_abs_diff <= 1e-4
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(model, path)


def test_missing_onnx_packages_name_the_extra(model, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_tf2onnx(name, *args, **kwargs):
        if name == "tf2onnx":
            raise ImportError("No module named 'tf2onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tf2onnx)
    from netvlad_tf.export import export_onnx

    with pytest.raises(ValueError, match=r"pip install 'netvlad_tf\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_export_command_defaults_to_full_int8_at_480x640_with_a_model_card(model, tmp_path, capsys):
    import json

    from ai_edge_litert.interpreter import Interpreter

    from netvlad_tf.cli import main

    model.save(tmp_path / "m.keras")
    output = tmp_path / "phone.tflite"
    code = main(["netvlad-tf", "export", f"--model={tmp_path / 'm.keras'}", "--format=tflite",
                 f"--output={output}", "--training_data=Nordland (test fixture)", "--weights_license=CC0"])
    interpreter = Interpreter(model_path=str(output))
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, 480, 640, 3)
    assert any(tensor["dtype"] == np.int8 for tensor in interpreter.get_tensor_details())
    card = json.loads((tmp_path / "phone.tflite.model_card.json").read_text())
    assert card["input"]["shape"] == [1, 480, 640, 3] and card["input"]["quantization"] == "int8"
    assert card["output"]["dimension"] == model.descriptor_dim and card["output"]["layout"] == "matlab"
    assert card["training_data"] == "Nordland (test fixture)" and card["weights_license"] == "CC0"
    assert card["parity"]["passed"] is (code == 0)
    onnx = tmp_path / "m.onnx"
    assert main(["netvlad-tf", "export", f"--model={tmp_path / 'm.keras'}", "--format=onnx",
                 f"--output={onnx}"]) == 0
    assert json.loads((tmp_path / "m.onnx.model_card.json").read_text())["format"] == "onnx"


@pytest.mark.slow
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_encoded_signature_turns_jpeg_photos_upright_by_their_exif(saved_model, model, tmp_path, orientation):
    """The signature's descriptor of a photo stored turned (with its EXIF orientation) equals the
    Keras model's descriptor of the upright picture, read the package's way (Pillow writes the
    photo as a camera would)."""
    from tests.support.image_files import photo_with_orientation

    upright = (np.random.default_rng(orientation).uniform(0, 255, (40, 80, 3))).astype(np.uint8)
    photo_with_orientation(tmp_path / "photo.jpg", upright, orientation, quality=100)
    loaded = tf.saved_model.load(str(saved_model))
    served = loaded.signatures["encoded"](images=tf.constant([(tmp_path / "photo.jpg").read_bytes()]))["descriptor"]
    expected = model.predict(load_image(tmp_path / "photo.jpg", IMAGE_SIZE).numpy()[None], verbose=0)
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-4)
