"""k-means initialisation helpers."""

import numpy as np
import pytest

from netvlad_tf import vgg16_conv5_3
from netvlad_tf.initialization.clustering import kmeans_centroids, sample_local_descriptors


def test_kmeans_finds_separated_clusters(rng):
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.normal(size=(100, 2)) for c in centres])
    found = kmeans_centroids(points, 3, seed=1)
    distances = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    assert sorted(distances.argmin(axis=1).tolist()) == [0, 1, 2]
    assert distances.min(axis=1).max() < 0.1


def test_kmeans_needs_enough_points(rng):
    with pytest.raises(ValueError, match="at least num_clusters=5"):
        kmeans_centroids(rng.normal(size=(3, 2)), 5)


def test_sample_local_descriptors_counts_and_norms(rng):
    backbone = vgg16_conv5_3(weights=None)
    batches = [(rng.random((2, 64, 64, 3)) * 255).astype("float32") for _ in range(3)]
    # 4×4 = 16 positions per image; 5 per image from 6 images, capped at 27.
    descriptors = sample_local_descriptors(backbone, batches, num_descriptors=27, descriptors_per_image=5)
    assert descriptors.shape == (27, 512)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    all_positions = np.array(backbone(batches[0])).reshape(-1, 512)
    all_positions /= np.linalg.norm(all_positions, axis=1, keepdims=True)
    first_image = all_positions[:16]
    for descriptor in descriptors[:5]:  # the first five come from the first image
        assert np.abs(first_image - descriptor).sum(axis=1).min() < 1e-4


def test_sample_local_descriptors_without_images():
    with pytest.raises(ValueError, match="No images"):
        sample_local_descriptors(vgg16_conv5_3(weights=None), [], num_descriptors=5)
