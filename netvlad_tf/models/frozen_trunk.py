"""A model split at its first trainable layer: a frozen trunk and the trainable head after it."""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class FrozenSplit:
    """The model as `head(trunk(images))`, both sharing the model's layers and weights.

    Attributes:
        trunk: images → the input of the first trainable backbone layer. It holds no
            trainable weights, so while training its output for an image never changes and
            can be computed once (`netvlad_tf.training.FrozenFeatureStore`).
        head: those features → the model's descriptors; what a training step runs.
        cut_layer: name of the first trainable backbone layer (`""` when the whole backbone
            is frozen and the head starts at the pooling).
    """

    trunk: keras.Model
    head: keras.Model
    cut_layer: str


def split_frozen_trunk(model) -> FrozenSplit | None:
    """Splits a `PlaceRecognitionModel` where its backbone starts to train.

    Returns None when the first backbone layer is already trainable (nothing to split off).
    The trunk is meant to run with `training=False`: the backbones here have no layer that
    behaves differently in training before their first trainable one (BatchNorm is frozen).

    Example:
    >>> import numpy as np
    >>> from netvlad_tf import build_netvlad_model
    >>> model = build_netvlad_model(weights=None, num_clusters=4)
    >>> split = split_frozen_trunk(model)
    >>> split.cut_layer, split.trunk.output.shape
    ('block5_conv1', (None, None, None, 512))
    """
    backbone = model.backbone
    layers_with_weights = [layer for layer in backbone.layers if layer.weights]
    first_trainable = next((layer for layer in layers_with_weights if layer.trainable_weights), None)
    if first_trainable is not None and first_trainable is layers_with_weights[0]:
        return None
    cut_tensor = first_trainable.input if first_trainable is not None else backbone.output
    if isinstance(cut_tensor, (list, tuple)):
        raise ValueError(
            f"{first_trainable.name}, the first trainable layer, has several inputs; the model "
            "cannot be split into a frozen trunk and a head there."
        )
    trunk = keras.Model(backbone.input, cut_tensor, name=f"{model.name}_frozen_trunk")
    features = keras.Input(tuple(cut_tensor.shape[1:]), name="frozen_features")
    outputs = features
    if first_trainable is not None:
        try:
            backbone_head = keras.Model(cut_tensor, backbone.output, name=f"{backbone.name}_head")
        except ValueError as error:  # a skip connection crosses the cut
            raise ValueError(
                f"The backbone cannot be split at {first_trainable.name}: a connection crosses "
                f"it ({error}). Start training at a block boundary."
            ) from None
        outputs = backbone_head(outputs)
    after_backbone = model.layers[model.layers.index(backbone) + 1 :]
    for layer in after_backbone:  # pooling, then the optional whitening + L2: a chain
        outputs = layer(outputs)
    head = keras.Model(features, outputs, name=f"{model.name}_head")
    return FrozenSplit(trunk=trunk, head=head, cut_layer=first_trainable.name if first_trainable else "")
