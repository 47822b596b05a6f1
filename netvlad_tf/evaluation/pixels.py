"""The raw-pixel baseline: tiny grey thumbnails compared directly, a floor below every learned
descriptor (not one of the paper's baselines; the demo reports it beside them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netvlad_tf.data.images import image_batches
from netvlad_tf.layers.normalization import l2_normalize_rows

DEFAULT_THUMBNAIL_SIZE = (16, 32)


def pixel_descriptors(paths: Sequence[str], thumbnail_size: tuple[int, int] = DEFAULT_THUMBNAIL_SIZE) -> np.ndarray:
    """Grey thumbnails of `thumbnail_size`, each made zero-mean and unit-norm, `(N, H·W)`.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> pixel_descriptors(read_csv_dataset(nordland_csv("test")).query_paths[:2]).shape
    (2, 512)
    """
    thumbnails = np.concatenate(list(image_batches(list(paths), thumbnail_size, batch_size=64)))
    grey = thumbnails.mean(axis=-1).reshape(len(thumbnails), -1).astype(np.float64)
    grey -= grey.mean(axis=1, keepdims=True)
    return l2_normalize_rows(grey).astype(np.float32)
