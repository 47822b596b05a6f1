"""Validation data that overlaps the training data: found before training, not after a
suspiciously perfect Recall@N (Patch-NetVLAD#92 reports R@1 = 1 after one epoch that way)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from netvlad_tf.data.geo_dataset import TRAIN_POSITIVE_RADIUS_M, GeoDataset


class ValidationOverlapWarning(UserWarning):
    """Validation queries that are training images, or training queries' near neighbours."""


@dataclass(frozen=True)
class ValidationOverlap:
    """How the validation queries overlap the training data.

    Attributes:
        same_file: validation queries whose file is a training image (database or query).
        near_training_query: the other validation queries within the positive radius of a
            training query of the same capture date (any date when either side has none).
    """

    same_file: int
    near_training_query: int

    def message(self, num_queries: int) -> str | None:
        """One line for the log, None when there is no overlap."""
        if not (self.same_file or self.near_training_query):
            return None
        return (f"{self.same_file} of {num_queries} validation queries are training images and "
                f"{self.near_training_query} more lie within {TRAIN_POSITIVE_RADIUS_M:g} m of a training "
                "query of the same date: validation recall will be optimistic; use a disjoint --val_dataset.")


def validation_overlap(train_dataset: GeoDataset, val_dataset: GeoDataset,
                       radius_m: float = TRAIN_POSITIVE_RADIUS_M) -> ValidationOverlap:
    """Counts the validation queries that overlap the training data (see `ValidationOverlap`).

    Args:
        train_dataset: the training database and queries.
        val_dataset: the validation data.
        radius_m: the positive radius (the paper: 10 m).

    Example:
    >>> train = GeoDataset("t", ["a.jpg"], [[0, 0]], ["q.jpg"], [[0, 0]])
    >>> val = GeoDataset("v", ["b.jpg"], [[0, 0]], ["q.jpg", "r.jpg", "s.jpg"], [[0, 0], [3, 0], [90, 0]])
    >>> validation_overlap(train, val)
    ValidationOverlap(same_file=1, near_training_query=1)
    """
    training_files = {os.path.realpath(path) for path in train_dataset.database_paths + train_dataset.query_paths}
    same = np.array([os.path.realpath(path) in training_files for path in val_dataset.query_paths], bool)
    near = np.zeros(val_dataset.num_queries, bool)
    if train_dataset.num_queries and val_dataset.num_queries and train_dataset.has_coordinates \
            and val_dataset.has_coordinates:
        neighbours = NearestNeighbors().fit(train_dataset.query_utm).radius_neighbors(
            val_dataset.query_utm, radius=radius_m, return_distance=False)
        dated = train_dataset.query_timestamps is not None and val_dataset.query_timestamps is not None
        for query, found in enumerate(neighbours):
            if dated:
                found = found[train_dataset.query_timestamps[found] == val_dataset.query_timestamps[query]]
            near[query] = found.size > 0
    return ValidationOverlap(int(same.sum()), int((near & ~same).sum()))
