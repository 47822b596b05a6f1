"""`with_dims` / `--dims`: the first D whitened dimensions, L2-normalised again (the authors'
`cropToDim`), against cropping the full descriptors in NumPy."""

import json

import keras
import numpy as np
import pytest

from netvlad_tf import PlaceRecognitionModel, build_netvlad_model, fit_pca_whitening, read_descriptors
from netvlad_tf.cli import main
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE

WHITENED = 24
IMAGE_SIZE = (32, 64)


def cropped(descriptors: np.ndarray, dims: int) -> np.ndarray:
    """cropToDim: the first `dims` components, L2-normalised again."""
    kept = descriptors[:, :dims].astype(np.float64)
    return kept / np.linalg.norm(kept, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def whitened_model():
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    images = (np.random.default_rng(0).random((40, 32, 64, 3)) * 255).astype("float32")
    model = model.with_whitening(fit_pca_whitening(model.pooled_model.predict(images, verbose=0), WHITENED))
    return model, images


@pytest.mark.slow
@pytest.mark.parametrize("dims", [1, 8, WHITENED])
def test_compact_descriptors_equal_cropping_the_full_ones(whitened_model, dims):
    model, images = whitened_model
    full = model.predict(images, verbose=0)
    compact = model.with_dims(dims)
    assert compact.descriptor_dim == dims
    np.testing.assert_allclose(compact.predict(images, verbose=0), cropped(full, dims), atol=1e-6)


def test_the_saved_compact_model_is_smaller_and_reloads(whitened_model, tmp_path):
    model, images = whitened_model
    model.save(tmp_path / "full.keras")
    compact = model.with_dims(4)
    compact.save(tmp_path / "compact.keras")
    reloaded = keras.saving.load_model(tmp_path / "compact.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), compact.predict(images, verbose=0), atol=1e-6)
    kernel_bytes_saved = model.pooling.output.shape[-1] * (WHITENED - 4) * 4
    saved = (tmp_path / "full.keras").stat().st_size - (tmp_path / "compact.keras").stat().st_size
    assert saved > 0.5 * kernel_bytes_saved  # a zip of float32 weights: most of the cut kernel


def test_without_whitening_or_out_of_range_is_a_one_line_error(whitened_model):
    plain = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    with pytest.raises(ValueError, match="no PCA whitening"):
        plain.with_dims(8)
    with pytest.raises(ValueError, match=rf"\[1, {WHITENED}\]"):
        whitened_model[0].with_dims(WHITENED + 1)


def test_from_preset_with_dims(whitened_model, tmp_path):
    model, images = whitened_model
    folder = model.save_to_preset(tmp_path / "preset")
    compact = PlaceRecognitionModel.from_preset(str(folder), dims=6)
    np.testing.assert_allclose(compact.predict(images, verbose=0),
                               cropped(model.predict(images, verbose=0), 6), atol=1e-6)


@pytest.mark.slow
def test_embed_and_export_commands_with_dims(whitened_model, tmp_path, capsys):
    model, _ = whitened_model
    model.save(tmp_path / "model.keras")
    csv = str(nordland_csv("test"))
    common = [f"--model={tmp_path / 'model.keras'}", f"--dataset={csv}", "--image_size=32,64"]
    assert main(["netvlad-tf", "embed", *common, f"--output={tmp_path / 'full'}"]) == 0
    assert main(["netvlad-tf", "embed", *common, f"--output={tmp_path / 'compact'}", "--dims=8"]) == 0
    full = read_descriptors(tmp_path / "full").descriptors
    compact = read_descriptors(tmp_path / "compact")
    np.testing.assert_allclose(compact.descriptors, cropped(full, 8), atol=1e-6)
    assert compact.folder.descriptor_dim == 8
    # A resume asking for another dimension is refused, naming it.
    assert main(["netvlad-tf", "embed", *common, f"--output={tmp_path / 'compact'}", "--dims=4"]) == 1
    assert "descriptor_dim" in capsys.readouterr().err
    assert main(["netvlad-tf", "embed", *common, f"--output={tmp_path / 'compact'}", "--dims=8"]) == 0
    plain = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    plain.save(tmp_path / "plain.keras")
    assert main(["netvlad-tf", "evaluate", f"--model={tmp_path / 'plain.keras'}", f"--dataset={csv}",
                 "--dims=8", f"--output={tmp_path / 'eval'}"]) == 1
    assert "no PCA whitening" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_evaluate_command_with_dims_reports_precision_recall(whitened_model, tmp_path, capsys):
    model, _ = whitened_model
    model.save(tmp_path / "model.keras")
    small = read_csv_dataset(nordland_csv("test"))
    assert small.num_queries > 0
    assert main(["netvlad-tf", "evaluate", f"--model={tmp_path / 'model.keras'}", f"--dataset={nordland_csv('test')}",
                 "--image_size=32,64", "--dims=8", "--sequence_length=3", f"--output={tmp_path / 'eval'}"]) == 0
    printed = capsys.readouterr().out
    assert "R@100%P" in printed and "sequences of 3" in printed
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert "auc" in saved["precision_recall"] and "3" in saved["sequences"]
    assert (tmp_path / "eval" / "soft_assignment.png").read_bytes()[:4] == b"\x89PNG"  # NetVLAD's clusters shown


def test_a_pooling_without_soft_assignment_has_no_map(tmp_path):
    from netvlad_tf.evaluation.plots import plot_soft_assignment

    mac = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    with pytest.raises(ValueError, match="does not pool by NetVLAD"):
        plot_soft_assignment(mac, read_csv_dataset(nordland_csv("test")).query_paths[:1], tmp_path / "map.png")
