"""The freezing policy of every backbone: train from a named layer on, freeze what comes before."""

from __future__ import annotations

from collections.abc import Callable

import keras


def freeze_before(
    model: keras.Model,
    first_trainable: str | None,
    description: str,
    always_frozen: Callable[[keras.layers.Layer], bool] = lambda layer: False,
) -> None:
    """Makes the layers before `first_trainable` untrainable and the rest trainable.

    Args:
        model: a functional backbone (layers in topological order).
        first_trainable: name of the first trainable layer, or None to train every layer.
        description: what a valid name is, for the error (e.g. "a VGG16 layer up to
            block5_conv3").
        always_frozen: layers that stay frozen wherever they are (e.g. batch normalisation).

    Raises:
        ValueError: `first_trainable` is not a layer of `model`.

    Example:
    >>> inputs = keras.Input((None, None, 3))
    >>> first = keras.layers.Conv2D(2, 1, name="first")
    >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="second")(first(inputs)))
    >>> freeze_before(model, "second", "a layer of this toy model")
    >>> [layer.trainable for layer in model.layers[1:]]
    [False, True]
    """
    if first_trainable is not None and first_trainable not in [layer.name for layer in model.layers]:
        raise ValueError(
            f"trainable_from={first_trainable!r} is not {description}; "
            "use one of its layer names, or None to train every layer."
        )
    frozen = first_trainable is not None
    for layer in model.layers:
        if layer.name == first_trainable:
            frozen = False
        layer.trainable = not frozen and not always_frozen(layer)
