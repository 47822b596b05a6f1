"""Patch descriptors and keypoints against NumPy transcriptions of the authors' code."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from netvlad_tf import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.models.model import WHITENING_LAYER
from netvlad_tf.reranking import patch_descriptors
from netvlad_tf.reranking.geometry import feature_geometry, patch_keypoints
from netvlad_tf.reranking.patch_descriptors import PatchDescriber
from netvlad_tf.reranking.settings import PatchSettings
from tests.support.patch_netvlad_reference import authors_keypoints, authors_patch_vlads, authors_pca

SIZES = PatchSettings((2, 3), (1, 2), (0.5, 0.5), None, "rapid")


def whitened_model(backbone, rng, layout="matlab", clusters=4, dims=24):
    """A NetVLAD model with a random (but fixed) soft assignment and whitening."""
    # Lite0 with its ImageNet weights (bundled): at random initialisation its features are ~1e-7,
    # where the two codes' different epsilon rules of L2 normalisation, not the method, decide.
    weights = "imagenet" if backbone == "efficientnet_lite0" else None
    model = build_netvlad_model(backbone, weights=weights, num_clusters=clusters, output_layout=layout)
    channels = int(model.pooling.centroids.shape[-1])
    directions = rng.normal(size=(clusters, channels))
    model.pooling.set_clusters(directions / np.linalg.norm(directions, axis=1, keepdims=True), alpha=30.0)
    whitened = PlaceRecognitionModel(model.backbone, model.pooling, whitening_dim=dims)
    whitened.get_layer(WHITENING_LAYER).set_weights(
        [rng.normal(size=(clusters * channels, dims)).astype("float32"), rng.normal(size=dims).astype("float32")])
    return whitened


def reference_patches(model, image, settings, layout):
    """The authors' patch descriptors of `image`, whitened with the model's layer."""
    feature_map = np.asarray(model.backbone(image[None]))[0]
    layer = model.pooling
    kernel, bias = model.get_layer(WHITENING_LAYER).get_weights()
    clusters, channels = layer.num_clusters, feature_map.shape[-1]
    references = []
    for size, stride in zip(settings.patch_sizes, settings.strides):
        vlads = authors_patch_vlads(feature_map, np.asarray(layer.centroids), np.asarray(layer.assignment_kernel),
                                    np.asarray(layer.assignment_bias), size, stride)
        if layout == "matlab":  # the authors' k·D + d order into this model's d·K + k
            vlads = vlads.reshape(-1, clusters, channels).transpose(0, 2, 1).reshape(len(vlads), -1)
        references.append(authors_pca(vlads, kernel, bias))
    return references


@pytest.mark.parametrize("backbone,layout", [("vgg16", "matlab"), ("efficientnet_lite0", "cluster_major")])
def test_patch_descriptors_equal_the_authors_transcription(backbone, layout, rng):
    model = whitened_model(backbone, rng, layout)
    image = rng.uniform(0, 255, (112, 144, 3)).astype("float32")  # a 7×9 map
    ours = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors
    for mine, theirs in zip(ours, reference_patches(model, image, SIZES, layout)):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_a_box_one_cell_off_is_caught(rng, monkeypatch):
    """The purpose-made mistake: boxes one cell too small no longer equal the transcription."""
    model = whitened_model("efficientnet_lite0", rng)
    image = rng.uniform(0, 255, (112, 144, 3)).astype("float32")
    right = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors
    box_sums = patch_descriptors._box_sums
    monkeypatch.setattr(patch_descriptors, "_box_sums",
                        lambda integral, size, stride: box_sums(integral, size - 1, stride)[:-1, :-1]
                        if size > 1 else box_sums(integral, size, stride))
    wrong = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors
    references = reference_patches(model, image, SIZES, "matlab")
    np.testing.assert_allclose(right[0], references[0], atol=1e-5)
    assert np.abs(wrong[0] - references[0]).max() > 1e-2


def test_chunks_of_clusters_give_the_same_descriptors(rng, monkeypatch):
    model = whitened_model("efficientnet_lite0", rng, clusters=5)
    image = rng.uniform(0, 255, (96, 96, 3)).astype("float32")
    whole = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors
    monkeypatch.setattr(patch_descriptors, "CHUNK_FLOATS", 1)  # one cluster at a time
    chunked = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_without_whitening_the_patches_are_the_raw_vlads(rng):
    model = build_netvlad_model("efficientnet_lite0", weights="imagenet", num_clusters=3, output_layout="cluster_major")
    directions = rng.normal(size=(3, 112))
    model.pooling.set_clusters(directions / np.linalg.norm(directions, axis=1, keepdims=True), alpha=30.0)
    image = rng.uniform(0, 255, (80, 96, 3)).astype("float32")
    ours = PatchDescriber(model, SIZES).describe_arrays(image[None])[0].descriptors[0]
    layer = model.pooling
    feature_map = np.asarray(model.backbone(image[None]))[0]
    theirs = authors_patch_vlads(feature_map, np.asarray(layer.centroids), np.asarray(layer.assignment_kernel),
                                 np.asarray(layer.assignment_bias), 2, 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_patch_covering_the_whole_map_is_the_global_descriptor(rng):
    """Independent of the transcription: NetVLAD of the whole map is one patch of the map's size."""
    model = whitened_model("efficientnet_lite0", rng)
    image = rng.uniform(0, 255, (80, 80, 3)).astype("float32")  # a 5×5 map
    settings = PatchSettings((5,), (1,), (1.0,), None, "rapid")
    patch = PatchDescriber(model, settings).describe_arrays(image[None])[0].descriptors[0]
    np.testing.assert_allclose(patch[0], np.asarray(model(image[None]))[0], atol=1e-5)


