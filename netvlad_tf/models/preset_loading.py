"""Turning a preset into a model, keras-hub's way (its `preset_utils`): a built-in name is built
or converted from its released file (downloaded and converted once, into the cache), a folder or
hub handle is read. The model class only asks (`PlaceRecognitionModel.from_preset`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import keras

from netvlad_tf.io.atomic_writes import save_model_atomically
from netvlad_tf.io.downloads import cache_folder, download, extract_zip, file_url
from netvlad_tf.io.keras_archive import MODEL_FILE, load_keras_archive
from netvlad_tf.models.preset_folders import read_preset_metadata, resolve_preset_folder
from netvlad_tf.models.presets import CONVERTERS, PRESETS, Preset


def load_preset(preset: str, released_file: str | os.PathLike | None, backbone_weights: str | os.PathLike | None,
                overrides: dict, build: Callable[..., keras.Model]) -> keras.Model:
    """The model `preset` names.

    Args:
        preset: a name of `PRESETS`, a preset folder, `hf://…` or `kaggle://…`.
        released_file: for a converted built-in preset, a local copy of its released file.
        backbone_weights: for a built preset, the backbone's weights instead of its own.
        overrides: further arguments of `build` for a built preset.
        build: `build_netvlad_model` (passed in: it lives with the model class, above this room).

    Returns:
        The Keras model (the caller checks its class).

    Raises:
        ValueError: an argument that does not apply to this kind of preset, or a converted
            preset without a public address and without `released_file` (each named).
    """
    if preset not in PRESETS:
        given = [name for name, value in (("released_file", released_file), ("backbone_weights", backbone_weights))
                 if value is not None] + sorted(overrides)
        if given:
            raise ValueError(f"Preset {preset!r} is a saved model; {', '.join(given)} apply to the built-in presets "
                             f"({', '.join(sorted(PRESETS))}).")
        folder = resolve_preset_folder(str(preset))
        read_preset_metadata(folder)
        return load_keras_archive(folder / MODEL_FILE)
    spec = PRESETS[preset]
    if spec.converter is not None:
        if overrides or backbone_weights is not None:
            dropped = sorted(overrides) + (["backbone_weights"] if backbone_weights is not None else [])
            raise ValueError(f"Preset {preset!r} is converted as released; drop {dropped}.")
        if released_file is not None:
            return CONVERTERS[spec.converter](released_file)
        if spec.url is None:
            raise ValueError(
                f"Preset {preset!r} converts the released file {spec.weights_file!r}, which has no public "
                "address to download it from: get it from its authors and pass released_file=<its path>."
            )
        return _released_model(preset, spec)
    if released_file is not None:
        raise ValueError(f"Preset {preset!r} is built, not converted from a released file; drop released_file "
                         "(backbone_weights= replaces its backbone's weights).")
    arguments = {**spec.build_arguments, **overrides}
    if backbone_weights is not None:
        arguments["weights"] = backbone_weights
    return build(**arguments)


def _released_model(name: str, spec: Preset) -> keras.Model:
    """A converted preset from the cache: downloaded (once; resumed when broken) and converted
    (once) on first use, the converted `.keras` reused afterwards without any network."""
    converted = cache_folder() / "converted" / f"{name}.keras"
    if converted.is_file():
        return load_keras_archive(converted)
    downloads = cache_folder() / "downloads"
    archived = spec.url.endswith(".zip")
    path = download(spec.url, downloads / (f"{spec.weights_file}.zip" if archived else spec.weights_file),
                    sha256=spec.sha256)
    try:
        source = path
        if archived:  # a checkpoint published as a zip: the converter reads the prefix inside it
            unpacked = extract_zip(path, downloads / spec.weights_file)
            found = sorted(unpacked.rglob(f"{spec.weights_file}.index"))
            if not found:
                raise ValueError(f"the archive holds no {spec.weights_file}.index")
            source = found[0].with_suffix("")
        model = CONVERTERS[spec.converter](source)
    except (ValueError, OSError) as error:
        path.unlink()
        if archived:
            shutil.rmtree(downloads / spec.weights_file, ignore_errors=True)
        raise ValueError(f"{file_url(spec.url, path.name)} gave a file that does not convert ({error}); it was removed "
                         "from the cache.") from None
    save_model_atomically(model, converted, overwrite=True)
    return model
