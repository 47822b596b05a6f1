"""A geotagged place-recognition dataset: database and query images with UTM coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

# The paper's thresholds (Sec. 4): potential positives within 10 m, definite negatives beyond
# 25 m, and a retrieval is correct when it lies within 25 m of the query.
TRAIN_POSITIVE_RADIUS_M = 10.0
NEGATIVE_RADIUS_M = 25.0
EVAL_POSITIVE_RADIUS_M = 25.0


@dataclass
class GeoDataset:
    """Database and query images with planar (UTM) coordinates in metres.

    Attributes:
        name: a label for messages and reports.
        database_paths: `(N_db,)` image paths.
        database_utm: `(N_db, 2)` easting, northing.
        query_paths: `(N_q,)` image paths.
        query_utm: `(N_q, 2)` easting, northing.
        query_conditions: `(N_q,)` optional labels such as "night"; None when absent.
        database_timestamps, query_timestamps: optional capture dates (Tokyo Time Machine),
            used to demand that a positive comes from another date.

    Example:
    >>> dataset = GeoDataset("toy", ["a.jpg", "b.jpg"], [[0, 0], [100, 0]], ["q.jpg"], [[3, 0]])
    >>> dataset.positives_within(10.0)[0].tolist()
    [0]
    """

    name: str
    database_paths: list[str]
    database_utm: np.ndarray
    query_paths: list[str]
    query_utm: np.ndarray
    query_conditions: list[str] | None = None
    database_timestamps: np.ndarray | None = None
    query_timestamps: np.ndarray | None = None
    _neighbours: NearestNeighbors | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.database_paths = [str(path) for path in self.database_paths]
        self.query_paths = [str(path) for path in self.query_paths]
        self.database_utm = _coordinates(self.database_utm, len(self.database_paths), "database")
        self.query_utm = _coordinates(self.query_utm, len(self.query_paths), "query")
        if self.query_conditions is not None and len(self.query_conditions) != len(self.query_paths):
            raise ValueError(f"{self.name}: one condition per query is needed.")

    def __repr__(self) -> str:
        return (
            f"GeoDataset({self.name!r}, database={len(self.database_paths)}, "
            f"queries={len(self.query_paths)})"
        )

    @property
    def num_database(self) -> int:
        """Number of database images."""
        return len(self.database_paths)

    @property
    def num_queries(self) -> int:
        """Number of query images."""
        return len(self.query_paths)

    def positives_within(self, radius_m: float = EVAL_POSITIVE_RADIUS_M) -> list[np.ndarray]:
        """For each query, the sorted database indices within `radius_m` metres.

        With capture timestamps on both sides, a database image of the query's own date is
        not a positive (the Tokyo Time Machine rule).
        """
        if self._neighbours is None:
            self._neighbours = NearestNeighbors().fit(self.database_utm)
        neighbours = self._neighbours.radius_neighbors(
            self.query_utm, radius=radius_m, return_distance=False
        )
        positives = [np.sort(indices) for indices in neighbours]
        if self.database_timestamps is not None and self.query_timestamps is not None:
            positives = [
                indices[self.database_timestamps[indices] != self.query_timestamps[query]]
                for query, indices in enumerate(positives)
            ]
        return positives

    def queries_with_positives(self, radius_m: float = EVAL_POSITIVE_RADIUS_M) -> np.ndarray:
        """Indices of the queries that have at least one positive; the paper drops the rest."""
        return np.array(
            [query for query, found in enumerate(self.positives_within(radius_m)) if found.size],
            dtype=np.int64,
        )


def _coordinates(values, count: int, role: str) -> np.ndarray:
    coordinates = np.asarray(values, dtype=np.float64).reshape(-1, 2) if count else np.zeros((0, 2))
    if len(coordinates) != count:
        raise ValueError(f"{count} {role} images but {len(coordinates)} coordinates.")
    bad_rows = np.flatnonzero(~np.isfinite(coordinates).all(axis=1))
    if bad_rows.size:
        raise ValueError(f"{role} coordinates are NaN or infinite at rows {bad_rows[:10].tolist()}.")
    return coordinates


def check_images_exist(dataset: GeoDataset) -> None:
    """Raises `FileNotFoundError` naming the first missing images of `dataset`."""
    missing = [p for p in dataset.database_paths + dataset.query_paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        raise FileNotFoundError(f"{dataset.name}: {len(missing)} image files are missing: {shown}")