def test_dims_keep_the_first_whitened_dimensions(rng):
    model = whitened_model("efficientnet_lite0", rng, dims=24)
    image = rng.uniform(0, 255, (80, 80, 3)).astype("float32")
    settings = PatchSettings((5,), (1,), (1.0,), 8, "rapid")
    patch = PatchDescriber(model, settings).describe_arrays(image[None])[0].descriptors[0]
    np.testing.assert_allclose(patch[0], np.asarray(model.with_dims(8)(image[None]))[0], atol=1e-5)


def test_a_patch_larger_than_the_map_is_one_clear_error(rng):
    model = whitened_model("efficientnet_lite0", rng)
    describer = PatchDescriber(model, PatchSettings((8,), (1,), (1.0,), None, "rapid"))
    with pytest.raises(ValueError, match=r"patch of 8×8 cells is larger than the 4×6 feature map"):
        describer.describe_arrays(np.zeros((1, 64, 96, 3), "float32"))


def test_a_model_without_netvlad_is_refused():
    with pytest.raises(ValueError, match="pools with MACPooling"):
        PatchDescriber(build_netvlad_model("efficientnet_lite0", weights=None, pooling="mac"))


def test_vgg16_keypoints_are_the_authors():
    geometry = feature_geometry(build_netvlad_model(weights=None, num_clusters=2).backbone, (480, 640))
    for size in (2, 5, 8):
        keypoints, grid = patch_keypoints(geometry, size, 1)
        their_keypoints, their_indices = authors_keypoints(30, 40, size, 1)
        np.testing.assert_allclose(keypoints, their_keypoints.T)
        np.testing.assert_array_equal(grid, their_indices.T)


def test_lite0_keypoints_sit_at_the_centre_of_what_each_cell_sees():
    """Independent of the layer arithmetic: the pixels whose gradient reaches a cell."""
    backbone = build_netvlad_model("efficientnet_lite0", weights="imagenet", num_clusters=2).backbone
    for image_size in ((480, 480), (464, 496)):  # sides that divide 16 and sides that do not
        geometry = feature_geometry(backbone, image_size)
        image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, *image_size, 3)), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(image)
            cell = backbone(image)[0, 14, 13]
            total = tf.reduce_sum(cell * tf.random.normal(cell.shape, seed=1))
        reached = np.abs(tape.gradient(total, image).numpy()[0]).sum(axis=-1) > 0
        rows, columns = np.nonzero(reached)
        assert geometry.height.centres(14) == (rows.min() + rows.max()) / 2
        assert geometry.width.centres(13) == (columns.min() + columns.max()) / 2
        assert geometry.height.receptive_field == rows.max() - rows.min() + 1


def test_a_backbone_with_an_unknown_resampling_layer_is_refused():
    images = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, strides=2, padding="same")(images)
    features = keras.layers.UpSampling2D()(features)
    backbone = keras.Model(images, features)
    with pytest.raises(ValueError, match="UpSampling2D"):
        feature_geometry(backbone, (64, 64))



@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_map():
    """An 80×120 map with K = 64, D = 112 holds 275 MB of residuals: made a chunk of clusters at a
    time the head's peak grows by well under that; the purpose-made mistake (one chunk of every
    cluster) grows by more than all of it."""
    root = Path(__file__).resolve().parents[2]
    script = Path(__file__).with_name("run_patch_memory.py")

    def growth(chunk_floats):
        done = subprocess.run([sys.executable, str(script), str(chunk_floats)], capture_output=True, text=True,
                              timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        assert done.returncode == 0, done.stderr[-2000:]
        return float(done.stdout.split()[-1])

    residuals_mb = 80 * 120 * 64 * 112 * 4 / 2**20
    assert growth(patch_descriptors.CHUNK_FLOATS) < 0.75 * residuals_mb
    assert growth(10**9) > residuals_mb
