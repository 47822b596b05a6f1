"""NetVLAD against a NumPy transcription of the paper's formula (arXiv 1511.07247, Eq. 1-4)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from netvlad_tf import NetVLAD
from tests.support.layer_harness import check_layer


def netvlad_reference(features, centroids, kernel, bias, normalize_input, layout):
    """Written from the paper, independently of the package: loops instead of contractions."""
    batch, _, _, dim = features.shape
    num_clusters = centroids.shape[0]
    outputs = []
    for b in range(batch):
        x = features[b].reshape(-1, dim).astype(np.float64)
        if normalize_input:
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        logits = x @ kernel + bias
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        vlad = np.zeros((num_clusters, dim))
        for k in range(num_clusters):
            for i in range(len(x)):
                vlad[k] += weights[i, k] * (x[i] - centroids[k])
        vlad /= np.linalg.norm(vlad, axis=1, keepdims=True)
        flat = np.empty(num_clusters * dim)
        for k in range(num_clusters):
            for d in range(dim):
                index = d * num_clusters + k if layout == "matlab" else k * dim + d
                flat[index] = vlad[k, d]
        outputs.append(flat / np.linalg.norm(flat))
    return np.stack(outputs)


def randomised_layer(rng, dim, **kwargs):
    layer = NetVLAD(**kwargs)
    layer.build((None, None, None, dim))
    layer.centroids.assign(rng.normal(size=layer.centroids.shape))
    layer.assignment_kernel.assign(rng.normal(size=layer.assignment_kernel.shape) * 3)
    layer.assignment_bias.assign(rng.normal(size=layer.assignment_bias.shape))
    return layer


@pytest.mark.parametrize("layout", ["matlab", "cluster_major"])
@pytest.mark.parametrize("normalize_input", [True, False])
def test_matches_numpy_formula(rng, layout, normalize_input):
    features = rng.normal(size=(3, 4, 5, 8)).astype("float32")
    layer = randomised_layer(
        rng, 8, num_clusters=4, output_layout=layout, normalize_input=normalize_input
    )
    expected = netvlad_reference(
        features,
        np.array(layer.centroids),
        np.array(layer.assignment_kernel),
        np.array(layer.assignment_bias),
        normalize_input,
        layout,
    )
    output = keras.ops.convert_to_numpy(layer(features))
    assert output.shape == (3, 32)
    np.testing.assert_allclose(output, expected, atol=1e-5)


def test_layouts_are_permutations_of_each_other(rng):
    features = rng.normal(size=(2, 3, 3, 6)).astype("float32")
    matlab = randomised_layer(np.random.default_rng(5), 6, num_clusters=3)
    cluster_major = randomised_layer(
        np.random.default_rng(5), 6, num_clusters=3, output_layout="cluster_major"
    )
    matlab_out = np.array(matlab(features)).reshape(2, 6, 3)  # [b, d, k]
    cluster_out = np.array(cluster_major(features)).reshape(2, 3, 6)  # [b, k, d]
    np.testing.assert_allclose(matlab_out, cluster_out.transpose(0, 2, 1), atol=1e-7)


def test_dynamic_spatial_size(rng):
    layer = NetVLAD(num_clusters=4)
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, layer(inputs))
    for height, width in [(2, 3), (7, 5)]:
        output = model.predict(rng.normal(size=(2, height, width, 8)), verbose=0)
        assert output.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)


def test_gradients_match_finite_differences(rng):
    layer = randomised_layer(rng, 5, num_clusters=3, dtype="float64")
    features = tf.constant(rng.normal(size=(2, 2, 3, 5)))
    projection = tf.constant(rng.normal(size=(2, 15)))

    def objective(x):
        return tf.reduce_sum(projection * layer(x))

    with tf.GradientTape() as tape:
        tape.watch(features)
        value = objective(features)
    input_gradient, centroid_gradient = tape.gradient(value, [features, layer.centroids])

    step = 1e-6
    flat = features.numpy().ravel()
    numeric = np.empty_like(flat)
    for i in range(flat.size):
        plus, minus = flat.copy(), flat.copy()
        plus[i] += step
        minus[i] -= step
        numeric[i] = (
            objective(tf.constant(plus.reshape(features.shape)))
            - objective(tf.constant(minus.reshape(features.shape)))
        ) / (2 * step)
    np.testing.assert_allclose(input_gradient.numpy().ravel(), numeric, rtol=1e-5, atol=1e-8)

    centroids = layer.centroids.numpy()
    numeric_centroids = np.empty(centroids.size)
    for i in range(centroids.size):
        shifted = centroids.ravel().copy()
        shifted[i] += step
        layer.centroids.assign(shifted.reshape(centroids.shape))
        plus = objective(features)
        shifted[i] -= 2 * step
        layer.centroids.assign(shifted.reshape(centroids.shape))
        minus = objective(features)
        numeric_centroids[i] = (plus - minus) / (2 * step)
    layer.centroids.assign(centroids)
    np.testing.assert_allclose(
        centroid_gradient.numpy().ravel(), numeric_centroids, rtol=1e-5, atol=1e-8
    )


def unit_rows(array):
    return array / np.linalg.norm(array, axis=1, keepdims=True)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_alpha_rule_gives_hundredfold_assignment_ratio(rng, version):
    centroids = unit_rows(rng.normal(size=(6, 16)))
    descriptors = unit_rows(centroids[rng.integers(0, 6, 400)] + 0.6 * rng.normal(size=(400, 16)))
    layer = NetVLAD(num_clusters=6)
    alpha = layer.set_clusters(centroids, descriptors=descriptors, version=version)

    logits = descriptors @ np.array(layer.assignment_kernel) + np.array(layer.assignment_bias)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    top_two = np.sort(weights, axis=1)[:, -2:]
    geometric_mean_ratio = np.exp(np.mean(np.log(top_two[:, 1] / top_two[:, 0])))
    assert geometric_mean_ratio == pytest.approx(100.0, rel=0.01)

    if version == "v1":
        expected_kernel = alpha * unit_rows(centroids).T
        expected_bias = np.zeros(6)
    else:
        expected_kernel = 2 * alpha * centroids.T
        expected_bias = -alpha * (centroids**2).sum(axis=1)
        # v2 is the paper's Eq. 2: softmax of −α‖x − c_k‖².
        distances = ((descriptors[:, None] - centroids[None]) ** 2).sum(-1)
        paper_weights = np.exp(-alpha * (distances - distances.min(axis=1, keepdims=True)))
        paper_weights /= paper_weights.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(weights, paper_weights, atol=1e-5)
    np.testing.assert_allclose(np.array(layer.assignment_kernel), expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(np.array(layer.assignment_bias), expected_bias, atol=1e-5)
    np.testing.assert_allclose(np.array(layer.centroids), centroids, atol=1e-6)


def test_explicit_alpha_is_used(rng):
    centroids = rng.normal(size=(3, 4))
    layer = NetVLAD(num_clusters=3)
    assert layer.set_clusters(centroids, alpha=2.5, version="v2") == 2.5
    np.testing.assert_allclose(np.array(layer.assignment_kernel), 5.0 * centroids.T, rtol=1e-6)


def test_layer_harness(rng, tmp_path):
    check_layer(
        NetVLAD,
        {"num_clusters": 4, "normalize_input": True, "output_layout": "cluster_major"},
        rng.normal(size=(2, 3, 3, 8)).astype("float32"),
        tmp_path,
    )


def test_bad_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="4-D feature map"):
        NetVLAD(num_clusters=4)(np.zeros((2, 5, 8), dtype="float32"))


def test_channel_mismatch_is_a_clear_error(rng):
    layer = NetVLAD(num_clusters=4)
    layer(np.zeros((1, 2, 2, 8), dtype="float32"))
    with pytest.raises(ValueError, match="axis -1"):
        layer(np.zeros((1, 2, 2, 6), dtype="float32"))
    with pytest.raises(ValueError, match="built for 8"):
        layer.set_clusters(rng.normal(size=(4, 6)), alpha=1.0)


@pytest.mark.parametrize("num_clusters", [0, -3, 2.5])
def test_bad_num_clusters(num_clusters):
    with pytest.raises(ValueError, match="num_clusters"):
        NetVLAD(num_clusters=num_clusters)


def test_bad_clusters(rng):
    layer = NetVLAD(num_clusters=2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer.set_clusters(np.array([[0.0, np.nan], [1.0, 0.0]]), alpha=1.0)
    with pytest.raises(ValueError, match=r"shape \(2, channels\)"):
        layer.set_clusters(rng.normal(size=(3, 4)), alpha=1.0)
    with pytest.raises(ValueError, match="needs `descriptors`"):
        layer.set_clusters(rng.normal(size=(2, 4)))
    with pytest.raises(ValueError, match="version"):
        layer.set_clusters(rng.normal(size=(2, 4)), alpha=1.0, version="v3")
    with pytest.raises(ValueError, match="output_layout"):
        NetVLAD(num_clusters=2, output_layout="row_major")
