"""Reads the folder layout of the common VPR benchmark: coordinates in the file names."""

from __future__ import annotations

from pathlib import Path

from netvlad_tf.data.geo_dataset import GeoDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder, recursive: bool = False) -> list[Path]:
    """The `.jpg`/`.jpeg`/`.png` files in `folder`, sorted; hidden ones (a name starting with
    ".") are left out: the staging files of an interrupted write and the `._name.jpg`
    resource forks macOS leaves on copied drives are not photos.

    Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("b.jpg", "a.PNG", "._a.PNG", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [path.name for path in image_files(folder)]
    ['a.PNG', 'b.jpg']
    """
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(path for path in found
                  if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())
FOLDER_SPLITS = ("train", "val", "test")


def read_folder_dataset(root, split: str = "test") -> GeoDataset:
    """Reads `root/images/<split>/{database,queries}/@<utm_east>@<utm_north>@….jpg`.

    Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for folder, name in [("database", "@10.0@20.0@.jpg"), ("queries", "@12.0@20.0@.jpg")]:
    ...     (root / "images/test" / folder).mkdir(parents=True, exist_ok=True)
    ...     (root / "images/test" / folder / name).touch()
    >>> read_folder_dataset(root).query_utm.tolist()
    [[12.0, 20.0]]
    """
    if split not in FOLDER_SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {FOLDER_SPLITS}.")
    split_dir = Path(root) / "images" / split
    database_paths, database_utm = _read_images(split_dir / "database")
    query_paths, query_utm = _read_images(split_dir / "queries")
    return GeoDataset(
        name=f"{Path(root).name}_{split}",
        database_paths=database_paths,
        database_utm=database_utm,
        query_paths=query_paths,
        query_utm=query_utm,
    )


def _read_images(folder: Path) -> tuple[list[str], list[list[float]]]:
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {str(folder)!r} does not exist.")
    paths = image_files(folder)
    if not paths:
        raise ValueError(f"No .jpg/.png images in {str(folder)!r}.")
    coordinates = []
    for path in paths:
        fields = path.name.split("@")
        try:
            coordinates.append([float(fields[1]), float(fields[2])])
        except (IndexError, ValueError):
            raise ValueError(
                f"{path.name}: expected '@<utm_east>@<utm_north>@...' in the file name."
            ) from None
    return [str(p) for p in paths], coordinates
