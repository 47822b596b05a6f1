"""Images through `tf.data`: decode JPEG/PNG, grey → RGB, resize, batch, prefetch."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf


def load_image(path, image_size: tuple[int, int] | None = None, max_side: int | None = None) -> tf.Tensor:
    """Reads one JPEG/PNG as float32 RGB in 0–255, `(H, W, 3)`, resized by the policy.

    Resize policy: `image_size=(H, W)` resizes to exactly that size; `max_side=S` scales so
    the longer side is S (aspect kept); neither keeps the native size. Bilinear.

    Example:
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> tuple(load_image(NORDLAND_DIR / "images/summer/images-04010.png", (128, 256)).shape)
    (128, 256, 3)
    """
    if image_size is not None and max_side is not None:
        raise ValueError("Give image_size or max_side, not both.")
    if not isinstance(path, tf.Tensor):
        path = str(path)
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32)
    if image_size is not None:
        image = tf.image.resize(image, image_size)
    elif max_side is not None:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = float(max_side) / tf.reduce_max(shape)
        image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    return image


def image_dataset(
    paths: Sequence[str],
    image_size: tuple[int, int] | None = None,
    max_side: int | None = None,
    batch_size: int = 8,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of the images at `paths`, in order.

    Images of different native sizes can only be batched together with `image_size`;
    otherwise use `batch_size=1`.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).query_paths[:3]
    >>> next(iter(image_dataset(paths, (64, 128)))).shape
    TensorShape([3, 64, 128, 3])
    """
    paths = [str(p) for p in paths]
    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(
        lambda path: load_image(path, image_size, max_side),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def unreadable_images(paths: Sequence[str]) -> list[str]:
    """The paths among `paths` that are missing or do not decode as an image."""
    bad = []
    for path in paths:
        if not Path(path).is_file():
            bad.append(str(path))
            continue
        try:
            load_image(path)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            bad.append(str(path))
    return bad


def image_batches(paths: Sequence[str], image_size=None, max_side=None, batch_size: int = 8):
    """Yields NumPy image batches of `paths`; a corrupt image raises `ValueError` naming it."""
    iterator = iter(image_dataset(paths, image_size, max_side, batch_size))
    for start in range(0, len(paths), batch_size):
        try:
            batch = next(iterator)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            bad = unreadable_images(paths[start : start + batch_size]) or ["(unknown)"]
            raise ValueError(f"Cannot read image {bad[0]}: not a valid JPEG/PNG ({error.message.splitlines()[0]}).") from None
        yield np.asarray(batch)
