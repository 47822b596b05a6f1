"""The NetVLAD layer (Arandjelović et al., CVPR 2016, Sec. 3)."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from netvlad_tf.layers.normalization import L2_EPSILON, l2_normalize, l2_normalize_rows

OUTPUT_LAYOUTS = ("matlab", "cluster_major")
INIT_VERSIONS = ("v1", "v2")
# The authors pick alpha so that the largest soft-assignment weight is this many times the
# second largest (geometric mean over the clustering descriptors).
ASSIGNMENT_RATIO = 100.0


@keras.saving.register_keras_serializable(package="netvlad_tf")
class NetVLAD(keras.layers.Layer):
    """Aggregates a map of local descriptors into one VLAD vector with soft assignment.

    For local descriptors `x_i` (L2-normalised first when `normalize_input`), cluster centres
    `c_k`, 1×1-convolution weights `w_k` and biases `b_k`:

        a_k(x_i) = softmax_k(w_k · x_i + b_k)
        V(k, d)  = Σ_i a_k(x_i) · (x_i(d) − c_k(d))

    then each cluster's residual `V(k, :)` is L2-normalised (intra-normalisation) and so is the
    whole vector: the authors' `vlad_preL2_intra`.

    Args:
        num_clusters: K, the number of clusters (the paper uses 64).
        normalize_input: L2-normalise each local descriptor before assignment and
            aggregation (the "preL2" of the authors' models).
        output_layout: order of the flattened output. `"matlab"` puts element (k, d) at
            index `d·K + k`: the order of the authors' released models and of their PCA
            whitening matrices. `"cluster_major"` puts it at `k·D + d`: what the PyTorch
            ports produce. Both hold the same numbers; only the order differs.
        epsilon: lower bound of squared norms in the normalisations.
        centroids_initializer: initialiser of `centroids` before `set_clusters`.
        assignment_initializer: initialiser of `assignment_kernel` before `set_clusters`.

    Input shape: `(batch, height, width, channels)`; height and width may be unknown.
    Output shape: `(batch, num_clusters * channels)`, L2-normalised.

    Weights: `centroids` `(K, D)`, `assignment_kernel` `(D, K)`, `assignment_bias` `(K,)`.

    Example:
    >>> import numpy as np
    >>> layer = NetVLAD(num_clusters=4)
    >>> features = np.random.default_rng(0).normal(size=(2, 5, 6, 8)).astype("float32")
    >>> tuple(layer(features).shape)
    (2, 32)

    Reference: arXiv 1511.07247, Sec. 3.1 (Eq. 1-4) and the `vlad_preL2_intra` layer of the
    authors' MATLAB code.
    """

    def __init__(
        self,
        num_clusters: int = 64,
        normalize_input: bool = True,
        output_layout: str = "matlab",
        epsilon: float = L2_EPSILON,
        centroids_initializer="random_normal",
        assignment_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_clusters) != num_clusters or num_clusters < 1:
            raise ValueError(f"NetVLAD needs num_clusters >= 1, got {num_clusters!r}.")
        if output_layout not in OUTPUT_LAYOUTS:
            raise ValueError(
                f"Unknown output_layout {output_layout!r}; use one of {OUTPUT_LAYOUTS}."
            )
        self.num_clusters = int(num_clusters)
        self.normalize_input = bool(normalize_input)
        self.output_layout = output_layout
        self.epsilon = epsilon
        self.centroids_initializer = keras.initializers.get(centroids_initializer)
        self.assignment_initializer = keras.initializers.get(assignment_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "NetVLAD expects a 4-D feature map (batch, height, width, channels), "
                f"got shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("NetVLAD needs a known channel dimension, got None.")
        self.centroids = self.add_weight(
            shape=(self.num_clusters, channels),
            initializer=self.centroids_initializer,
            name="centroids",
        )
        self.assignment_kernel = self.add_weight(
            shape=(channels, self.num_clusters),
            initializer=self.assignment_initializer,
            name="assignment_kernel",
        )
        self.assignment_bias = self.add_weight(
            shape=(self.num_clusters,), initializer="zeros", name="assignment_bias"
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def soft_assignment(self, feature_map):
        """Soft-assignment weights `a_k(x_i)` of a map, shape `(B, H, W, K)`, summing to 1."""
        return self._assign(self._local_descriptors(feature_map))

    def _local_descriptors(self, feature_map):
        if self.normalize_input:
            return l2_normalize(feature_map, axis=-1, epsilon=self.epsilon)
        return feature_map

    def _assign(self, local_descriptors):
        logits = ops.einsum("bhwd,dk->bhwk", local_descriptors, self.assignment_kernel)
        return ops.softmax(logits + self.assignment_bias, axis=-1)

    def call(self, inputs):
        local_descriptors = self._local_descriptors(inputs)
        assignment = self._assign(local_descriptors)
        # Σ_i a_k(x_i) x_i − c_k Σ_i a_k(x_i): two contractions instead of a loop over clusters.
        weighted_sum = ops.einsum("bhwk,bhwd->bkd", assignment, local_descriptors)
        assignment_mass = ops.sum(assignment, axis=(1, 2))
        residuals = weighted_sum - assignment_mass[:, :, None] * self.centroids[None]
        residuals = l2_normalize(residuals, axis=-1, epsilon=self.epsilon)
        if self.output_layout == "matlab":
            residuals = ops.transpose(residuals, (0, 2, 1))
        vlad = ops.reshape(residuals, (-1, self._output_dim()))
        return l2_normalize(vlad, axis=-1, epsilon=self.epsilon)

    def _output_dim(self) -> int:
        return self.num_clusters * int(self.centroids.shape[-1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_clusters * input_shape[-1])

    def set_clusters(
        self,
        centroids: np.ndarray,
        descriptors: np.ndarray | None = None,
        alpha: float | None = None,
        version: str = "v1",
    ) -> float:
        """Initialises the layer from k-means centroids, as the paper does before training.

        Args:
            centroids: `(K, D)` k-means centres of (L2-normalised, when `normalize_input`)
                local descriptors.
            descriptors: `(N, D)` local descriptors used to choose `alpha` by the authors'
                rule; normalised here like the layer's input when `normalize_input`.
            alpha: sharpness of the soft assignment. When None it is
                `ln(100) / mean_i(z_i(1) − z_i(2))`, with `z_i(1) ≥ z_i(2)` the two largest
                assignment logits of descriptor i per unit alpha, so that the largest
                assignment weight is 100× the second in geometric mean.
            version: `"v1"` (the authors' released models): `w_k = α·c_k/‖c_k‖`, `b_k = 0`.
                `"v2"` (the paper's derivation, Eq. 3): `w_k = 2α·c_k`, `b_k = −α‖c_k‖²`.

        Returns:
            The alpha used.

        Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> layer = NetVLAD(num_clusters=4)
        >>> alpha = layer.set_clusters(rng.normal(size=(4, 8)), rng.normal(size=(100, 8)))
        >>> alpha > 0
        True
        """
        if version not in INIT_VERSIONS:
            raise ValueError(f"Unknown version {version!r}; use one of {INIT_VERSIONS}.")
        centroids = np.asarray(centroids, dtype=np.float64)
        if centroids.ndim != 2 or centroids.shape[0] != self.num_clusters:
            raise ValueError(
                f"centroids must have shape ({self.num_clusters}, channels), "
                f"got {centroids.shape}."
            )
        if not np.all(np.isfinite(centroids)):
            raise ValueError("centroids contain NaN or infinite values.")
        channels = centroids.shape[1]
        if not self.built:
            self.build((None, None, None, channels))
        elif channels != self.centroids.shape[-1]:
            raise ValueError(
                f"centroids have {channels} channels but the layer was built for "
                f"{self.centroids.shape[-1]}."
            )
        if alpha is None:
            alpha = _alpha_for_assignment_ratio(
                centroids, self._prepare_descriptors(descriptors, channels), version
            )
        elif not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {alpha!r}.")
        kernel, bias = _assignment_weights(centroids, float(alpha), version)
        self.centroids.assign(centroids.astype(self.centroids.dtype))
        self.assignment_kernel.assign(kernel.astype(self.assignment_kernel.dtype))
        self.assignment_bias.assign(bias.astype(self.assignment_bias.dtype))
        return float(alpha)

    def _prepare_descriptors(self, descriptors, channels: int) -> np.ndarray:
        if descriptors is None:
            raise ValueError("set_clusters needs `descriptors` to choose alpha, or an `alpha`.")
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if descriptors.ndim != 2 or descriptors.shape[1] != channels:
            raise ValueError(
                f"descriptors must have shape (N, {channels}), got {descriptors.shape}."
            )
        if self.normalize_input:
            descriptors = l2_normalize_rows(descriptors, self.epsilon)
        return descriptors

    def get_config(self):
        return {
            **super().get_config(),
            "num_clusters": self.num_clusters,
            "normalize_input": self.normalize_input,
            "output_layout": self.output_layout,
            "epsilon": self.epsilon,
            "centroids_initializer": keras.initializers.serialize(self.centroids_initializer),
            "assignment_initializer": keras.initializers.serialize(
                self.assignment_initializer
            ),
        }


def _logits_per_unit_alpha(centroids, descriptors, version):
    if version == "v1":
        directions = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        return descriptors @ directions.T
    return 2.0 * descriptors @ centroids.T - (centroids**2).sum(1)[None]


def _alpha_for_assignment_ratio(centroids, descriptors, version) -> float:
    if centroids.shape[0] < 2:
        raise ValueError("alpha cannot be chosen by the ratio rule with one cluster; pass it.")
    logits = _logits_per_unit_alpha(centroids, descriptors, version)
    top_two = np.sort(logits, axis=1)[:, -2:]
    mean_gap = float(np.mean(top_two[:, 1] - top_two[:, 0]))
    if not mean_gap > 0:
        raise ValueError("descriptors do not separate the clusters; cannot choose alpha.")
    return math.log(ASSIGNMENT_RATIO) / mean_gap


def _assignment_weights(centroids, alpha, version):
    if version == "v1":
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("a zero centroid has no direction for the v1 initialisation.")
        return (alpha * centroids / norms).T, np.zeros(centroids.shape[0])
    return (2.0 * alpha * centroids).T, -alpha * (centroids**2).sum(1)
