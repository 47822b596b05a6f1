"""Named backbone builders, so that other networks plug in beside VGG16."""

from __future__ import annotations

from collections.abc import Callable

import keras

from netvlad_tf.common.registries import registering

BackboneBuilder = Callable[..., keras.Model]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator that makes a builder available to `get_backbone(name)`.

    Example:
    >>> @register_backbone("tiny_example")
    ... def tiny(weights=None):
    ...     inputs = keras.Input((None, None, 3))
    ...     return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    >>> get_backbone("tiny_example").output.shape[-1]
    4
    """
    return registering(BACKBONES, name, "backbone named")


def get_backbone(backbone: str, **kwargs) -> keras.Model:
    """Builds the backbone registered as `backbone`; keyword arguments go to its builder.

    A backbone is a functional `keras.Model` from RGB images in 0–255, `(B, H, W, 3)` with any
    H and W, to a map of local descriptors `(B, H', W', D)`.

    Example:
    >>> backbone = get_backbone("vgg16", weights=None)
    >>> backbone.output.shape[-1]
    512
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
    return BACKBONES[backbone](**kwargs)
