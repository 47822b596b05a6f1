"""Initialising NetVLAD from k-means of sampled local descriptors (paper, Sec. 5)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import faiss
import keras
import numpy as np

from netvlad_tf.data.images import DEFAULT_MAX_SIDE, image_batches
from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.inference.embedding import predict_batches
from netvlad_tf.io.progress import Progress
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.layers.normalization import l2_normalize_rows

# The paper clusters 50 000 descriptors, 100 from each image.
DEFAULT_NUM_DESCRIPTORS = 50_000
DEFAULT_DESCRIPTORS_PER_IMAGE = 100


def sample_local_descriptors(
    backbone: keras.Model,
    image_batches: Iterable,
    num_descriptors: int = DEFAULT_NUM_DESCRIPTORS,
    descriptors_per_image: int = DEFAULT_DESCRIPTORS_PER_IMAGE,
    normalize: bool = True,
    seed: int = 0,
    verbose: bool = True,
) -> np.ndarray:
    """Samples local descriptors from images run through `backbone`.

    Args:
        backbone: model from images to `(B, H, W, D)` local descriptor maps.
        image_batches: iterable of `(B, H, W, 3)` image batches (arrays or a `tf.data`
            dataset); it is read until `num_descriptors` are collected or it ends.
        num_descriptors: how many descriptors to return at most.
        descriptors_per_image: positions sampled (without replacement) from each image.
        normalize: L2-normalise each descriptor, as NetVLAD does with `normalize_input`.
        seed: seed of the position sampling.
        verbose: show a progress bar.

    Returns:
        `(N, D)` float32 descriptors, `N ≤ num_descriptors`.

    Example:
    >>> from netvlad_tf import vgg16_conv5_3
    >>> images = [np.random.rand(2, 64, 64, 3) * 255]
    >>> sample_local_descriptors(vgg16_conv5_3(weights=None), images, 20, 10, verbose=False).shape
    (20, 512)
    """
    rng = np.random.default_rng(seed)
    progress = Progress(num_descriptors, "descriptor", verbose, "sampling")
    sampled, count = [], 0
    # The package's batched-inference loop (compiled forward pass); the progress counts
    # descriptors, since how many images it takes is known only at the end.
    for _, (feature_maps,) in predict_batches(backbone, _numbered(image_batches), num_items=0, verbose=False):
        for feature_map in feature_maps:
            local = feature_map.reshape(-1, feature_map.shape[-1])
            take = min(descriptors_per_image, len(local), num_descriptors - count)
            sampled.append(local[rng.choice(len(local), size=take, replace=False)])
            count += take
            if count >= num_descriptors:
                break
        progress.update(count)
        if count >= num_descriptors:
            break
    if count == 0:
        raise ValueError("No images were given to sample local descriptors from.")
    descriptors = np.concatenate(sampled).astype(np.float32)
    if normalize:
        descriptors = l2_normalize_rows(descriptors)
    return descriptors


def _numbered(image_batches: Iterable) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(indices, batch)` pairs of consecutive image batches, as `predict_batches` reads them."""
    start = 0
    for batch in image_batches:
        size = int(batch.shape[0])
        yield np.arange(start, start + size), batch
        start += size


def kmeans_centroids(
    descriptors: np.ndarray, num_clusters: int, iterations: int = 50, seed: int = 0
) -> np.ndarray:
    """Runs seeded faiss k-means on `(N, D)` descriptors and returns `(K, D)` centroids.

    Args:
        descriptors: `(N, D)` local descriptors, N ≥ K.
        num_clusters: K.
        iterations: k-means iterations.
        seed: faiss' seed.

    Example:
    >>> jitter = np.random.default_rng(0).normal(scale=0.01, size=(100, 2))
    >>> points = (np.repeat([[0.0, 0.0], [1.0, 1.0]], 50, axis=0) + jitter).astype("float32")
    >>> sorted(np.abs(kmeans_centroids(points, 2)).round(1).tolist())
    [[0.0, 0.0], [1.0, 1.0]]
    """
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got shape {descriptors.shape}.")
    if len(descriptors) < num_clusters:
        raise ValueError(
            f"k-means needs at least num_clusters={num_clusters} descriptors, "
            f"got {len(descriptors)}."
        )
    kmeans = faiss.Kmeans(
        descriptors.shape[1], num_clusters, niter=iterations, seed=seed, verbose=False
    )
    kmeans.train(descriptors)
    return kmeans.centroids.copy()


