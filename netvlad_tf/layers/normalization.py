"""L2 normalisation: one rule for the pooling layers, the model head and NumPy arrays.

Reference: arXiv 1511.07247, Sec. 3.1 (NetVLAD's intra-normalisation, after Arandjelović &
Zisserman, CVPR 2013, then L2 of the whole vector) and Sec. 5 (L2 after PCA whitening).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# The authors' MatConvNet code adds this to the squared norm before the square root, so an
# all-zero vector maps to zero instead of NaN.
L2_EPSILON = 1e-12


def l2_normalize(x, axis: int = -1, epsilon: float = L2_EPSILON):
    """Divides `x` by its L2 norm along `axis`: `x / sqrt(max(sum(x**2), epsilon))`.

    Args:
        x: a tensor or array.
        axis: the axis normalised (for NetVLAD's intra-normalisation, the descriptor axis of
            each cluster's residual sum).
        epsilon: floor of the squared norm, so an all-zero vector stays zero.

    Returns:
        `x`'s shape and dtype, unit norm along `axis` (or zero).

    Example:
    >>> import numpy as np
    >>> np.asarray(l2_normalize(np.array([[3.0, 4.0]]))).round(2).tolist()
    [[0.6, 0.8]]
    """
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, epsilon))


def l2_normalize_rows(array: np.ndarray, epsilon: float = L2_EPSILON) -> np.ndarray:
    """The NumPy twin of `l2_normalize` over the last axis (same epsilon rule), keeping the dtype.

    Example:
    >>> l2_normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    array = np.asarray(array)
    squared_norm = np.sum(np.square(array, dtype=np.float64), axis=-1, keepdims=True)
    return (array / np.sqrt(np.maximum(squared_norm, epsilon))).astype(array.dtype, copy=False)


@keras.saving.register_keras_serializable(package="netvlad_tf")
class L2Normalization(keras.layers.Layer):
    """L2-normalises the last axis, e.g. after the whitening projection.

    Args:
        epsilon: lower bound of the squared norm.

    Example:
    >>> import numpy as np
    >>> layer = L2Normalization()
    >>> np.asarray(layer(np.array([[0.0, 2.0]]))).tolist()
    [[0.0, 1.0]]
    """

    def __init__(self, epsilon: float = L2_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        return l2_normalize(inputs, axis=-1, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
