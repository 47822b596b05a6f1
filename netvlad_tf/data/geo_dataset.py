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
    """Database and query images with planar (UTM) coordinates in metres, place IDs, or both.

    Attributes:
        name: a label for messages and reports.
        database_paths: `(N_db,)` image paths.
        database_utm: `(N_db, 2)` easting, northing; None when the images have place IDs only.
        query_paths: `(N_q,)` image paths.
        query_utm: `(N_q, 2)` easting, northing; None with `database_utm`.
        query_conditions: `(N_q,)` optional labels such as "night"; None when absent.
        database_timestamps, query_timestamps: optional capture dates (Tokyo Time Machine),
            used to demand that a positive comes from another date.
        database_place_ids, query_place_ids: optional labels of the place each image shows
            (a survey's IDs, indoor sites without GPS). With them a positive is another image
            of the query's place, whatever its distance, and a negative an image of another
            place (beyond the negative radius too, when there are coordinates).

    Example:
    >>> dataset = GeoDataset("toy", ["a.jpg", "b.jpg"], [[0, 0], [100, 0]], ["q.jpg"], [[3, 0]])
    >>> dataset.positives_within(10.0)[0].tolist()
    [0]
    >>> rooms = GeoDataset("rooms", ["a.jpg", "b.jpg"], None, ["q.jpg"], None,
    ...                    database_place_ids=["hall", "lab"], query_place_ids=["lab"])
    >>> rooms.positives_within()[0].tolist()
    [1]
    """

    name: str
    database_paths: list[str]
    database_utm: np.ndarray | None
    query_paths: list[str]
    query_utm: np.ndarray | None
    query_conditions: list[str] | None = None
    database_timestamps: np.ndarray | None = None
    query_timestamps: np.ndarray | None = None
    database_place_ids: np.ndarray | None = None
    query_place_ids: np.ndarray | None = None
    database_frames: np.ndarray | None = None
    query_frames: np.ndarray | None = None
    database_sequences: np.ndarray | None = None
    query_sequences: np.ndarray | None = None
    _neighbours: NearestNeighbors | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.database_paths = [str(path) for path in self.database_paths]
        self.query_paths = [str(path) for path in self.query_paths]
        if (self.database_place_ids is None) != (self.query_place_ids is None):
            raise ValueError(f"{self.name}: place IDs are needed for the database and the queries, or for neither.")
        if self.database_place_ids is not None:
            self.database_place_ids = _labels(self.database_place_ids, len(self.database_paths), "database")
            self.query_place_ids = _labels(self.query_place_ids, len(self.query_paths), "query")
        if (self.database_utm is None) != (self.query_utm is None):
            raise ValueError(f"{self.name}: coordinates are needed for the database and the queries, or for neither.")
        if self.database_utm is None:
            if self.database_place_ids is None:
                raise ValueError(f"{self.name}: without coordinates every image needs a place ID.")
        else:
            self.database_utm = _coordinates(self.database_utm, len(self.database_paths), "database")
            self.query_utm = _coordinates(self.query_utm, len(self.query_paths), "query")
        if self.query_conditions is not None and len(self.query_conditions) != len(self.query_paths):
            raise ValueError(f"{self.name}: one condition per query is needed.")
        for part, count in (("database", len(self.database_paths)), ("query", len(self.query_paths))):
            for kind in ("frames", "sequences"):
                values = getattr(self, f"{part}_{kind}")
                if values is not None and len(values) != count:
                    raise ValueError(f"{self.name}: {count} {part} images but {len(values)} {kind}.")

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

    @property
    def has_coordinates(self) -> bool:
        """Whether the images have coordinates (a dataset may have place IDs only)."""
        return self.database_utm is not None

    @property
    def has_place_ids(self) -> bool:
        """Whether the images are labelled with place IDs."""
        return self.database_place_ids is not None

    def stream_order(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """The capture order of the database or query images, for sequence matching: by
        recording (`*_sequences`, in order of first appearance), then by `*_frames`, else by
        `*_timestamps` (numerically when every one is a number), else in row order.

        Args:
            part: `"database"` or `"query"`.

        Returns:
            `(order, segments)`: row indices in capture order, and for each of them the index of
            its recording (all 0 without `*_sequences`).

        Example:
        >>> stream = GeoDataset("toy", ["a", "b"], [[0, 0], [9, 0]], ["q", "r", "s"], [[0, 0]] * 3,
        ...                     query_frames=[2, 0, 1])
        >>> stream.stream_order("query")[0].tolist()
        [1, 2, 0]
        """
        if part not in ("database", "query"):
            raise ValueError(f"part must be 'database' or 'query', got {part!r}.")
        count = self.num_database if part == "database" else self.num_queries
        frames = getattr(self, f"{part}_frames")
        if frames is None:
            frames = getattr(self, f"{part}_timestamps")
        keys = np.arange(count) if frames is None else _sortable(frames)
        sequences = getattr(self, f"{part}_sequences")
        if sequences is None:
            segments = np.zeros(count, np.int64)
        else:
            _, first, segments = np.unique(np.asarray(sequences).astype(str), return_index=True, return_inverse=True)
            segments = np.argsort(np.argsort(first))[segments]  # recordings numbered by first appearance
        order = np.lexsort((keys, segments))
        return order, segments[order]

    def positives_within(self, radius_m: float = EVAL_POSITIVE_RADIUS_M) -> list[np.ndarray]:
        """For each query, the sorted database indices that show its place: within `radius_m`
        metres, or, with place IDs, the other images of its place (`radius_m` unused).

        With capture timestamps on both sides, a database image of the query's own date is
        not a positive (the Tokyo Time Machine rule).
        """
        positives = self._same_place() if self.has_place_ids else self._within(radius_m)
        if self.database_timestamps is not None and self.query_timestamps is not None:
            positives = [
                indices[self.database_timestamps[indices] != self.query_timestamps[query]]
                for query, indices in enumerate(positives)
            ]
        return positives

    def positive_rule(self, radius_m: float) -> str:
        """How a positive is found, for messages: `"within 25 m"` or `"of the same place_id"`."""
        return "of the same place_id" if self.has_place_ids else f"within {radius_m:g} m"

    def not_negatives_within(self, radius_m: float) -> list[np.ndarray]:
        """For each query, the sorted database indices that may not serve as its negatives:
        its positives, or with place IDs every image of its place, and, with coordinates,
        every image within `radius_m` metres (the paper's 25 m) of it.
        """
        if not self.has_place_ids:
            return self.positives_within(radius_m)
        same = self._same_place(own_file=True)
        if not self.has_coordinates:
            return same
        return [np.union1d(mine, near) for mine, near in zip(same, self._within(radius_m))]

    def queries_with_positives(self, radius_m: float = EVAL_POSITIVE_RADIUS_M) -> np.ndarray:
        """Indices of the queries that have at least one positive; the paper drops the rest."""
        return np.array(
            [query for query, found in enumerate(self.positives_within(radius_m)) if found.size],
            dtype=np.int64,
        )

    def select(self, database_rows, query_rows, name: str | None = None) -> GeoDataset:
        """The dataset of these database and query rows (indices or boolean masks), every
        label carried along.

        Example:
        >>> GeoDataset("toy", ["a", "b"], [[0, 0], [9, 0]], ["q"], [[0, 0]]).select([1], [0]).database_paths
        ['b']
        """
        database_rows, query_rows = _row_indices(database_rows), _row_indices(query_rows)

        def pick(values, rows):
            if values is None:
                return None
            return [values[row] for row in rows] if isinstance(values, list) else np.asarray(values)[rows]

        return GeoDataset(
            name=name or self.name,
            database_paths=pick(self.database_paths, database_rows),
            database_utm=pick(self.database_utm, database_rows),
            query_paths=pick(self.query_paths, query_rows),
            query_utm=pick(self.query_utm, query_rows),
            query_conditions=pick(self.query_conditions, query_rows),
            database_timestamps=pick(self.database_timestamps, database_rows),
            query_timestamps=pick(self.query_timestamps, query_rows),
            database_place_ids=pick(self.database_place_ids, database_rows),
            query_place_ids=pick(self.query_place_ids, query_rows),
            database_frames=pick(self.database_frames, database_rows),
            query_frames=pick(self.query_frames, query_rows),
            database_sequences=pick(self.database_sequences, database_rows),
            query_sequences=pick(self.query_sequences, query_rows),
        )

    def _within(self, radius_m: float) -> list[np.ndarray]:
        if not self.has_coordinates:
            raise ValueError(f"{self.name} has place IDs but no coordinates: distances cannot be measured.")
        if self._neighbours is None:
            self._neighbours = NearestNeighbors().fit(self.database_utm)
        neighbours = self._neighbours.radius_neighbors(self.query_utm, radius=radius_m, return_distance=False)
        return [np.sort(indices) for indices in neighbours]

    def _same_place(self, own_file: bool = False) -> list[np.ndarray]:
        """Per query, the database images with its place ID (the query's own file only with
        `own_file`)."""
        by_place: dict[str, list[int]] = {}
        for index, place in enumerate(self.database_place_ids):
            by_place.setdefault(place, []).append(index)
        found = []
        for query, place in enumerate(self.query_place_ids):
            indices = np.array(by_place.get(place, []), dtype=np.int64)
            if not own_file:
                indices = indices[[self.database_paths[i] != self.query_paths[query] for i in indices]]
            found.append(indices)
        return found


def _sortable(values) -> np.ndarray:
    """Frame positions as sort keys: numbers when every value is one, else their text (ISO dates sort so)."""
    values = np.asarray(values)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        return values.astype(str)


def _row_indices(rows) -> np.ndarray:
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)


def _labels(values, count: int, role: str) -> np.ndarray:
    labels = np.array([str(value).strip() for value in values], dtype=object)
    if len(labels) != count:
        raise ValueError(f"{count} {role} images but {len(labels)} place IDs.")
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise ValueError(f"{role} place IDs are empty at rows {empty[:10].tolist()}.")
    return labels


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
