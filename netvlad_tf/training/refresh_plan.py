"""What a descriptor-cache refresh embeds: a `RefreshPlan` of database and query images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The two parts of a dataset a refresh plan holds images of.
PARTS = ("database", "queries")


@dataclass(frozen=True)
class RefreshPlan:
    """The images whose descriptors the next cache refresh computes, sorted dataset indices.

    Attributes:
        database_ids: database images (all of them, or a mining pool).
        query_ids: query images (all of them, or the queries due before the next refresh).
    """

    database_ids: np.ndarray
    query_ids: np.ndarray

    def ids(self, part: str) -> np.ndarray:
        """The planned images of `part`, `"database"` or `"queries"`."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}.")
        return self.database_ids if part == "database" else self.query_ids

    @property
    def num_images(self) -> int:
        """Images the refresh embeds."""
        return len(self.database_ids) + len(self.query_ids)

    def database_rows(self, ids) -> np.ndarray:
        """Rows of the database images `ids` in this plan's order.

        Raises:
            ValueError: one of `ids` is not planned.
        """
        return _rows(self.database_ids, ids, "database image")

    def query_rows(self, ids) -> np.ndarray:
        """Rows of the query images `ids` in this plan's order (ValueError: one is not planned)."""
        return _rows(self.query_ids, ids, "query")



def contains(sorted_ids: np.ndarray, ids) -> np.ndarray | bool:
    """Whether each of `ids` is in `sorted_ids`."""
    ids = np.asarray(ids, dtype=np.int64)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[positions] == ids


def _rows(sorted_ids: np.ndarray, ids, role: str) -> np.ndarray:
    """Rows of `ids` in `sorted_ids`; an id that is not there is an error."""
    ids = np.asarray(ids, dtype=np.int64)
    found = contains(sorted_ids, ids) if len(sorted_ids) else np.zeros(ids.shape, bool)
    if not np.all(found):
        raise ValueError(f"{role.capitalize()} {int(ids[~found][0])} is not in the refresh plan.")
    return np.searchsorted(sorted_ids, ids)
