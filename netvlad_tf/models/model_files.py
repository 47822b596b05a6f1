"""Opening a saved netvlad_tf model: a `.keras` file checked by `load_keras_file`, and a
`PlaceRecognitionModel` unless asked otherwise."""

from __future__ import annotations

import keras

from netvlad_tf.io.keras_archive import ModelFileError, load_keras_file
from netvlad_tf.models.model import PlaceRecognitionModel


def load_model_file(path, place_model: bool = True) -> keras.Model:
    """`load_keras_file(path)`, also refusing a model that is not a netvlad_tf model.

    Args:
        path: a `.keras` file.
        place_model: require a `PlaceRecognitionModel` (a model made by netvlad_tf).

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: a bad file (see `load_keras_file`), or a Keras model that is not a
            netvlad_tf model.

    Example:
    >>> load_model_file("/no/such/model.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model /no/such/model.keras does not exist.
    """
    model = load_keras_file(path)
    if place_model and not isinstance(model, PlaceRecognitionModel):
        raise ModelFileError(
            f"Model {path} is a Keras {type(model).__name__} model, not a netvlad_tf model; build one "
            "with netvlad_tf.build_netvlad_model or convert weights with `netvlad-tf convert`."
        )
    return model

