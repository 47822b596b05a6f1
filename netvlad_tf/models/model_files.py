"""Opening a saved netvlad_tf model: a `.keras` file checked by `load_keras_archive` that holds a
`PlaceRecognitionModel` (any Keras model: `load_keras_archive` itself)."""

from __future__ import annotations

from netvlad_tf.io.keras_archive import ModelFileError, load_keras_archive
from netvlad_tf.models.model import PlaceRecognitionModel


def load_place_model(path) -> PlaceRecognitionModel:
    """`load_keras_archive(path)`, also refusing a model that is not a netvlad_tf model.

    Args:
        path: a `.keras` file.

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: a bad file (see `load_keras_archive`), or a Keras model that is not a
            netvlad_tf model.

    Example:
    >>> load_place_model("/no/such/model.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model /no/such/model.keras does not exist.
    """
    model = load_keras_archive(path)
    if not isinstance(model, PlaceRecognitionModel):
        raise ModelFileError(
            f"Model {path} is a Keras {type(model).__name__} model, not a netvlad_tf model; build one "
            "with netvlad_tf.build_netvlad_model or convert weights with `netvlad-tf convert`."
        )
    return model

