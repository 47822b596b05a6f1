"""Pixel normalisation inside the model, so every backbone takes RGB images in 0–255."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

CHANNEL_ORDERS = ("rgb", "bgr")


@keras.saving.register_keras_serializable(package="netvlad_tf")
class PixelNormalization(keras.layers.Layer):
    """`(image[..., order] − mean) / std` for RGB images in 0–255.

    One layer covers the conventions of the weights this package reads: Keras' caffe-style
    VGG16 (BGR, ImageNet means, std 1), MatConvNet (RGB, the network's average image),
    torchvision (RGB, mean and std of 0–1 pixels times 255) and EfficientNet-Lite (127, 128).

    Args:
        mean: per-channel means in 0–255, in `channel_order`, or one number for all.
        std: per-channel standard deviations in 0–255, or one number.
        channel_order: `"rgb"`, or `"bgr"` to reverse the channels before normalising.

    Example:
    >>> import numpy as np
    >>> layer = PixelNormalization(mean=(1.0, 2.0, 3.0), std=2.0, channel_order="bgr")
    >>> np.asarray(layer(np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32"))).ravel().tolist()
    [14.5, 9.0, 3.5]
    """

    def __init__(
        self,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        channel_order: str = "rgb",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
        self.mean = _number_or_list(mean)
        self.std = _number_or_list(std)
        if np.any(np.asarray(self.std) <= 0):
            raise ValueError(f"std must be positive, got {std!r}.")
        for name, value in (("mean", self.mean), ("std", self.std)):
            if isinstance(value, list) and len(value) != 3:
                raise ValueError(f"{name} needs one number or one per RGB channel (3), got {len(value)}.")
        self.channel_order = channel_order

    def call(self, inputs):
        images = ops.cast(inputs, self.compute_dtype)
        if self.channel_order == "bgr":
            images = ops.flip(images, axis=-1)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std,
                "channel_order": self.channel_order}


def _number_or_list(values) -> float | list[float]:
    """One number, or per-channel numbers as a plain list (so the config is JSON)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.ravel().tolist()
