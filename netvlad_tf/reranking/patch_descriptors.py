"""Patch-level NetVLAD descriptors from the same network: Patch-NetVLAD's local features.

For each cell x of the backbone's map, NetVLAD's soft assignment gives the residuals
`a_k(x)·(x − c_k)`; a patch of p×p cells sums them over its cells (the authors' box filter on an
integral feature map), each cluster's sum is L2-normalised (intra-normalisation), then the whole
vector, exactly as the global descriptor is made from the whole map. The model's PCA whitening
(cut to `dims`) and a final L2 follow, as for the global descriptor.

The residuals are K·D numbers per cell (157 MB for one VGG16 image at 640×480), so they are made
a few clusters at a time: intra-normalisation is per cluster, and the whitening is linear, so
each chunk is projected and only its squared norm kept for the global L2 before the projection.

Reference: Hausler et al., CVPR 2021, Sec. 3.2–3.3 (Eq. 2–3: patch descriptors from the VLAD
residual map, integral features); their `patchnetvlad/models/patchnetvlad.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.data.images import DEFAULT_MAX_SIDE, indexed_image_batches
from netvlad_tf.inference.embedding import Embedder
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.layers.normalization import L2_EPSILON
from netvlad_tf.models.model import WHITENING_LAYER
from netvlad_tf.reranking.geometry import AxisGeometry, FeatureGeometry, feature_geometry, patch_grid, patch_keypoints
from netvlad_tf.reranking.settings import PatchSettings, patch_settings

# Residual numbers held at once per chunk of clusters (H'·W'·clusters·D): 4 M floats, 16 MB (the chunk's
# integral and box sums take a few times that; VGG16 at 640×480 runs as fast as with 8 M).
CHUNK_FLOATS = 4 * 1024 * 1024


@dataclass
class PatchFeatures:
    """The patch descriptors of one image.

    Attributes:
        image_size: `(height, width)` of the image the network saw (after the image policy).
        descriptors: one `(patches, dims)` array per patch size, L2-normalised rows, patches in
            row-major grid order (`patch_keypoints`).
    """

    image_size: tuple[int, int]
    descriptors: list[np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes the descriptors take."""
        return sum(array.nbytes for array in self.descriptors)


