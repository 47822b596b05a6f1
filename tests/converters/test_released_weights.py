"""The released NetVLAD weights people hold, converted by `netvlad-tf convert` and checked against
an independent NumPy float64 transcription of each distributing project's own forward pass:
hloc's struct `.mat`, netvlad_tf_open's TF1 checkpoint, Patch-NetVLAD's `.pth.tar` with WPCA.
Files have VGG16's real shapes, K = 64 and random weights; the whitening is 16-D."""

import dataclasses
import warnings

import keras
import numpy as np
import pytest

from netvlad_tf.cli import main
from netvlad_tf.converters.assembly import netvlad_model_from_arrays
from netvlad_tf.converters.matconvnet import matconvnet_arrays, read_matconvnet_net
from netvlad_tf.converters.pytorch_netvlad import pytorch_netvlad_arrays
from netvlad_tf.converters.tf_checkpoint import netvlad_tf_open_arrays, read_tf_checkpoint
from netvlad_tf.io.torch_checkpoint import read_torch_checkpoint
from tests.support.reference_forward import hloc_forward, patch_netvlad_forward, tf_open_forward
from tests.support.released_formats import (
    patch_netvlad_state_dict,
    tf_open_variables,
    write_hloc_struct_mat,
    write_tf_checkpoint,
    write_torch_state_dict,
)

NUM_CLUSTERS, WHITENING_DIM = 64, 16
BAR = 1e-4  # relative L2 of the converted descriptor against the reference


def relative_l2(ours, reference):
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return rng.uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def hloc_file(tmp_path_factory):
    rng = np.random.default_rng(1)
    # A non-constant average image: its first pixel and its mean differ.
    average_image = (np.array([123.7, 116.3, 103.5]) + rng.normal(0, 20, (224, 224, 3))).astype(np.float32)
    path = tmp_path_factory.mktemp("hloc") / "Pitts30K_struct.mat"
    write_hloc_struct_mat(path, rng, NUM_CLUSTERS, WHITENING_DIM, average_image)
    return path


@pytest.fixture(scope="module")
def tf_open_prefix(tmp_path_factory):
    rng = np.random.default_rng(2)
    prefix = tmp_path_factory.mktemp("tf_open") / "vd16_pitts30k_conv5_3_vlad_preL2_intra_white"
    write_tf_checkpoint(prefix, tf_open_variables(rng, NUM_CLUSTERS, WHITENING_DIM, [123.7, 116.3, 103.5]))
    return prefix


@pytest.fixture(scope="module")
def patch_netvlad_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("patch") / "pittsburgh_WPCA16.pth.tar"
    write_torch_state_dict(path, patch_netvlad_state_dict(rng, NUM_CLUSTERS, WHITENING_DIM),
                           extra={"epoch": 5, "best_score": 0.9})
    return path


def references(source, location, images):
    if source == "matconvnet":
        return np.stack([hloc_forward(location, image) for image in images])
    if source == "tf_checkpoint":
        variables = read_tf_checkpoint(location)
        return np.stack([tf_open_forward(variables, image) for image in images])
    state_dict = read_torch_checkpoint(location)["state_dict"]
    return np.stack([patch_netvlad_forward(state_dict, image) for image in images])


@pytest.mark.parametrize("source, fixture", [("matconvnet", "hloc_file"), ("tf_checkpoint", "tf_open_prefix"),
                                             ("pytorch", "patch_netvlad_file")])
@pytest.mark.slow
def test_convert_gives_the_project_s_own_descriptor(source, fixture, images, request, tmp_path, capsys):
    location = request.getfixturevalue(fixture)
    output = tmp_path / "converted.keras"
    assert main(["netvlad-tf", "convert", f"--source={source}", f"--input={location}", f"--output={output}"]) == 0
    assert f"{WHITENING_DIM}-D descriptors" in capsys.readouterr().out
    model = keras.models.load_model(output)
    ours = model.predict(images, verbose=0)
    expected = references(source, location, images)
    assert relative_l2(ours, expected) <= BAR, relative_l2(ours, expected)