def initialize_clusters(
    model,
    images,
    *,
    num_images: int | None = None,
    image_size: tuple[int, int] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    num_descriptors: int = DEFAULT_NUM_DESCRIPTORS,
    descriptors_per_image: int = DEFAULT_DESCRIPTORS_PER_IMAGE,
    version: str = "v1",
    seed: int = 0,
    verbose: bool = True,
) -> float:
    """Initialises a model's NetVLAD from k-means of local descriptors sampled from `images`.

    Args:
        model: a `PlaceRecognitionModel` whose pooling is `NetVLAD`.
        images: image files (paths; `num_images` of them spread evenly are read by the image
            policy) or an iterable of `(B, H, W, 3)` image batches (arrays, a `tf.data` dataset,
            `netvlad_tf.data.images.image_batches`).
        num_images: with paths, how many to sample from (None: all of them).
        image_size: with paths, `(H, W)` every image is resized to; None keeps native sizes.
        max_side: with paths and no `image_size`, the longest side allowed.
        num_descriptors: descriptors clustered by k-means (the paper: 50 000).
        descriptors_per_image: sampled per image (the paper: 100).
        version: `"v1"` (the released models) or `"v2"` (the paper's Eq. 3; see
            `NetVLAD.set_clusters`).
        seed: sampling and k-means seed.
        verbose: show progress.

    Returns:
        The assignment sharpness alpha used.

    Reference: arXiv 1511.07247, Sec. 3 and 5 (initialisation from k-means).

    Example:
    >>> from netvlad_tf import build_netvlad_model
    >>> model = build_netvlad_model(weights=None, num_clusters=4)
    >>> images = [np.random.rand(2, 64, 64, 3) * 255]
    >>> alpha = initialize_clusters(model, images, num_descriptors=32, descriptors_per_image=16, verbose=False)
    """
    if not isinstance(getattr(model, "pooling", None), NetVLAD):
        raise ValueError(f"{getattr(model, 'name', model)}: its pooling is {type(getattr(model, 'pooling', None)).__name__}, "
                         "not NetVLAD; only NetVLAD has clusters to initialise.")
    if _are_paths(images):
        images = image_batches(evenly_spaced(list(images), num_images or len(images)), image_size, max_side,
                               batch_size=16)
    return _cluster(model.pooling, model.backbone, images, num_descriptors, descriptors_per_image, version, seed,
                    verbose)


def _cluster(netvlad: NetVLAD, backbone: keras.Model, image_batches: Iterable, num_descriptors: int,
             descriptors_per_image: int, version: str, seed: int, verbose: bool) -> float:
    """Samples local descriptors, clusters them, sets the layer's clusters; returns alpha."""
    descriptors = sample_local_descriptors(backbone, image_batches, num_descriptors=num_descriptors,
                                           descriptors_per_image=descriptors_per_image,
                                           normalize=netvlad.normalize_input, seed=seed, verbose=verbose)
    centroids = kmeans_centroids(descriptors, netvlad.num_clusters, seed=seed)
    return netvlad.set_clusters(centroids, descriptors=descriptors, version=version)


def _are_paths(images) -> bool:
    """Whether `images` is a sequence of image file paths (else: image batches)."""
    return isinstance(images, Sequence) and len(images) > 0 and isinstance(images[0], (str, os.PathLike))
