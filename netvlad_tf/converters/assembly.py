"""Builds a NetVLAD model from plain arrays: what every converter of released weights ends in."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from netvlad_tf.backbones.freezing import freeze_before
from netvlad_tf.backbones.preprocessing import PixelNormalization
from netvlad_tf.backbones.vgg16 import (
    LAST_LAYER,
    VGG16_BLOCK_SIZES,
    VGG16_CONV_LAYERS,
    vgg16_conv5_3_layers,
)
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.models.model import WHITENING_LAYER, PlaceRecognitionModel


@dataclass(frozen=True)
class NetVLADArrays:
    """Everything a released NetVLAD model holds, in this package's conventions.

    Attributes:
        conv_kernels: 13 VGG16 kernels, each `(kh, kw, in, out)` (Keras order).
        conv_biases: the 13 matching biases `(out,)`.
        centroids: `(K, D)` cluster centres c_k (not negated).
        assignment_kernel: `(D, K)` soft-assignment weights w_k.
        assignment_bias: `(K,)` soft-assignment biases b_k.
        normalize_input: whether local descriptors are L2-normalised before NetVLAD.
        output_layout: `"matlab"` (`d·K + k`) or `"cluster_major"` (`k·D + d`).
        pixel_normalization: the `PixelNormalization` config the weights were trained with.
        whitening_kernel: `(K·D, dim)` or None; whitening_bias `(dim,)`.
    """

    conv_kernels: list[np.ndarray]
    conv_biases: list[np.ndarray]
    centroids: np.ndarray
    assignment_kernel: np.ndarray
    assignment_bias: np.ndarray
    normalize_input: bool
    output_layout: str
    pixel_normalization: dict
    whitening_kernel: np.ndarray | None = None
    whitening_bias: np.ndarray | None = None


def vgg16_from_arrays(
    kernels: list[np.ndarray],
    biases: list[np.ndarray],
    pixel_normalization: dict,
    trainable_from: str | None = "block5_conv1",
) -> keras.Model:
    """VGG16 up to a linear conv5_3 with the given weights (widths follow the kernels).

    Args:
        kernels: 13 kernels `(3, 3, in, out)`, chained (each `in` is the previous `out`).
        biases: 13 biases `(out,)`.
        pixel_normalization: keyword arguments of `PixelNormalization` for the input.
        trainable_from: first trainable layer (layer names as in `vgg16_conv5_3`).

    Returns:
        A functional model `(B, H, W, 3) → (B, H/16, W/16, out_13)`.

    Raises:
        ValueError: not 13 kernels, or kernels that do not chain.
    """
    if len(kernels) != sum(VGG16_BLOCK_SIZES) or len(biases) != len(kernels):
        raise ValueError(
            f"A VGG16 conv5_3 backbone has {sum(VGG16_BLOCK_SIZES)} convolutions; the weights "
            f"hold {len(kernels)} kernels and {len(biases)} biases."
        )
    kernels = [np.asarray(kernel, np.float32) for kernel in kernels]
    biases = [np.asarray(bias, np.float32) for bias in biases]
    channels = 3
    for layer_name, kernel, bias in zip(VGG16_CONV_LAYERS, kernels, biases):
        if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, channels) or bias.shape != (kernel.shape[3],):
            raise ValueError(
                f"{layer_name}: kernel {kernel.shape} and bias {bias.shape} do not "
                f"follow a layer with {channels} channels; expected (3, 3, {channels}, out) and (out,)."
            )
        channels = kernel.shape[3]
    preprocessing = PixelNormalization(**pixel_normalization, name="pixel_normalization")
    model = vgg16_conv5_3_layers(preprocessing, conv_widths=[kernel.shape[3] for kernel in kernels])
    for layer_name, kernel, bias in zip(VGG16_CONV_LAYERS, kernels, biases):
        model.get_layer(layer_name).set_weights([kernel, bias])
    freeze_before(model, trainable_from, f"a VGG16 layer up to {LAST_LAYER}")
    return model


def netvlad_model_from_arrays(arrays: NetVLADArrays, name: str = "converted_netvlad") -> PlaceRecognitionModel:
    """Assembles backbone, NetVLAD and optional whitening from `arrays`.

    Raises:
        ValueError: centroids, assignment or whitening shapes disagree with each other or
            with the backbone's channels.
    """
    backbone = vgg16_from_arrays(arrays.conv_kernels, arrays.conv_biases, arrays.pixel_normalization)
    channels = backbone.output.shape[-1]
    num_clusters = arrays.centroids.shape[0]
    expected = {
        "centroids": (num_clusters, channels),
        "assignment_kernel": (channels, num_clusters),
        "assignment_bias": (num_clusters,),
    }
    for field, shape in expected.items():
        if getattr(arrays, field).shape != shape:
            raise ValueError(
                f"NetVLAD {field} has shape {getattr(arrays, field).shape}; with K = {num_clusters} "
                f"clusters on D = {channels} channels it must be {shape}."
            )
    pooling = NetVLAD(
        num_clusters=num_clusters, normalize_input=arrays.normalize_input,
        output_layout=arrays.output_layout, name="netvlad",
    )
    whitening_dim = None if arrays.whitening_kernel is None else arrays.whitening_kernel.shape[1]
    model = PlaceRecognitionModel(backbone, pooling, whitening_dim=whitening_dim, name=name)
    pooling.set_weights([
        np.asarray(arrays.centroids, np.float32),
        np.asarray(arrays.assignment_kernel, np.float32),
        np.asarray(arrays.assignment_bias, np.float32),
    ])
    if whitening_dim is not None:
        pooled_dim = num_clusters * channels
        if arrays.whitening_kernel.shape[0] != pooled_dim or arrays.whitening_bias.shape != (whitening_dim,):
            raise ValueError(
                f"The whitening maps {arrays.whitening_kernel.shape[0]} → {whitening_dim} with a bias "
                f"of shape {arrays.whitening_bias.shape}; NetVLAD here gives {pooled_dim} dimensions."
            )
        model.get_layer(WHITENING_LAYER).set_weights([
            np.asarray(arrays.whitening_kernel, np.float32), np.asarray(arrays.whitening_bias, np.float32),
        ])
    return model
