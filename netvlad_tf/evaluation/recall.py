"""Recall@N: the place-recognition metric of the paper (Sec. 5.1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_NS = (1, 5, 10, 20)


def recall_at_n(
    ranked_database_indices: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
) -> dict[int, float]:
    """Fraction of queries with at least one positive among their top N retrievals.

    Args:
        ranked_database_indices: `(Q, M)` database indices, best first, for each query.
        positives: for each query, the database indices that count as correct (e.g. within
            25 m). A query with no positive counts as a miss; drop such queries beforehand
            to follow the paper.
        ns: the cut-offs N; N larger than M uses all M retrievals.

    Returns:
        `{N: recall}`.

    Example:
    >>> recall_at_n(np.array([[3, 1], [0, 2]]), [np.array([1]), np.array([5])], ns=(1, 2))
    {1: 0.0, 2: 0.5}
    """
    ranked = np.asarray(ranked_database_indices)
    if ranked.ndim != 2 or len(ranked) != len(positives):
        raise ValueError(
            f"ranked_database_indices must be (num_queries, M) with one row per query; got "
            f"{ranked.shape} for {len(positives)} queries."
        )
    if len(ranked) == 0:
        raise ValueError("No queries to evaluate.")
    if any(n < 1 for n in ns):
        raise ValueError(f"Every N must be >= 1, got {list(ns)}.")
    first_hit = np.full(len(ranked), np.inf)
    for query, (row, correct) in enumerate(zip(ranked, positives)):
        hits = np.flatnonzero(np.isin(row, correct))
        if hits.size:
            first_hit[query] = hits[0]
    return {int(n): float(np.mean(first_hit < n)) for n in ns}


def first_per_group(ranked_database_indices: np.ndarray, groups: np.ndarray, keep: int) -> np.ndarray:
    """Keeps only the best-ranked database image of each group (e.g. the 12 cutouts of one
    Tokyo 24/7 panorama count once), `keep` per query; short rows are padded with -1.

    Args:
        ranked_database_indices: `(Q, M)` database indices per query, best first.
        groups: `(num_database,)` group id of every database image.
        keep: columns of the result.

    Returns:
        `(Q, keep)` int64 database indices, one per group, best first.

    Example:
    >>> first_per_group(np.array([[0, 1, 2, 3]]), np.array([7, 7, 8, 9]), keep=3).tolist()
    [[0, 2, 3]]
    """
    groups = np.asarray(groups)
    result = np.full((len(ranked_database_indices), keep), -1, dtype=np.int64)
    for row, ranked in enumerate(ranked_database_indices):
        _, first = np.unique(groups[ranked], return_index=True)
        unique_in_order = ranked[np.sort(first)][:keep]
        result[row, : len(unique_in_order)] = unique_in_order
    return result
