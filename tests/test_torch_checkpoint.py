"""Reading torch.save files without torch, safely; converting the PyTorch NetVLAD port."""

import os
import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from netvlad_tf.weights.assembly import netvlad_model_from_arrays
from netvlad_tf.weights.pytorch_netvlad import convert_pytorch_netvlad, pytorch_netvlad_arrays
from netvlad_tf.weights.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    UnsafeCheckpointError,
    read_torch_checkpoint,
)

FIXTURES = Path(__file__).with_name("fixtures")


def test_zip_and_legacy_checkpoints_written_by_torch_read_the_same():
    legacy = read_torch_checkpoint(FIXTURES / "pytorch_netvlad_checkpoint.pth.tar")
    modern = read_torch_checkpoint(FIXTURES / "pytorch_netvlad_checkpoint_zip.pth")
    assert legacy["epoch"] == 5 and legacy["best_score"] == 0.5
    assert list(legacy["state_dict"]) == list(modern["state_dict"])
    for name, tensor in legacy["state_dict"].items():
        np.testing.assert_array_equal(modern["state_dict"][name], tensor)
    centroids = legacy["state_dict"]["pool.centroids"]
    np.testing.assert_array_equal(modern["transposed"], centroids.T)
    assert modern["half"].dtype == np.float16
    np.testing.assert_array_equal(modern["half"], centroids.astype(np.float16))
    assert legacy["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state_dict": Exploit()}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_torch_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    # The same payload in the legacy layout, after a genuine header.
    with open(tmp_path / "evil_legacy.pth", "wb") as file:
        for part in (LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(part, file, protocol=2)
        pickle.dump(Exploit(), file, protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        read_torch_checkpoint(tmp_path / "evil_legacy.pth")
    assert not marker.exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        read_torch_checkpoint(tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "missing.pth")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "no pickle")
    with pytest.raises(ValueError, match="no data.pkl"):
        read_torch_checkpoint(tmp_path / "other.zip")


def test_truncated_legacy_checkpoint_is_a_clear_error(tmp_path):
    data = (FIXTURES / "pytorch_netvlad_checkpoint.pth.tar").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_checkpoint(tmp_path / "cut.pth")


def test_pytorch_port_checkpoint_converts_to_its_descriptors(tmp_path):
    # fixtures/make_pytorch_netvlad_checkpoint.py: a narrow VGG16 + NetVLAD saved by torch in the
    # legacy format, with the descriptors torch computed for these images.
    expected = np.load(FIXTURES / "pytorch_netvlad_expected.npz")
    model = convert_pytorch_netvlad(FIXTURES / "pytorch_netvlad_checkpoint.pth.tar", tmp_path / "port.keras")
    np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-5)
    reloaded = keras.models.load_model(tmp_path / "port.keras")
    np.testing.assert_allclose(reloaded.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-5)


def test_checkpoint_without_netvlad_or_with_another_d_is_a_clear_error():
    with pytest.raises(ValueError, match="pool.conv.weight"):
        pytorch_netvlad_arrays({"fc.weight": np.zeros((2, 2), np.float32)})
    state_dict = dict(read_torch_checkpoint(FIXTURES / "pytorch_netvlad_checkpoint.pth.tar")["state_dict"])
    state_dict["pool.centroids"] = state_dict["pool.centroids"][:, :5]  # D = 5, conv5_3 has 8
    with pytest.raises(ValueError, match="centroids"):
        netvlad_model_from_arrays(pytorch_netvlad_arrays(state_dict))