def _arrays(source, location):
    if source == "matconvnet":
        return matconvnet_arrays(read_matconvnet_net(location))
    if source == "tf_checkpoint":
        return netvlad_tf_open_arrays(read_tf_checkpoint(location))
    return pytorch_netvlad_arrays(read_torch_checkpoint(location)["state_dict"])


def _swapped_layout(arrays):
    other = "cluster_major" if arrays.output_layout == "matlab" else "matlab"
    return dataclasses.replace(arrays, output_layout=other)


def _bgr(arrays):
    return dataclasses.replace(arrays, pixel_normalization={**arrays.pixel_normalization, "channel_order": "bgr"})


MISTAKES = {
    "centroids_not_negated": lambda arrays, _: dataclasses.replace(arrays, centroids=-arrays.centroids),
    "other_layout": lambda arrays, _: _swapped_layout(arrays),
    "bgr_input": lambda arrays, _: _bgr(arrays),
    "mean_of_average_image": lambda arrays, location: dataclasses.replace(arrays, pixel_normalization={
        **arrays.pixel_normalization, "mean": _average_image(location).reshape(-1, 3).mean(0).tolist()}),
}


def _average_image(location):
    import scipy.io

    return scipy.io.loadmat(location, struct_as_record=False, squeeze_me=True)["net"].meta.normalization.averageImage


@pytest.mark.slow
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("source, fixture", [("matconvnet", "hloc_file"), ("tf_checkpoint", "tf_open_prefix"),
                                             ("pytorch", "patch_netvlad_file")])
def test_each_purpose_made_mistake_fails_the_comparison(source, fixture, mistake, images, request):
    """The comparison above is sharp enough to catch each classic conversion slip."""
    if mistake == "mean_of_average_image" and source != "matconvnet":
        pytest.skip("only the .mat formats carry an average image")
    location = request.getfixturevalue(fixture)
    expected = references(source, location, images)
    arrays = _arrays(source, location)
    correct = netvlad_model_from_arrays(arrays).predict(images, verbose=0)
    assert relative_l2(correct, expected) <= BAR
    wrong = netvlad_model_from_arrays(MISTAKES[mistake](arrays, location)).predict(images, verbose=0)
    assert relative_l2(wrong, expected) > 100 * BAR, (mistake, relative_l2(wrong, expected))


def test_every_tensor_is_used_or_named(patch_netvlad_file, tf_open_prefix, tmp_path):
    state_dict = dict(read_torch_checkpoint(patch_netvlad_file)["state_dict"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pytorch_netvlad_arrays(state_dict)  # all used: no warning
    with pytest.warns(UserWarning, match=r"does not use: \['pool.extra'\]"):
        pytorch_netvlad_arrays({**state_dict, "pool.extra": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"WPCA.0.weight.*cannot be placed"):
        pytorch_netvlad_arrays({**state_dict, "WPCA.0.weight": state_dict["WPCA.0.weight"][:, :100]})
    with pytest.raises(ValueError, match=r"\['WPCA.0.bias', 'WPCA.0.weight', 'WPCA.1.weight'\]"):
        pytorch_netvlad_arrays({**state_dict, "WPCA.1.weight": np.zeros((2, 2), np.float32)})
    variables = read_tf_checkpoint(tf_open_prefix)
    with pytest.warns(UserWarning, match=r"does not use: \['vgg16_netvlad_pca/extra/kernel'\]"):
        netvlad_tf_open_arrays({**variables, "vgg16_netvlad_pca/extra/kernel": np.zeros(2, np.float32)})
    variables.pop("vgg16_netvlad_pca/cluster_centers")
    with pytest.raises(ValueError, match="no 'vgg16_netvlad_pca/cluster_centers'"):
        netvlad_tf_open_arrays(variables)


def test_a_missing_tf_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["netvlad-tf", "convert", "--source=tf_checkpoint", f"--input={tmp_path / 'nope'}",
                 f"--output={tmp_path / 'x.keras'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
