"""Reading torch.save files without torch, safely; converting the PyTorch NetVLAD port."""

import os
import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from netvlad_tf.converters.assembly import netvlad_model_from_arrays
from netvlad_tf.converters.pytorch_netvlad import convert_pytorch_netvlad, pytorch_netvlad_arrays
from netvlad_tf.io.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    UnsafeCheckpointError,
    read_torch_checkpoint,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"


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


FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()


def crafted_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, the words its error must contain)."""
    from tests.support.crafted_checkpoints import (
        StorageRef,
        TensorView,
        write_legacy_checkpoint,
        write_zip_checkpoint,
    )

    four = StorageRef("0", "FloatStorage", 4)
    one = StorageRef("0", "FloatStorage", 1)
    zip_cases = {
        "stride_2_40": ({"w": TensorView(four, 0, (4,), (2**40,))}, {"0": FOUR_FLOATS}, "reaches element"),
        "offset_past_end": ({"w": TensorView(four, 10, (1,), (1,))}, {"0": FOUR_FLOATS}, "reaches element"),
        "one_float_as_65536": ({"w": TensorView(one, 0, (65536,), (1,))}, {"0": FOUR_FLOATS[:4]}, "reaches element"),
        "huge_element_count": ({"w": TensorView(four, 0, (2**31, 2**31), (0, 0))}, {"0": FOUR_FLOATS}, "GiB"),
        "negative_stride": ({"w": TensorView(four, 3, (4,), (-1,))}, {"0": FOUR_FLOATS}, "not a valid view"),
        "wrong_storage_type": ({"w": TensorView(StorageRef("0", "NoSuchStorage", 4), 0, (4,), (1,))},
                               {"0": FOUR_FLOATS}, "NoSuchStorage"),
        "storage_not_a_storage": ({"w": TensorView(5, 0, (4,), (1,))}, {}, "not a storage"),
        "dtype_size_mismatch": ({"w": TensorView(four, 0, (1,), (1,))}, {"0": FOUR_FLOATS[:7]}, "whole number"),
        "missing_storage": ({"w": TensorView(four, 0, (4,), (1,))}, {}, "missing from the archive"),
    }
    cases = {}
    for name, (state_dict, storages, words) in zip_cases.items():
        path = folder / f"{name}.pth"
        write_zip_checkpoint(path, state_dict, storages)
        cases[name] = (path, words)
    legacy = {
        "legacy_negative_numel": (-5, FOUR_FLOATS, "claims -5 elements"),
        "legacy_numel_past_end": (2**40, FOUR_FLOATS, "truncated"),
        "legacy_stride_2_40": (4, FOUR_FLOATS, "reaches element"),
    }
    for name, (numel, raw, words) in legacy.items():
        path = folder / f"{name}.pth.tar"
        stride = 2**40 if "stride" in name else 1
        write_legacy_checkpoint(path, {"w": TensorView(four, 0, (4,), (stride,))}, {"0": (numel, raw)})
        cases[name] = (path, words)
    return cases


@pytest.mark.slow  # a fresh process
def test_crafted_checkpoints_are_refused_by_name_without_crashing(tmp_path):
    """Run in a subprocess: a reader that reads out of bounds would crash it, not the suite."""
    import json
    import subprocess
    import sys

    cases = crafted_cases(tmp_path)
    script = (
        "import json, sys\n"
        "from netvlad_tf.io.torch_checkpoint import read_torch_checkpoint\n"
        "outcomes = {}\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    print('reading', name, flush=True)\n"
        "    try:\n"
        "        read_torch_checkpoint(path); outcomes[name] = 'loaded'\n"
        "    except ValueError as error:\n"
        "        outcomes[name] = str(error)\n"
        "print('OUTCOMES' + json.dumps(outcomes))\n"
    )
    paths = {name: str(path) for name, (path, _) in cases.items()}
    completed = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    outcomes = json.loads(completed.stdout.split("OUTCOMES", 1)[1])
    for name, (path, words) in cases.items():
        assert words in outcomes[name], (name, outcomes[name])
        assert path.name in outcomes[name], (name, outcomes[name])
    assert "tensor checkpoint['state_dict']['w']" in outcomes["stride_2_40"]


@pytest.mark.slow  # a fresh process
def test_a_crafted_checkpoint_is_a_one_line_cli_error(tmp_path):
    import subprocess
    import sys

    from tests.support.crafted_checkpoints import StorageRef, TensorView, write_zip_checkpoint

    path = tmp_path / "stride.pth"
    write_zip_checkpoint(path, {"pool.centroids": TensorView(StorageRef("0", "FloatStorage", 4), 0, (4,), (2**40,))},
                         {"0": FOUR_FLOATS})
    completed = subprocess.run(
        [sys.executable, "-m", "netvlad_tf.cli", "convert", "--source=pytorch", f"--input={path}",
         f"--output={tmp_path / 'x.keras'}"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "reaches element" in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "x.keras").exists()


def test_a_well_formed_crafted_checkpoint_reads_its_view():
    """The crafting helper writes what the reader understands: a transposed view is exact."""
    import tempfile

    from tests.support.crafted_checkpoints import StorageRef, TensorView, write_zip_checkpoint

    path = Path(tempfile.mkdtemp()) / "ok.pth"
    six = np.arange(6, dtype="<f4")
    write_zip_checkpoint(path, {"t": TensorView(StorageRef("0", "FloatStorage", 6), 0, (3, 2), (1, 3))},
                         {"0": six.tobytes()})
    np.testing.assert_array_equal(read_torch_checkpoint(path)["state_dict"]["t"], six.reshape(2, 3).T)
