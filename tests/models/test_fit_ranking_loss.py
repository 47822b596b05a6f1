"""`model.fit` as Keras users write it: the loss takes P and N from the batch (paper Eq. 7)."""

import keras
import numpy as np
import pytest

from netvlad_tf import RankingLoss, build_netvlad_model
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 48)
MARGIN = 0.1  # RankingLoss's default m


def eq7_violating_mean(query, positives, negatives, positive_mask, negative_mask, margin=MARGIN):
    """Eq. 7 in NumPy, float64: hinge on the nearest real positive, summed over real negatives,
    divided by the number of violating triplets (the authors' normalisation)."""
    query, positives, negatives = (np.asarray(a, np.float64) for a in (query, positives, negatives))
    total, violating = 0.0, 0
    for b in range(len(query)):
        nearest = min(np.sum((query[b] - positives[b, i]) ** 2)
                      for i in range(positives.shape[1]) if positive_mask[b, i])
        for j in range(negatives.shape[1]):
            if negative_mask[b, j]:
                term = max(0.0, nearest + margin - np.sum((query[b] - negatives[b, j]) ** 2))
                total += term
                violating += term > 0
    return total / max(violating, 1)


def tuple_batch(rng, batch, num_positives, num_negatives):
    images = lambda *shape: rng.uniform(0, 255, size=(*shape, *IMAGE_SIZE, 3)).astype("float32")
    positive_mask = np.ones((batch, num_positives), "float32")
    negative_mask = np.ones((batch, num_negatives), "float32")
    if num_positives > 1:
        positive_mask[0, -1] = 0  # a padded positive: must never count as the nearest
    negative_mask[-1, -2:] = 0  # padded negatives: contribute nothing
    return {
        "query": images(batch),
        "positives": images(batch, num_positives),
        "negatives": images(batch, num_negatives),
        "positive_mask": positive_mask,
        "negative_mask": negative_mask,
    }


@pytest.mark.parametrize("num_positives", [1, 3])
def test_fit_loss_is_eq7_with_the_batch_positives(rng, num_positives):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=RankingLoss())
    batch = tuple_batch(rng, batch=2, num_positives=num_positives, num_negatives=5)
    b, p, n = 2, num_positives, 5
    flat = np.concatenate([batch["query"][:, None], batch["positives"], batch["negatives"]], axis=1)
    descriptors = model.predict(flat.reshape(-1, *IMAGE_SIZE, 3), verbose=0).reshape(b, 1 + p + n, -1)
    # Padded entries hold random images here, so a wrong split or a missed mask changes the value.
    expected = eq7_violating_mean(descriptors[:, 0], descriptors[:, 1 : 1 + p], descriptors[:, 1 + p :],
                                  batch["positive_mask"], batch["negative_mask"])
    assert expected > 0
    tested = model.test_on_batch(batch)
    trained = model.train_on_batch(batch)  # reports the loss before its update
    after = model.test_on_batch(batch)
    assert tested == pytest.approx(expected, rel=1e-5)
    assert trained == pytest.approx(expected, rel=1e-5)
    assert after != pytest.approx(expected, rel=1e-5)  # the step did update the weights


def test_a_num_positives_that_disagrees_with_the_batch_is_an_error(rng):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    model.compile(optimizer="sgd", loss=RankingLoss(num_positives=1))
    with pytest.raises(ValueError, match=r"num_positives=1\) got tuples with 3 positives"):
        model.test_on_batch(tuple_batch(rng, batch=2, num_positives=3, num_negatives=4))


def test_a_packed_tensor_needs_num_positives():
    packed = np.zeros((1, 5, 4), "float32")
    with pytest.raises(ValueError, match="needs num_positives"):
        RankingLoss()(np.ones((1, 5)), packed)
    with pytest.raises(ValueError, match="positive integer"):
        RankingLoss(num_positives=0)


def test_a_loss_scaled_step_equals_the_plain_step(rng):
    """A float16 policy wraps the optimizer in Keras' LossScaleOptimizer, which unscales the
    gradients it applies: the step must take them from the scaled loss (here at float32, so any
    difference is the scaling's, not float16's)."""
    plain = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    scaled = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    scaled.set_weights(plain.get_weights())
    plain.compile(optimizer=keras.optimizers.SGD(0.5), loss=RankingLoss())
    scaled.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5), initial_scale=2.0**12),
                   loss=RankingLoss())
    batch = tuple_batch(rng, batch=2, num_positives=1, num_negatives=5)
    start = plain.get_weights()
    plain.train_on_batch(batch)
    scaled.train_on_batch(batch)
    moved = [after - before for after, before in zip(plain.get_weights(), start)]
    assert max(np.abs(m).max() for m in moved) > 1e-4, "the step did update the weights"
    for expected, got, before in zip(plain.get_weights(), scaled.get_weights(), start):
        np.testing.assert_allclose(got - before, expected - before, rtol=1e-3, atol=1e-6)


def test_a_mixed_float16_step_follows_the_float32_step(rng):
    """`train --mixed_precision` on a GPU: float16 compute, loss scaling, float32 weights. The
    update's direction matches float32's (cosine ≥ 0.99: float16 keeps 11 bits of each
    activation, the loss and its gradient are summed over few tuples here)."""
    reference = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    reference.compile(optimizer=keras.optimizers.SGD(0.5), loss=RankingLoss())
    mixed.compile(optimizer=keras.optimizers.SGD(0.5), loss=RankingLoss())
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)  # what Keras does for float16
    assert mixed.backbone.layers[-1].compute_dtype == "float16" and mixed.pooling.compute_dtype == "float32"
    # Its first scale (2^15) overflows float16 here and the step would be skipped, as it should;
    # a scale that fits shows the step itself.
    mixed.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5), initial_scale=2.0**6),
                  loss=RankingLoss())
    batch = tuple_batch(rng, batch=2, num_positives=1, num_negatives=5)
    start = np.concatenate([w.ravel() for w in reference.get_weights()])
    reference.train_on_batch(batch)
    mixed.train_on_batch(batch)
    expected = np.concatenate([w.ravel() for w in reference.get_weights()]) - start
    got = np.concatenate([w.ravel() for w in mixed.get_weights()]) - start
    assert got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)) >= 0.99
