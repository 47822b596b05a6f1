"""The ranking loss against hand-computed values (arXiv 1511.07247, Eq. 7)."""

import keras
import numpy as np
import pytest

from netvlad_tf import RankingLoss
from netvlad_tf.models.losses import ranking_loss_terms, reduce_ranking_loss

QUERY = np.array([[0.0, 0.0]])


def terms(positives, negatives, **kwargs):
    return np.asarray(ranking_loss_terms(QUERY, np.array([positives]), np.array([negatives]), **kwargs))


def test_nearest_positive_and_hinge():
    # d²(q, p) = 0.09 and 0.01 → min 0.01; negatives at d² = 0.04, 0.25, 1.0.
    found = terms([[0.3, 0.0], [0.1, 0.0]], [[0.2, 0.0], [0.0, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(found, [[0.01 + 0.1 - 0.04, 0.0, 0.0]], atol=1e-7)


def test_tie_at_the_margin_gives_zero():
    # d²(q, n) = d²(q, p) + m exactly: not a violation.
    found = terms([[0.0, 0.5]], [[0.0, np.sqrt(0.35)]])
    np.testing.assert_allclose(found, [[0.0]], atol=1e-7)


def test_no_violating_negative():
    assert terms([[0.1, 0.0]], [[2.0, 0.0], [0.0, 3.0]]).sum() == 0.0


def test_padding_masks():
    found = terms(
        [[0.1, 0.0], [0.3, 0.0]],
        [[0.2, 0.0], [0.0, 0.0]],
        positive_mask=np.array([[0.0, 1.0]]),  # the nearer positive is padding
        negative_mask=np.array([[1.0, 0.0]]),  # the zero negative is padding
    )
    np.testing.assert_allclose(found, [[0.09 + 0.1 - 0.04, 0.0]], atol=1e-7)


def test_normalizations():
    hinge = np.array([[0.2, 0.0, 0.4], [0.0, 0.0, 0.0]], dtype="float32")
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype="float32")
    assert float(reduce_ranking_loss(hinge, mask, "violating")) == pytest.approx(0.6 / 2)
    assert float(reduce_ranking_loss(hinge, mask, "all")) == pytest.approx(0.6 / 5)
    assert float(reduce_ranking_loss(hinge, mask, "none")) == pytest.approx(0.6)
    assert float(reduce_ranking_loss(np.zeros((1, 3)), None, "violating")) == 0.0
    with pytest.raises(ValueError, match="normalization"):
        reduce_ranking_loss(hinge, mask, "mean")


def test_keras_loss_wrapper_and_config(rng):
    packed = rng.normal(size=(3, 1 + 2 + 4, 5)).astype("float32")
    mask = np.ones((3, 7), dtype="float32")
    mask[0, 2] = 0
    mask[1, 5:] = 0
    loss = RankingLoss(num_positives=2, margin=0.3, normalization="all")
    expected = reduce_ranking_loss(
        ranking_loss_terms(packed[:, 0], packed[:, 1:3], packed[:, 3:], mask[:, 1:3], mask[:, 3:], 0.3),
        mask[:, 3:],
        "all",
    )
    assert float(loss(mask, packed)) == pytest.approx(float(expected), rel=1e-6)
    rebuilt = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (rebuilt.num_positives, rebuilt.margin, rebuilt.normalization) == (2, 0.3, "all")
