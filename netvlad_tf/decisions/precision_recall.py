"""Precision–recall of the best match: "is this a place I have seen, and how sure?".

A place-recognition system that must decide (a robot closing a loop, a pipeline choosing image
pairs) accepts its best match only when the match is similar enough. Sweeping that similarity
threshold gives the precision–recall curve of the VPR literature:

- VPR-Bench (Zaffar et al., IJCV 2021, Sec. 4.1) and the VPR_Tutorial (Schubert et al., IEEE
  RAM 2023; `evaluation/metrics.py`: `createPR(..., matching="single")`, `recallAt100precision`):
  for each query only its best database match and that match's similarity count; at a threshold
  t the accepted queries are those whose best similarity is ≥ t, a true positive is an accepted
  query whose best match is correct, precision = TP / accepted and recall = TP / (queries that
  have a correct match at all).
- Queries without any correct match stay in: rejecting them is right, accepting one is a false
  positive. That is the "new place" case a loop closer must reject.

Unlike `createPR`, which samples 100 evenly spaced thresholds, the curve here is exact: one
point per distinct best-match similarity. The area is that of the step curve (precision held
from one recall to the next, as average precision is computed), not a trapezoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrecisionRecall:
    """The precision–recall curve of best matches, one point per distinct threshold.

    Attributes:
        thresholds: `(T,)` similarities, descending; point i accepts every query whose best
            similarity is ≥ `thresholds[i]`.
        precision: `(T,)` precision at each threshold.
        recall: `(T,)` recall at each threshold (non-decreasing).
        num_queries: all queries, with or without a correct match.
        num_without_positive: queries that have no correct match in the database.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_queries: int
    num_without_positive: int

    @property
    def auc(self) -> float:
        """Area under the step curve: `Σ_i (recall_i − recall_{i−1}) · precision_i`, recall_{−1} = 0."""
        gained = np.diff(np.concatenate([[0.0], self.recall]))
        return float(np.sum(gained * self.precision))

    def recall_at_precision(self, minimum_precision: float) -> float:
        """The largest recall of a threshold whose precision is ≥ `minimum_precision` (0 if none).

        Example:
        >>> curve = best_match_precision_recall([0.9, 0.8, 0.7], [True, False, True], [True, True, True])
        >>> curve.recall_at_precision(1.0), round(curve.recall_at_precision(0.6), 3)
        (0.3333333333333333, 0.667)
        """
        reached = self.precision >= minimum_precision - 1e-12
        return float(self.recall[reached].max()) if reached.any() else 0.0

    def threshold_at_precision(self, minimum_precision: float) -> float | None:
        """The lowest similarity threshold whose precision is still ≥ `minimum_precision`: the
        setting that keeps that precision with the most recall. None if no threshold reaches it.

        Example:
        >>> curve = best_match_precision_recall([0.9, 0.8, 0.7], [True, False, True], [True, True, True])
        >>> curve.threshold_at_precision(1.0)
        0.9
        """
        reached = np.flatnonzero(self.precision >= minimum_precision - 1e-12)
        if reached.size == 0:
            return None
        best = reached[np.argmax(self.recall[reached])]
        # Equal recall at several thresholds: the highest of them rejects more and keeps the recall.
        return float(self.thresholds[best])

    def summary(self) -> dict:
        """What `results.json` holds under `"precision_recall"`.

        Example:
        >>> curve = best_match_precision_recall([0.9, 0.5], [True, False], [True, False])
        >>> curve.summary()["recall_at_100_precision"], curve.summary()["num_queries_without_positive"]
        (1.0, 1)
        """
        threshold = self.threshold_at_precision(0.99)
        return {
            "auc": self.auc,
            "recall_at_100_precision": self.recall_at_precision(1.0),
            "recall_at_99_precision": self.recall_at_precision(0.99),
            "threshold_at_99_precision": threshold,
            "num_queries": self.num_queries,
            "num_queries_without_positive": self.num_without_positive,
        }


def best_match_precision_recall(best_similarity, best_is_correct, has_positive) -> PrecisionRecall:
    """The precision–recall curve of accepting each query's best match by its similarity.

    Args:
        best_similarity: `(Q,)` similarity of each query's best database match (higher is
            more similar, e.g. the cosine of L2-normalised descriptors).
        best_is_correct: `(Q,)` whether that best match is a positive of the query.
        has_positive: `(Q,)` whether the query has any positive in the database (the recall's
            denominator); a query without one can only be a false positive or a correct
            rejection.

    Returns:
        A `PrecisionRecall`, one point per distinct similarity, highest first.

    Raises:
        ValueError: arrays of different lengths, no query, a non-finite similarity, a correct
            best match for a query said to have no positive, or no query with a positive.

    Example:
    >>> curve = best_match_precision_recall([0.9, 0.8, 0.7, 0.6], [True, False, True, False],
    ...                                     [True, True, True, False])
    >>> curve.precision.round(3).tolist(), curve.recall.round(3).tolist()
    ([1.0, 0.5, 0.667, 0.5], [0.333, 0.333, 0.667, 0.667])

    Reference: VPR-Bench (Zaffar et al., IJCV 2021), Sec. 4.1; the VPR_Tutorial's `createPR`
    with `matching="single"` and `recallAt100precision`.
    """
    similarity = np.asarray(best_similarity, dtype=np.float64).reshape(-1)
    correct = np.asarray(best_is_correct, dtype=bool).reshape(-1)
    positive = np.asarray(has_positive, dtype=bool).reshape(-1)
    if not len(similarity) == len(correct) == len(positive):
        raise ValueError(f"best_similarity, best_is_correct and has_positive must have one entry per query; got "
                         f"{len(similarity)}, {len(correct)} and {len(positive)}.")
    if len(similarity) == 0:
        raise ValueError("No queries to evaluate.")
    if not np.all(np.isfinite(similarity)):
        raise ValueError("best_similarity contains NaN or infinite values.")
    if np.any(correct & ~positive):
        raise ValueError("A query without any positive cannot have a correct best match.")
    num_with_positive = int(positive.sum())
    if num_with_positive == 0:
        raise ValueError("No query has a positive in the database: recall is undefined.")
    order = np.argsort(-similarity, kind="stable")
    sorted_similarity, sorted_correct = similarity[order], correct[order]
    true_positives = np.cumsum(sorted_correct)
    accepted = np.arange(1, len(order) + 1)
    # One point per distinct threshold: the last query accepted at each similarity.
    last_of_value = np.flatnonzero(np.append(sorted_similarity[1:] != sorted_similarity[:-1], True))
    return PrecisionRecall(
        thresholds=sorted_similarity[last_of_value],
        precision=true_positives[last_of_value] / accepted[last_of_value],
        recall=true_positives[last_of_value] / num_with_positive,
        num_queries=len(similarity),
        num_without_positive=len(similarity) - num_with_positive,
    )
