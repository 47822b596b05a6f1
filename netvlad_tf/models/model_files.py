"""Opening a saved model: the one way a `.keras` file becomes a model."""

from __future__ import annotations

import keras

from netvlad_tf.io.keras_archive import ModelFileError, load_keras_archive
from netvlad_tf.models.model import PlaceRecognitionModel


def open_model(path, dims: int | None = None, *, netvlad: bool = False) -> keras.Model:
    """The model saved in `path`, checked (`load_keras_archive`), cut to `dims` whitened
    dimensions when asked (`PlaceRecognitionModel.with_dims`).

    Args:
        path: a `.keras` file.
        dims: keep the first `dims` PCA-whitened dimensions (needs a netvlad_tf model).
        netvlad: refuse any Keras model that is not a netvlad_tf `PlaceRecognitionModel` (what
            needs its backbone or pooling: clustering, PCA, training, a baseline pooling).
            Otherwise any Keras model from images to descriptors is accepted.

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: a bad file (see `load_keras_archive`), or a Keras model that is not a
            netvlad_tf model where one is needed (`netvlad` or `dims`).

    Example:
    >>> open_model("/no/such/model.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model /no/such/model.keras does not exist.

    Reference: arXiv 1511.07247, Sec. 3–4 (the model: a CNN cut, NetVLAD, PCA whitening).
    """
    model = load_keras_archive(path)
    if (netvlad or dims is not None) and not isinstance(model, PlaceRecognitionModel):
        raise ModelFileError(
            f"Model {path} is a Keras {type(model).__name__} model, not a netvlad_tf model; build one "
            "with netvlad_tf.build_netvlad_model or convert weights with `netvlad-tf convert`."
        )
    return model if dims is None else model.with_dims(dims)
