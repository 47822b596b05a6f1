"""The authors' MatConvNet NetVLAD model layout → Keras, against a NumPy forward pass of it."""

import numpy as np
import pytest
import scipy.io

from netvlad_tf.converters.matconvnet import convert_matconvnet_netvlad

WIDTHS = (4, 6, 8, 8, 8)  # VGG16's are 64, 128, 256, 512, 512
BLOCK_SIZES = (2, 2, 3, 3, 3)
NUM_CLUSTERS, WHITENING_DIM = 3, 5
AVERAGE_RGB = np.array([122.7, 116.7, 104.0])


def _cell(items):
    cell = np.empty((1, len(items)), dtype=object)
    for index, item in enumerate(items):
        cell[0, index] = item
    return cell


def synthetic_net(rng):
    """A `net` struct laid out as vd16_*_conv5_3_vlad_preL2_intra_white.mat, with narrow layers."""
    layers, channels = [], 3
    for block, (width, size) in enumerate(zip(WIDTHS, BLOCK_SIZES), start=1):
        for position in range(1, size + 1):
            name = f"conv{block}_{position}"
            kernel = rng.normal(0, 0.3, (3, 3, channels, width)).astype(np.float32)
            layers.append({"name": name, "type": "conv", "stride": [1, 1], "pad": [1, 1, 1, 1],
                           "weights": _cell([kernel, rng.normal(0, 0.1, (1, width)).astype(np.float32)])})
            if (block, position) != (5, 3):  # cropped at conv5_3, before its ReLU
                layers.append({"name": f"relu{block}_{position}", "type": "relu"})
            channels = width
        if block < 5:
            layers.append({"name": f"pool{block}", "type": "pool", "method": "max",
                           "pool": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]})
    dim = channels
    normalize = {"type": "normalize", "param": [2 * dim, 1e-12, 1, 0.5]}
    layers.append({"name": "preL2", **normalize})
    assignment = rng.normal(0, 2, (1, 1, dim, NUM_CLUSTERS)).astype(np.float32)
    negated_centroids = rng.normal(0, 0.5, (1, 1, dim, NUM_CLUSTERS)).astype(np.float32)
    layers.append({"name": "vlad:core", "type": "custom", "K": NUM_CLUSTERS, "D": dim,
                   "weights": _cell([assignment, negated_centroids])})
    layers.append({"name": "vlad:intranorm", **normalize})
    layers.append({"name": "postL2", "type": "custom"})
    whitening = rng.normal(0, 1, (1, 1, dim * NUM_CLUSTERS, WHITENING_DIM)).astype(np.float32)
    layers.append({"name": "WPCA", "type": "conv", "weights": _cell(
        [whitening, rng.normal(0, 0.1, (WHITENING_DIM, 1)).astype(np.float32)])})
    layers.append({"name": "finalL2", "type": "custom"})
    meta = {"normalization": {"averageImage": AVERAGE_RGB.reshape(1, 1, 3)}}
    return {"layers": _cell(layers), "meta": meta}


def _l2(x, axis):
    return x / np.sqrt(1e-12 + (x**2).sum(axis=axis, keepdims=True))


def matlab_forward(net, image):
    """NumPy transcription of what MatConvNet computes for one RGB image in 0–255 (H, W, 3)."""
    x = image.astype(np.float64) - net["meta"]["normalization"]["averageImage"].reshape(3)
    for layer in net["layers"].ravel():
        kind, name = layer["type"], layer["name"]
        if kind == "conv" and name != "WPCA":
            kernel, bias = layer["weights"].ravel()
            padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
            x = np.einsum("hwcij,ijco->hwo", windows, kernel) + bias.ravel()
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "pool":
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))
        elif name in ("preL2",):
            x = _l2(x, axis=-1)
        elif name == "vlad:core":
            assignment, negated_centroids = (w.reshape(w.shape[2:]) for w in layer["weights"].ravel())
            descriptors = x.reshape(-1, x.shape[-1])  # (N, D)
            logits = descriptors @ assignment
            soft = np.exp(logits - logits.max(1, keepdims=True))
            soft /= soft.sum(1, keepdims=True)
            # MATLAB adds the stored (negated) centroids: Σ_i a_k(x_i) (x_i + C_k).
            x = np.stack([(soft[:, k, None] * (descriptors + negated_centroids[:, k])).sum(0)
                          for k in range(NUM_CLUSTERS)])  # (K, D)
        elif name == "vlad:intranorm":
            x = _l2(x, axis=1)
        elif name in ("postL2", "finalL2"):
            x = _l2(x.ravel(order="F") if x.ndim == 2 else x, axis=0)  # (K, D) column-major
        elif name == "WPCA":
            kernel, bias = layer["weights"].ravel()
            x = x @ kernel.reshape(-1, WHITENING_DIM) + bias.ravel()
    return x


@pytest.fixture
def mat_file(tmp_path, rng):
    net = synthetic_net(rng)
    path = tmp_path / "vd16_tiny_conv5_3_vlad_preL2_intra_white.mat"
    scipy.io.savemat(path, {"net": net})
    return path, net


