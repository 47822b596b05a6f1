"""Opening a saved `.keras` file with one clear error for each way the file can be wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

# A `.keras` file is a zip archive holding these members (Keras 3's saving format).
KERAS_ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")
_ZIP_MAGIC = b"PK\x03\x04"
# The model's file name inside every folder the package saves (a preset, a descriptor folder, a
# place index, a loop detector).
MODEL_FILE = "model.keras"


class ModelFileError(ValueError):
    """A model file that is missing, not a Keras archive, damaged, or not a netvlad_tf model."""


def load_keras_archive(path) -> keras.Model:
    """`keras.saving.load_model(path, safe_mode=True)`, refusing a bad file with one line that
    names it and says what is wrong, instead of a traceback.

    Args:
        path: a `.keras` file.

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: a folder, not a Keras archive, a damaged (truncated, bit-flipped)
            archive, or one Keras cannot rebuild.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.keras"
    >>> _ = path.write_text("hello")
    >>> load_keras_archive(path)
    Traceback (most recent call last):
    ...
    netvlad_tf.io.keras_archive.ModelFileError: Model .../notes.keras is not a Keras archive (a .keras file is a zip of ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Model {path} does not exist.")
    if path.is_dir():
        raise ModelFileError(f"Model {path} is a folder, not a .keras file (a SavedModel export cannot "
                             "be loaded back as a Keras model; use the .keras file it was exported from).")
    with open(path, "rb") as file:
        magic = file.read(4)
    not_archive = (f"Model {path} is not a Keras archive (a .keras file is a zip of "
                   f"{' and '.join(KERAS_ARCHIVE_MEMBERS)}).")
    if magic != _ZIP_MAGIC:
        raise ModelFileError(not_archive)
    try:
        with zipfile.ZipFile(path) as archive:
            if any(member not in archive.namelist() for member in KERAS_ARCHIVE_MEMBERS):
                raise ModelFileError(not_archive)
            damaged_member = archive.testzip()  # checks every member's CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"Model {path} is damaged (truncated or corrupted: {error}); "
                             "save or copy it again.") from None
    if damaged_member is not None:
        raise ModelFileError(f"Model {path} is damaged ({damaged_member} fails its checksum); "
                             "save or copy it again.")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for files it cannot rebuild
        detail = " ".join(str(error).split())[:300]
        raise ModelFileError(f"Model {path} could not be loaded ({type(error).__name__}: {detail}).") from None
    return model