class PatchDescriber:
    """Computes Patch-NetVLAD descriptors with a NetVLAD model's own weights, no training.

    Args:
        model: a `PlaceRecognitionModel` whose pooling is `NetVLAD` (VGG16, Lite0 or converted
            released weights), with or without PCA whitening.
        settings: a name of `PATCH_SETTINGS` (`"performance"`, `"speed"`, `"storage"`) or a
            `PatchSettings`.

    Example:
    >>> import numpy as np
    >>> from netvlad_tf import build_netvlad_model
    >>> model = build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=4)
    >>> describer = PatchDescriber(model, "speed")
    >>> features = describer.describe_arrays(np.zeros((1, 128, 160, 3), "float32"))[0]
    >>> features.descriptors[0].shape        # (8 − 5 + 1)·(10 − 5 + 1) patches of 4·112 dims
    (24, 448)

    Reference: Hausler et al., CVPR 2021, Sec. 3.2–3.3.
    """

    def __init__(self, model: keras.Model, settings: str | PatchSettings = "speed"):
        pooling = getattr(model, "pooling", None)
        if not isinstance(pooling, NetVLAD):
            raise ValueError(f"Patch descriptors need a model that pools with NetVLAD; {model.name} pools with "
                             f"{type(pooling).__name__ if pooling is not None else 'no known layer'}.")
        self.model = model
        self.settings = patch_settings(settings)
        self.netvlad = pooling
        self.backbone = Embedder(model.backbone)
        self.projection, self.projection_bias = self._whitening()
        self.dims = int(self.projection.shape[-1]) if self.projection is not None else int(pooling.compute_output_shape(
            (None, None, None, pooling.centroids.shape[-1]))[-1])
        self._geometries: dict[tuple[int, int], FeatureGeometry] = {}

    def _whitening(self):
        """The whitening as `(K, D, dims)` cluster by cluster (whatever the output layout), and its bias."""
        if getattr(self.model, "whitening_dim", None) is None:
            return None, None
        kernel, bias = self.model.get_layer(WHITENING_LAYER).get_weights()
        dims = kernel.shape[1] if self.settings.dims is None else min(self.settings.dims, kernel.shape[1])
        clusters, channels = self.netvlad.num_clusters, int(self.netvlad.centroids.shape[-1])
        if self.netvlad.output_layout == "matlab":  # element (k, d) at d·K + k
            by_cluster = kernel[:, :dims].reshape(channels, clusters, dims).transpose(1, 0, 2)
        else:
            by_cluster = kernel[:, :dims].reshape(clusters, channels, dims)
        return tf.constant(np.ascontiguousarray(by_cluster, np.float32)), tf.constant(bias[:dims], tf.float32)

    def geometry(self, image_size: tuple[int, int]) -> FeatureGeometry:
        """The backbone's feature geometry at `image_size` (cached per size)."""
        image_size = tuple(int(side) for side in image_size)
        if image_size not in self._geometries:
            self._geometries[image_size] = feature_geometry(self.model.backbone, image_size)
        return self._geometries[image_size]

    def keypoints(self, image_size: tuple[int, int], size_index: int) -> tuple[np.ndarray, np.ndarray]:
        """`patch_keypoints` of patch size number `size_index` for images of `image_size`."""
        return patch_keypoints(self.geometry(image_size), self.settings.patch_sizes[size_index],
                               self.settings.strides[size_index])

    def describe_feature_map(self, feature_map) -> list[np.ndarray]:
        """Patch descriptors of one backbone map `(H', W', D)`: one `(patches, dims)` float32
        array per patch size.

        Raises:
            ValueError: a patch size larger than the map.
        """
        feature_map = tf.convert_to_tensor(feature_map, tf.float32)
        rows, columns = int(feature_map.shape[0]), int(feature_map.shape[1])
        cells = FeatureGeometry(AxisGeometry(rows, 1.0, 0.0, 1.0), AxisGeometry(columns, 1.0, 0.0, 1.0))
        for size, stride in zip(self.settings.patch_sizes, self.settings.strides):
            patch_grid(cells, size, stride)
        layer = self.netvlad
        local = _l2(feature_map, layer.epsilon) if layer.normalize_input else feature_map
        assignment = tf.nn.softmax(tf.einsum("hwd,dk->hwk", local, layer.assignment_kernel) + layer.assignment_bias)
        centroids = tf.convert_to_tensor(layer.centroids, tf.float32)
        channels, clusters = int(local.shape[-1]), layer.num_clusters
        chunk = max(1, min(clusters, CHUNK_FLOATS // max(1, rows * columns * channels)))
        sizes = list(zip(self.settings.patch_sizes, self.settings.strides))
        projected = [0.0] * len(sizes)
        squared_norms = [0.0] * len(sizes)
        kept_chunks: list[list[tf.Tensor]] = [[] for _ in sizes]
        for first in range(0, clusters, chunk):
            last = min(first + chunk, clusters)
            weights = assignment[..., first:last]
            weighted_sums = _integral(weights[..., :, None] * local[..., None, :])  # (H'+1, W'+1, k, D)
            weight_sums = _integral(weights)  # (H'+1, W'+1, k)
            for number, (size, stride) in enumerate(sizes):
                residuals = (_box_sums(weighted_sums, size, stride)
                             - _box_sums(weight_sums, size, stride)[..., None] * centroids[first:last])
                residuals = tf.reshape(_l2(residuals, layer.epsilon), (-1, last - first, channels))  # intra-normalised
                squared_norms[number] += tf.reduce_sum(tf.square(residuals), axis=(1, 2))
                if self.projection is None:
                    kept_chunks[number].append(residuals)
                else:
                    projected[number] += tf.einsum("nkd,kdj->nj", residuals, self.projection[first:last])
        outputs = []
        for number in range(len(sizes)):
            inverse_norm = tf.math.rsqrt(tf.maximum(squared_norms[number], layer.epsilon))[:, None]
            if self.projection is None:
                vlad = tf.concat(kept_chunks[number], axis=1)  # (patches, K, D)
                if layer.output_layout == "matlab":
                    vlad = tf.transpose(vlad, (0, 2, 1))
                descriptors = tf.reshape(vlad, (tf.shape(vlad)[0], -1)) * inverse_norm
            else:
                descriptors = _l2(projected[number] * inverse_norm + self.projection_bias)
            outputs.append(descriptors.numpy())
        return outputs

    def describe_arrays(self, images) -> list[PatchFeatures]:
        """Patch features of a batch of RGB images `(B, H, W, 3)` in 0–255, as they are."""
        images = np.asarray(images, np.float32)
        maps = self.backbone(images)[0]
        return [PatchFeatures(tuple(images.shape[1:3]), self.describe_feature_map(feature_map)) for feature_map in maps]

    def describe_images(self, paths: Sequence[str], image_size: tuple[int, int] | None = None,
                        max_side: int | None = DEFAULT_MAX_SIDE, batch_size: int = 1,
                        ) -> Iterator[tuple[int, PatchFeatures]]:
        """`(position, features)` for each image file, read by the package's image policy.

        Args:
            paths: image files.
            image_size, max_side: the image policy (`netvlad_tf.data.load_image`).
            batch_size: images per backbone pass.

        Yields:
            The position of the image in `paths` and its `PatchFeatures`, batch by batch (images
            of one shape share a batch, so the positions need not come in order).
        """
        for indices, images in indexed_image_batches(list(paths), image_size, max_side, batch_size):
            for position, features in zip(indices, self.describe_arrays(images)):
                yield int(position), features


def _l2(values, epsilon: float = L2_EPSILON):
    return values * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(values), axis=-1, keepdims=True), epsilon))


def _integral(values):
    """Sums over every top-left rectangle, with a zero row and column in front: `I[i, j] = Σ_{r<i, c<j}`."""
    summed = tf.cumsum(tf.cumsum(values, axis=0), axis=1)
    padding = [[1, 0], [1, 0]] + [[0, 0]] * (len(values.shape) - 2)
    return tf.pad(summed, padding)


def _box_sums(integral, size: int, stride: int):
    """Sums over every size×size box starting each `stride` cells, from an integral map."""
    rows = (int(integral.shape[0]) - 1 - size) // stride + 1
    columns = (int(integral.shape[1]) - 1 - size) // stride + 1
    row_end, column_end = (rows - 1) * stride + 1, (columns - 1) * stride + 1
    top, bottom = slice(0, row_end, stride), slice(size, size + row_end, stride)
    left, right = slice(0, column_end, stride), slice(size, size + column_end, stride)
    return integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
