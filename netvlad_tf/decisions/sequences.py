"""Sequence matching: consecutive frames vote together (SeqSLAM's idea, training-free).

A single winter frame may look like many summer frames; ten consecutive winter frames matching
ten consecutive summer frames rarely happen by chance. The score of query frame i against
database frame j averages the frame similarities along the diagonal that ends at (i, j):
`(i − k, j − round(v·k))` for k < L, v a relative speed of the two traversals (1: the same
speed). With L2-normalised descriptors the similarity is the cosine, and a mean cosine is an
affine function of the mean squared distance (`d² = 2 − 2·cos`), so this ranks exactly as
SeqSLAM's summed distances do, while staying a similarity that `precision_recall` can threshold.

Edges, without wrapping around: a query frame before the first of its stream (or of its
recording, with segment labels) does not exist, so early queries are scored on the frames they
have, the same number for every database frame. A database frame before the first of its
stream or recording does not exist either; its term is the query frame's mean similarity over
the database (what an unrelated frame scores), so a diagonal cut short by the database's edge
has as many terms as any other and neither wins by the noise of a few frames nor loses.

Reference: Milford & Wyeth, "SeqSLAM", ICRA 2012 (Sec. III.C, trajectory search over a range
of speeds); seqNet (Garg & Milford, RA-L 2021) on NetVLAD descriptors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Relative speeds searched by default: the two traversals move alike (Nordland's trains do).
DEFAULT_SPEEDS = (1.0,)


def sequence_similarities(
    similarities: np.ndarray,
    sequence_length: int,
    speeds: Sequence[float] = DEFAULT_SPEEDS,
    query_segments: np.ndarray | None = None,
    database_segments: np.ndarray | None = None,
) -> np.ndarray:
    """Sequence scores from a frame-to-frame similarity matrix in stream order.

    Args:
        similarities: `(Q, N)` similarity of query frame i to database frame j, rows and
            columns in capture order.
        sequence_length: L, the frames per sequence (1 returns `similarities`).
        speeds: relative speeds v of the database traversal; the best-scoring one counts.
        query_segments, database_segments: optional `(Q,)`/`(N,)` labels of the recording
            each frame belongs to; a diagonal never crosses from one recording into another.

    Returns:
        `(Q, N)` float32: for each (i, j) and the best speed, the mean similarity along the
        diagonal ending at (i, j) over the query frames that exist (a missing database frame
        counts as the query frame's mean similarity over the database).

    Example:
    >>> similarities = np.array([[1.0, 0.0, 0.0], [0.0, 0.2, 0.9], [0.0, 0.3, 0.1]])
    >>> sequence_similarities(similarities, 2).astype(float).round(2).tolist()
    [[1.0, 0.0, 0.0], [0.17, 0.6, 0.45], [0.18, 0.15, 0.15]]

    Reference: SeqSLAM (Milford & Wyeth, ICRA 2012).
    """
    similarities = np.asarray(similarities, dtype=np.float32)
    if similarities.ndim != 2:
        raise ValueError(f"similarities must be a (num_queries, num_database) matrix, got shape {similarities.shape}.")
    if int(sequence_length) != sequence_length or sequence_length < 1:
        raise ValueError(f"sequence_length must be a positive integer, got {sequence_length!r}.")
    speeds = [float(speed) for speed in speeds]
    if not speeds or any(not np.isfinite(speed) or speed <= 0 for speed in speeds):
        raise ValueError(f"speeds must be positive numbers, got {speeds}.")
    num_queries, num_database = similarities.shape
    query_segments = _segments(query_segments, num_queries, "query_segments")
    database_segments = _segments(database_segments, num_database, "database_segments")
    unrelated = similarities.astype(np.float64).mean(axis=1)  # per query frame
    # Query frames i − k that exist in frame i's recording: the same count for every column.
    count = np.ones(num_queries, np.float64)
    for step in range(1, min(int(sequence_length), num_queries)):
        count[step:] += query_segments[step:] == query_segments[:-step]
    best = None
    for speed in speeds:
        total = similarities.astype(np.float64)
        for step in range(1, min(int(sequence_length), num_queries)):
            shift = int(round(speed * step))
            query_exists = np.zeros(num_queries, bool)
            query_exists[step:] = query_segments[step:] == query_segments[:-step]
            # term[i, j] = similarities[i − step, j − shift] where database frame j − shift exists
            # in frame j's recording, else the unrelated score of query frame i − step.
            term = np.empty_like(total)
            term[step:] = unrelated[:-step, None]
            database_exists = np.zeros(num_database, bool)
            if shift < num_database:
                database_exists[shift:] = database_segments[shift:] == database_segments[: num_database - shift]
                shifted = np.zeros((num_queries - step, num_database))
                shifted[:, shift:] = similarities[: num_queries - step, : num_database - shift]
                term[step:] = np.where(database_exists[None, :], shifted, term[step:])
            total[query_exists] += term[query_exists]
        score = total / count[:, None]
        best = score if best is None else np.maximum(best, score)
    return best.astype(np.float32)


def _segments(labels, count: int, name: str) -> np.ndarray:
    if labels is None:
        return np.zeros(count, np.int64)
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"{name} must hold one label per frame ({count}), got shape {labels.shape}.")
    return labels
