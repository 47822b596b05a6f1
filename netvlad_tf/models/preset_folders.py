"""Preset folders, the way Keras users share models: a local folder, `hf://owner/repo` (the
Hugging Face Hub, through `huggingface_hub`) or `kaggle://owner/model/keras/variant` (Kaggle
Models, through `kagglehub`), each holding `model.keras`, `metadata.json` and a `README.md`
model card with the Hub's front matter."""

from __future__ import annotations

import json
from pathlib import Path

from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.io.json_files import read_json_object
from netvlad_tf.io.keras_archive import MODEL_FILE

METADATA_FILE = "metadata.json"
MODEL_CARD_FILE = "README.md"
METADATA_KEYS = ("netvlad_tf_version", "input", "descriptor", "training_data", "results", "licence")


def resolve_preset_folder(preset: str) -> Path:
    """The local folder a preset handle names, downloaded (once, into the client's cache) for a
    hub handle. An `@revision` after an `hf://` repo pins a commit, branch or tag.

    Args:
        preset: a folder, `hf://owner/repo[@revision]` or `kaggle://owner/model/keras/variant[/version]`.

    Raises:
        ValueError: the client for a hub handle is not installed (named), or the handle or
            folder is not a preset (named).

    Example:
    >>> resolve_preset_folder("/no/such/preset")
    Traceback (most recent call last):
    ...
    ValueError: /no/such/preset is not a preset name, a preset folder, hf://owner/repo or kaggle://owner/model/keras/variant.
    """
    if preset.startswith("hf://"):
        repo, _, revision = preset[len("hf://"):].partition("@")
        try:
            import huggingface_hub
        except ImportError:
            raise ValueError(f"{preset}: hf:// presets need huggingface_hub: pip install 'netvlad_tf[hub]'.") from None
        try:
            folder = huggingface_hub.snapshot_download(repo_id=repo, revision=revision or None)
        except Exception as error:  # the client raises many types (offline, not found, HTTP)
            raise ValueError(f"{preset}: the Hub did not give this repository ({type(error).__name__}: "
                             f"{' '.join(str(error).split())[:200]}).") from None
    elif preset.startswith("kaggle://"):
        try:
            import kagglehub
        except ImportError:
            raise ValueError(f"{preset}: kaggle:// presets need kagglehub: pip install 'netvlad_tf[hub]'.") from None
        try:
            folder = kagglehub.model_download(preset[len("kaggle://"):])
        except Exception as error:  # the client raises many types
            raise ValueError(f"{preset}: Kaggle did not give this model ({type(error).__name__}: "
                             f"{' '.join(str(error).split())[:200]}).") from None
    else:
        folder = preset
        if not Path(folder).is_dir():
            raise ValueError(f"{preset} is not a preset name, a preset folder, hf://owner/repo or "
                             "kaggle://owner/model/keras/variant.")
    folder = Path(folder)
    missing = [name for name in (MODEL_FILE, METADATA_FILE) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{preset}: not a netvlad_tf preset folder (no {' or '.join(missing)} in {folder}).")
    return folder


def read_preset_metadata(folder) -> dict:
    """A preset folder's `metadata.json`, checked: one line naming the file when it is wrong."""
    path = Path(folder) / METADATA_FILE
    metadata = read_json_object(path)
    if any(key not in metadata for key in METADATA_KEYS):
        raise ValueError(f"{path} is not netvlad_tf preset metadata (it needs {', '.join(METADATA_KEYS)}).")
    return metadata


def write_preset_folder(model, folder, metadata: dict, overwrite: bool = False) -> Path:
    """Writes `model.keras`, `metadata.json` and the model card into `folder`, atomically.

    Args:
        model: the Keras model.
        folder: the preset folder to create.
        metadata: the `metadata.json` content (keys `METADATA_KEYS`).
        overwrite: replace an existing folder.

    Returns:
        The folder.
    """
    with atomic_directory(folder, overwrite) as staging:
        model.save(staging / MODEL_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        (staging / MODEL_CARD_FILE).write_text(preset_card(model.name, metadata))
    return Path(folder)


def preset_card(name: str, metadata: dict) -> str:
    """The `README.md` of a preset folder: the Hub's front matter, then what the model is.

    Example:
    >>> print(preset_card("m", {"licence": "mit", "input": {}, "descriptor": {}, "training_data": "",
    ...                        "results": {}, "netvlad_tf_version": "0"}).splitlines()[1])
    library_name: keras
    """
    descriptor, image = metadata["descriptor"], metadata["input"]
    results = metadata["results"] or {}
    rows = "\n".join(f"| {key} | {value} |" for key, value in results.items()) or "| — | — |"
    return f"""---
library_name: keras
license: {metadata["licence"]}
tags:
- netvlad
- place-recognition
- image-retrieval
- keras
---

# {name}

NetVLAD place recognition (Arandjelović et al., CVPR 2016) saved by netvlad_tf
{metadata["netvlad_tf_version"]}.

- Input: {image.get("color", "RGB")} images with values in {image.get("range", [0, 255])}, any size
  (the model was used at {image.get("image_size") or f"native size, longer side at most {image.get('max_side')}"}).
- Output: {descriptor.get("dimension")}-D L2-normalised descriptors ({descriptor.get("pooling")}, layout
  {descriptor.get("layout")}, whitening {descriptor.get("whitening") or "none"}).
- Trained on: {metadata["training_data"] or "not stated"}.

| result | value |
|---|---|
{rows}

```python
import netvlad_tf
model = netvlad_tf.PlaceRecognitionModel.from_preset("hf://OWNER/REPO")  # or this folder's path
```
"""