def test_converted_model_reproduces_the_matlab_descriptor(mat_file, rng, tmp_path):
    path, net = mat_file
    images = rng.uniform(0, 255, (2, 48, 64, 3)).astype(np.float32)
    model = convert_matconvnet_netvlad(path, tmp_path / "converted.keras")
    assert model.descriptor_dim == WHITENING_DIM
    expected = np.stack([matlab_forward(net, image) for image in images])
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=2e-5)
    import keras

    reloaded = keras.models.load_model(tmp_path / "converted.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=2e-5)


def test_missing_layers_and_bad_files_are_clear_errors(tmp_path, rng):
    net = synthetic_net(rng)
    net["layers"] = _cell([layer for layer in net["layers"].ravel() if layer["name"] != "vlad:core"])
    scipy.io.savemat(tmp_path / "novlad.mat", {"net": net})
    with pytest.raises(ValueError, match="no 'vlad:core'"):
        convert_matconvnet_netvlad(tmp_path / "novlad.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"weights": np.zeros(3)})
    with pytest.raises(ValueError, match="no variable 'net'"):
        convert_matconvnet_netvlad(tmp_path / "other.mat")
    with pytest.raises(FileNotFoundError):
        convert_matconvnet_netvlad(tmp_path / "missing.mat")
    # A v7.3 header: the released files are HDF5 with MATLAB objects inside.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2016 HDF5 schema 1.00 ."
    (tmp_path / "v73.mat").write_bytes(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
    with pytest.raises(ValueError, match="v7.3"):
        convert_matconvnet_netvlad(tmp_path / "v73.mat")


def test_cluster_count_disagreeing_with_assignment_is_a_clear_error(tmp_path, rng):
    net = synthetic_net(rng)
    vlad = next(layer for layer in net["layers"].ravel() if layer["name"] == "vlad:core")
    assignment, negated_centroids = vlad["weights"].ravel()
    vlad["weights"] = _cell([assignment, negated_centroids[..., :2]])
    scipy.io.savemat(tmp_path / "mismatch.mat", {"net": net})
    with pytest.raises(ValueError, match="centroids"):
        convert_matconvnet_netvlad(tmp_path / "mismatch.mat")


@pytest.mark.slow  # a fresh process
def test_damaged_mat_files_are_named_errors_in_a_subprocess(tmp_path, rng):
    """Empty, truncated and garbage-after-header files: one message naming the file, no
    traceback and no crash (scipy's reader runs in the subprocess)."""
    import json
    import subprocess
    import sys

    scipy.io.savemat(tmp_path / "good.mat", {"net": synthetic_net(rng)}, do_compression=False)
    good = (tmp_path / "good.mat").read_bytes()
    scipy.io.savemat(tmp_path / "zipped.mat", {"net": synthetic_net(rng)}, do_compression=True)
    zipped = (tmp_path / "zipped.mat").read_bytes()
    cases = {
        "empty": b"",
        "header_only": good[:128],
        "truncated": good[: len(good) // 2],
        "garbage_after_header": good[:128] + bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),
        "compressed_truncated": zipped[: len(zipped) // 2],
        "not_matlab": b"hello world, not a mat file" * 10,
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.mat").write_bytes(data)
    script = (
        "import json, sys\n"
        "from netvlad_tf.cli import main\n"
        "codes = {}\n"
        "for name in json.loads(sys.argv[2]):\n"
        "    print('CASE', name, file=sys.stderr, flush=True)\n"
        "    codes[name] = main(['netvlad-tf', 'convert', '--source=matconvnet',\n"
        "                        f'--input={sys.argv[1]}/{name}.mat', f'--output={sys.argv[1]}/{name}.keras'])\n"
        "print('CODES' + json.dumps(codes))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(list(cases))],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    codes = json.loads(completed.stdout.split("CODES", 1)[1])
    assert set(codes.values()) == {1}, codes
    messages = completed.stderr.split("CASE ")[1:]
    for name, message in zip(cases, messages):
        assert message.startswith(name) and f"{name}.mat" in message and "Traceback" not in message, message
        assert "MatConvNet model" in message, message
        assert not (tmp_path / f"{name}.keras").exists()


@pytest.mark.slow
def test_int8_export_of_a_converted_model_keeps_its_preprocessing_in_float(mat_file, rng, tmp_path):
    """Converted models name their preprocessing `pixel_normalization`: the float policy is by
    layer type, so it stays float32 while the convolutions go to int8."""
    from ai_edge_litert.interpreter import Interpreter

    from netvlad_tf.export import export_tflite

    path, _ = mat_file
    model = convert_matconvnet_netvlad(path)
    calibration = list(rng.uniform(0, 255, (8, 32, 48, 3)).astype(np.float32))
    exported = export_tflite(model, tmp_path / "int8.tflite", "int8", (32, 48), calibration)
    dtypes = {tensor["name"]: tensor["dtype"] for tensor in Interpreter(model_path=str(exported)).get_tensor_details()}
    preprocessing = {name: dtype for name, dtype in dtypes.items() if "pixel_normalization" in name}
    assert preprocessing and all(dtype == np.float32 for dtype in preprocessing.values()), preprocessing
    assert any(dtype == np.int8 and "block3_conv" in name for name, dtype in dtypes.items()), "backbone in int8"
