"""Scanning a dataset for images that cannot be read, to skip them instead of failing later."""

from __future__ import annotations

import warnings

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.data.images import unreadable_images


def drop_unreadable_images(dataset: GeoDataset) -> tuple[GeoDataset, list[str]]:
    """Decodes every image once and returns the dataset without the missing, corrupt or
    truncated ones, with their paths; warns with the count when any are dropped.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> full = read_csv_dataset(nordland_csv("test"))
    >>> small = GeoDataset("s", full.database_paths[:2], full.database_utm[:2], ["gone.png"], [[0, 0]])
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     kept, dropped = drop_unreadable_images(small)
    >>> kept.num_queries, dropped
    (0, ['gone.png'])
    """
    bad = set(unreadable_images(dataset.database_paths + dataset.query_paths))
    if not bad:
        return dataset, []
    keep_database = np.array([p not in bad for p in dataset.database_paths], dtype=bool)
    keep_queries = np.array([p not in bad for p in dataset.query_paths], dtype=bool)

    kept = dataset.select(keep_database, keep_queries)
    dropped = sorted(bad)
    warnings.warn(f"{dataset.name}: skipped {len(dropped)} unreadable images, e.g. {dropped[0]}", stacklevel=2)
    return kept, dropped
