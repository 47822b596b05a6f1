"""The paper's weakly supervised ranking loss (arXiv 1511.07247, Sec. 4, Eq. 7)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

DEFAULT_MARGIN = 0.1
NORMALIZATIONS = ("violating", "all", "none")


def ranking_loss_terms(
    query,
    positives,
    negatives,
    positive_mask=None,
    negative_mask=None,
    margin: float = DEFAULT_MARGIN,
):
    """Hinge terms `max(0, min_i d²(q, p_i) + m − d²(q, n_j))` of each tuple, `(B, N)`.

    Args:
        query: `(B, dim)` query descriptors.
        positives: `(B, P, dim)` potential positives; the nearest one counts.
        negatives: `(B, N, dim)` negatives.
        positive_mask: `(B, P)`, true where a positive is real (tuples padded to P).
        negative_mask: `(B, N)`, true where a negative is real; padded terms are 0.
        margin: m, on squared Euclidean distances.

    Returns:
        `(B, N)` hinge terms; 0 for padded negatives.

    Example:
    >>> import numpy as np
    >>> q = np.array([[0.0, 0.0]]); p = np.array([[[0.1, 0.0]]]); n = np.array([[[0.2, 0.0], [1.0, 0.0]]])
    >>> np.asarray(ranking_loss_terms(q, p, n)).round(4).tolist()
    [[0.07, 0.0]]
    """
    query = ops.convert_to_tensor(query)
    positive_distances = ops.sum(ops.square(positives - query[:, None]), axis=-1)
    if positive_mask is not None:
        # A padded positive must never be the nearest one.
        positive_distances = ops.where(
            ops.cast(positive_mask, "bool"), positive_distances, ops.full_like(positive_distances, 1e30)
        )
    nearest_positive = ops.min(positive_distances, axis=1)
    negative_distances = ops.sum(ops.square(negatives - query[:, None]), axis=-1)
    terms = ops.relu(nearest_positive[:, None] + margin - negative_distances)
    if negative_mask is not None:
        terms = terms * ops.cast(negative_mask, terms.dtype)
    return terms


def reduce_ranking_loss(terms, negative_mask=None, normalization: str = "violating"):
    """Sums hinge terms into one loss value.

    `"violating"` divides by the number of violating triplets (terms > 0), as the authors'
    code does: the loss stays on the scale of one triplet as mining makes violations rare.
    `"all"` divides by the number of real triplets (the PyTorch ports' choice: the loss shrinks
    as fewer triplets violate the margin). `"none"` returns the plain sum of Eq. 7.

    Inside a `tf.distribute` replica the count is the global batch's (summed over the
    replicas), so the replicas' losses add up to the loss of the whole batch on one device
    and their summed gradients equal its gradient.

    Args:
        terms: `(B, N)` hinge terms from `ranking_loss_terms`.
        negative_mask: `(B, N)`, 1 for real negatives and 0 for padding; None: all real.
        normalization: `"violating"`, `"all"` or `"none"`.

    Returns:
        A float32 scalar.

    Reference: arXiv 1511.07247, Sec. 4, Eq. 7 (the sum); the normalisation follows the
    authors' training code.

    Example:
    >>> import numpy as np
    >>> float(reduce_ranking_loss(np.array([[0.2, 0.0, 0.4]]), normalization="violating"))
    0.30000001192092896
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization {normalization!r}; use one of {NORMALIZATIONS}.")
    terms = ops.convert_to_tensor(terms, dtype="float32")
    total = ops.sum(terms)
    if normalization == "none":
        return total
    if normalization == "violating":
        count = ops.sum(ops.cast(terms > 0, terms.dtype))
    elif negative_mask is None:
        count = ops.cast(ops.size(terms), terms.dtype)
    else:
        count = ops.sum(ops.cast(negative_mask, terms.dtype))
    replica_context = tf.distribute.get_replica_context()
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        count = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return total / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="netvlad_tf")
class RankingLoss(keras.losses.Loss):
    """The paper's ranking loss (Sec. 4, Eq. 7) for `model.compile`: the number of positives
    comes from each batch.

    `PlaceRecognitionModel.fit` scores a batch with `tuple_loss`, which takes the query, the
    positives and the negatives apart, so P and N are read from their shapes: tuples with
    three potential positives need no argument. `num_positives`, when given, is a check: a
    batch with another P is an error, never re-split.

    Called as a plain Keras loss, `y_pred` is one packed tensor per tuple,
    `(B, 1 + P + N, dim)` (the query, its P positives, then N negatives) and `y_true` its
    `(B, 1 + P + N)` mask of real (non-padded) entries; a packed tensor does not say where
    the positives end, so that form needs `num_positives`.

    Args:
        num_positives: P, or None to take it from each batch (packed calls need it).
        margin: m of Eq. 7, on squared Euclidean distances.
        normalization: `"violating"`, `"all"` or `"none"` (see `reduce_ranking_loss`).

    Example:
    >>> import numpy as np
    >>> q = np.array([[0.0, 0.0]])
    >>> p = np.array([[[0.3, 0.0], [0.1, 0.0]]]); n = np.array([[[0.2, 0.0]]])
    >>> round(float(RankingLoss().tuple_loss(q, p, n)), 4)
    0.07
    >>> packed = np.array([[[0.0, 0.0], [0.1, 0.0], [0.2, 0.0]]])
    >>> round(float(RankingLoss(num_positives=1)(np.ones((1, 3)), packed)), 4)
    0.07
    """

    def __init__(
        self,
        num_positives: int | None = None,
        margin: float = DEFAULT_MARGIN,
        normalization: str = "violating",
        name: str = "ranking_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=None, **kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization {normalization!r}; use one of {NORMALIZATIONS}.")
        if num_positives is not None and (int(num_positives) != num_positives or num_positives < 1):
            raise ValueError(f"num_positives must be a positive integer or None, got {num_positives!r}.")
        self.num_positives = None if num_positives is None else int(num_positives)
        self.margin = margin
        self.normalization = normalization

    def tuple_loss(self, query, positives, negatives, positive_mask=None, negative_mask=None):
        """The loss of a batch of tuples given apart: P and N come from the shapes.

        Args:
            query: `(B, dim)` query descriptors.
            positives: `(B, P, dim)` potential positives.
            negatives: `(B, N, dim)` negatives.
            positive_mask: `(B, P)`, true where a positive is real.
            negative_mask: `(B, N)`, true where a negative is real.

        Returns:
            The scalar loss.
        """
        batch_positives = positives.shape[1]
        if self.num_positives is not None and batch_positives != self.num_positives:
            raise ValueError(
                f"RankingLoss(num_positives={self.num_positives}) got tuples with "
                f"{batch_positives} positives; leave num_positives unset to take P from the batch."
            )
        terms = ranking_loss_terms(query, positives, negatives, positive_mask, negative_mask, self.margin)
        return reduce_ranking_loss(terms, negative_mask, self.normalization)

    def call(self, y_true, y_pred):
        p = self.num_positives
        if p is None:
            raise ValueError(
                "RankingLoss on a packed (B, 1 + P + N, dim) tensor needs num_positives=P: the "
                "packed tensor does not say where the positives end."
            )
        if y_pred.shape[1] is not None and y_pred.shape[1] < 2 + p:
            raise ValueError(
                f"A packed tuple of {y_pred.shape[1]} descriptors cannot hold a query, "
                f"{p} positives and at least one negative."
            )
        return self.tuple_loss(
            y_pred[:, 0], y_pred[:, 1 : 1 + p], y_pred[:, 1 + p :],
            positive_mask=y_true[:, 1 : 1 + p], negative_mask=y_true[:, 1 + p :],
        )

    def get_config(self):
        return {
            "name": self.name,
            "num_positives": self.num_positives,
            "margin": self.margin,
            "normalization": self.normalization,
        }
