"""Descriptors kept on disk between runs, keyed by what produced them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.io.atomic_writes import atomic_file


def descriptor_cache_key(model: keras.Model, paths: Sequence, *settings) -> str:
    """A 16-hex-digit key of the model's weights, its name, the image paths and `settings`.

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> len(descriptor_cache_key(model, ["a.png"], (32, 32)))
    16
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    digest.update(json.dumps([model.name, [str(path) for path in paths], *settings]).encode())
    return digest.hexdigest()[:16]


def cached_descriptors(path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at `path`, or `compute()`'s result stored there atomically.

    Raises:
        ValueError: `path` exists but is not a readable `.npy` file (truncated, damaged); the
            message names it.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "db.npy"
    >>> cached_descriptors(path, lambda: np.ones(2)).tolist(), cached_descriptors(path, None).tolist()
    ([1.0, 1.0], [1.0, 1.0])
    """
    path = Path(path)
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(
                f"Descriptor cache {path} is damaged ({error}); delete it to recompute."
            ) from None
    descriptors = compute()
    # Two runs computing one entry write the same values: the later may replace it.
    with atomic_file(path, overwrite=True) as staging:
        np.save(staging, descriptors)
    return descriptors
