"""An image stream for loop closure: a folder of frames or a CSV, in capture order."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from netvlad_tf.data.folder_dataset import image_files


def read_image_stream(source) -> list[str]:
    """The frames of a stream, in capture order.

    Args:
        source: a folder (its `.jpg`/`.jpeg`/`.png` files sorted by name, so zero-padded frame
            numbers come in order), or a CSV with an `image_path` column (relative to the CSV's
            folder), in row order unless a `frame` (a number) or `timestamp` column says
            otherwise; other columns, `split` included, are ignored.

    Returns:
        The image paths, first frame first.

    Raises:
        FileNotFoundError: no such folder or file, or a listed image is missing (named).
        ValueError: an empty stream, a CSV without `image_path`, or a frame that is not a number.

    Example:
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> frames = read_image_stream(nordland_csv("test"))
    >>> len(frames), Path(frames[0]).name
    (696, 'images-12510.png')
    """
    source = Path(source)
    if source.is_dir():
        frames = [str(path) for path in image_files(source)]
        if not frames:
            raise ValueError(f"{source} holds no .jpg, .jpeg or .png image.")
        return frames
    if not source.is_file():
        raise FileNotFoundError(f"Image stream {str(source)!r} is neither a folder nor a CSV file.")
    with source.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        columns = reader.fieldnames or []
    if "image_path" not in columns:
        raise ValueError(f"{source}: a stream CSV needs an image_path column; found {columns}.")
    if not rows:
        raise ValueError(f"{source}: no rows.")
    frames = [str(source.parent / (row["image_path"] or "").strip()) for row in rows]
    order_column = next((column for column in ("frame", "timestamp") if column in columns), None)
    if order_column is not None:
        keys = [(row[order_column] or "").strip() for row in rows]
        try:
            sortable = np.array([float(key) for key in keys])
        except ValueError:
            if order_column == "frame":
                raise ValueError(f"{source}: every frame must be a number.") from None
            sortable = np.array(keys)
        frames = [frames[i] for i in np.argsort(sortable, kind="stable")]
    missing = [frame for frame in frames if not Path(frame).is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: {len(missing)} frames are missing, e.g. {missing[0]}.")
    return frames
