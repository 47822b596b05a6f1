"""Global pooling baselines of the paper's comparison (MAC, average, GeM) and their registry."""

from __future__ import annotations

import keras
from keras import ops

from netvlad_tf.common.registries import registering
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.layers.normalization import L2_EPSILON, l2_normalize

# pooling name → layer class: the names `build_netvlad_model(pooling=)` and `with_pooling` take.
POOLINGS: dict[str, type] = {"netvlad": NetVLAD}


class _GlobalPooling(keras.layers.Layer):
    """Pools `(B, H, W, D)` to `(B, D)` and L2-normalises the result."""

    def __init__(self, epsilon: float = L2_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        return l2_normalize(self.pool(inputs), axis=-1, epsilon=self.epsilon)

    def pool(self, inputs):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@registering(POOLINGS, "mac", "pooling")
@keras.saving.register_keras_serializable(package="netvlad_tf")
class MACPooling(_GlobalPooling):
    """Maximum activation of convolutions: the spatial max of each channel, then L2.

    Example:
    >>> import numpy as np
    >>> np.asarray(MACPooling()(np.ones((1, 2, 2, 4)))).round(2).tolist()
    [[0.5, 0.5, 0.5, 0.5]]

    Reference: arXiv 1511.07247, Sec. 5 ("Max" baseline, `max` in Tab. 1).
    """

    def pool(self, inputs):
        return ops.max(inputs, axis=(1, 2))


@registering(POOLINGS, "avg", "pooling")
@keras.saving.register_keras_serializable(package="netvlad_tf")
class AveragePooling(_GlobalPooling):
    """Spatial mean of each channel, then L2 (the paper's "f_avg" baseline).

    Example:
    >>> import numpy as np
    >>> np.asarray(AveragePooling()(np.ones((1, 2, 2, 1)))).tolist()
    [[1.0]]
    """

    def pool(self, inputs):
        return ops.mean(inputs, axis=(1, 2))


@registering(POOLINGS, "gem", "pooling")
@keras.saving.register_keras_serializable(package="netvlad_tf")
class GeMPooling(_GlobalPooling):
    """Generalised mean pooling `(mean_i max(x_i, clamp)^p)^(1/p)`, then L2.

    conv5_3 is taken before its ReLU, so activations can be negative; they are clamped to
    `clamp` as GeM requires positive inputs.

    Args:
        p: the exponent (1 = average, → ∞ = max); trainable when `trainable_p`.
        trainable_p: learn `p` with the network.
        clamp: lower bound applied before the power.

    Example:
    >>> import numpy as np
    >>> np.asarray(GeMPooling(p=3.0)(np.ones((1, 2, 2, 1)))).round(4).tolist()
    [[1.0]]

    Reference: Radenović et al., "Fine-tuning CNN image retrieval with no human annotation",
    TPAMI 2018.
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, clamp: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"GeM needs p > 0, got {p!r}.")
        self.initial_p = float(p)
        self.trainable_p = bool(trainable_p)
        self.clamp = clamp

    def build(self, input_shape):
        self.p = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p,
            name="p",
        )

    def pool(self, inputs):
        powered = ops.power(ops.maximum(inputs, self.clamp), self.p)
        return ops.power(ops.mean(powered, axis=(1, 2)), 1.0 / self.p)

    def get_config(self):
        return {
            **super().get_config(),
            "p": self.initial_p,
            "trainable_p": self.trainable_p,
            "clamp": self.clamp,
        }


def get_pooling(pooling: str, **kwargs) -> keras.layers.Layer:
    """Builds a pooling layer by name: `netvlad`, `mac`, `avg` or `gem`.

    Example:
    >>> get_pooling("netvlad", num_clusters=8).num_clusters
    8
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}.")
    return POOLINGS[pooling](**kwargs)
