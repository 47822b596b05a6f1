"""VGG16 cut at conv5_3 before its ReLU: the paper's backbone."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import keras

from netvlad_tf.backbones.freezing import freeze_before
from netvlad_tf.backbones.preprocessing import PixelNormalization
from netvlad_tf.backbones.registry import register_backbone

# keras.applications.vgg16.preprocess_input("caffe"): BGR order, ImageNet channel means.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
LAST_LAYER = "block5_conv3"
# What `weights="imagenet"` fetches (into ~/.keras/models/); put it there to work offline.
KERAS_VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"
# Convolutions per block (a 2×2 max-pool between blocks) and each convolution's width.
VGG16_BLOCK_SIZES = (2, 2, 3, 3, 3)
VGG16_CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_CONV_LAYERS = tuple(f"block{block}_conv{position}" for block, size in enumerate(VGG16_BLOCK_SIZES, start=1)
                          for position in range(1, size + 1))


def vgg16_conv5_3_layers(preprocessing: keras.layers.Layer, conv_widths: Sequence[int] = VGG16_CONV_WIDTHS,
                         name: str = "vgg16_conv5_3") -> keras.Model:
    """The one definition of VGG16's layers up to a linear conv5_3, with fresh weights.

    Layer names are Keras' (`block1_conv1` … `block5_conv3`, `block1_pool` …), so weights of
    `keras.applications.VGG16` or of a converted model are set by name.

    Args:
        preprocessing: the first layer, mapping RGB images in 0–255 to the network's input.
        conv_widths: the 13 convolutions' output channels (VGG16's by default; converters of
            narrow test networks pass others).
        name: the model's name.

    Returns:
        A functional model `(B, H, W, 3) → (B, H/16, W/16, conv_widths[-1])`.

    Example:
    >>> from netvlad_tf.backbones.preprocessing import PixelNormalization
    >>> model = vgg16_conv5_3_layers(PixelNormalization(mean=0.0), conv_widths=[2] * 13)
    >>> model.get_layer("block5_conv3").activation.__name__
    'linear'
    """
    if len(conv_widths) != sum(VGG16_BLOCK_SIZES):
        raise ValueError(f"VGG16 up to conv5_3 has {sum(VGG16_BLOCK_SIZES)} convolutions, got "
                         f"{len(conv_widths)} widths.")
    images = keras.Input((None, None, 3), name="images")
    features = preprocessing(images)
    widths = iter(conv_widths)
    for block, size in enumerate(VGG16_BLOCK_SIZES, start=1):
        if block > 1:
            features = keras.layers.MaxPooling2D(2, 2, name=f"block{block - 1}_pool")(features)
        for position in range(1, size + 1):
            layer_name = f"block{block}_conv{position}"
            # conv5_3 stays linear: the paper crops before its ReLU.
            activation = None if layer_name == LAST_LAYER else "relu"
            features = keras.layers.Conv2D(next(widths), 3, padding="same", activation=activation,
                                           name=layer_name)(features)
    return keras.Model(images, features, name=name)


@register_backbone("vgg16")
def vgg16_conv5_3(
    weights: str | None = "imagenet",
    trainable_from: str | None = "block5_conv1",
    name: str = "vgg16_conv5_3",
) -> keras.Model:
    """VGG16 up to conv5_3 with a linear last convolution, taking RGB images in 0–255.

    The ReLU after conv5_3 is dropped because the paper's local descriptors are the signed
    conv5_3 responses. The convolutions are copied into new layers, so no model built
    elsewhere is changed.

    Args:
        weights: `"imagenet"` (Keras downloads `KERAS_VGG16_NOTOP_FILE`, 58.9 MB, MD5
            `KERAS_VGG16_NOTOP_MD5`, into `~/.keras/models/` on first use; a copy placed there
            works offline), `None` (random initialisation), or the path of a local weights
            file of `keras.applications.VGG16(include_top=False)`. A file with Keras' name is
            checked against that MD5.
        trainable_from: name of the first trainable layer; the layers before it are frozen.
            The paper trains conv5_1 upwards (`"block5_conv1"`); `None` trains everything.
        name: name of the returned model.

    Returns:
        A functional model `(B, H, W, 3) → (B, H/16, W/16, 512)` (sizes rounded down).

    Example:
    >>> backbone = vgg16_conv5_3(weights=None)
    >>> import numpy as np
    >>> tuple(backbone(np.zeros((1, 64, 96, 3))).shape)
    (1, 4, 6, 512)

    Reference: arXiv 1511.07247, Sec. 5 ("we crop at the last convolutional layer conv5 before
    ReLU").
    """
    source = _vgg16_without_top(weights)
    preprocessing = PixelNormalization(mean=IMAGENET_BGR_MEAN, channel_order="bgr", name="vgg16_preprocessing")
    model = vgg16_conv5_3_layers(preprocessing, name=name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights(source.get_layer(layer.name).get_weights())
    freeze_before(model, trainable_from, f"a VGG16 layer up to {LAST_LAYER}")
    return model


def _vgg16_without_top(weights: str | None) -> keras.Model:
    if weights not in (None, "imagenet"):
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"VGG16 weights file {weights!r} does not exist. Pass weights='imagenet' to "
                "download Keras' ImageNet weights, None for random weights, or the path of an "
                "existing VGG16 (include_top=False) weights file."
            )
        if os.path.basename(weights) == KERAS_VGG16_NOTOP_FILE:
            _check_md5(weights, KERAS_VGG16_NOTOP_MD5)
    return keras.applications.VGG16(
        include_top=False, weights=weights, input_shape=(None, None, 3)
    )


def _check_md5(path: str, expected: str) -> None:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{path!r} has MD5 {digest.hexdigest()}, not Keras' {expected}: the download is "
            "incomplete or it is another file. Download it again."
        )
