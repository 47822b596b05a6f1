"""Hard-negative mining on synthetic descriptors with known distances."""

import numpy as np
import pytest

from netvlad_tf.data import GeoDataset
from netvlad_tf.training.mining import DescriptorCache, HardNegativeMiner


def line_dataset(num_database=30):
    """Database every 10 m along a line; one query at 0 m: positives 0 and 1 (≤ 10 m),
    not negatives 0–2 (≤ 25 m), definite negatives 3 onwards."""
    return GeoDataset(
        "line",
        [f"d{i}" for i in range(num_database)],
        [[10.0 * i, 0.0] for i in range(num_database)],
        ["q0"],
        [[0.0, 0.0]],
    )


def miner_with_distances(squared_distances, **kwargs):
    """Descriptors in 1-D so that d²(query, database i) = squared_distances[i]."""
    miner = HardNegativeMiner(line_dataset(len(squared_distances)), cache_precision="float32", **kwargs)
    miner.database_cache.store(np.sqrt(np.asarray(squared_distances, dtype=np.float32))[:, None])
    miner.query_cache.store(np.zeros((1, 1), dtype=np.float32))
    return miner


def test_picks_best_positive_and_hardest_violating_negatives():
    distances = [0.09, 0.01, 0.0] + [0.5] * 27  # index 2 lies within 25 m: never a negative
    distances[5], distances[9], distances[4], distances[20] = 0.03, 0.06, 0.105, 0.2
    miner = miner_with_distances(distances, num_negatives=2, num_sampled_negatives=1000)
    mined = miner.mine(0)
    assert mined.positive == 1  # d² = 0.01 beats 0.09
    # Violating: d² < 0.01 + 0.1 → indices 5 (0.03), 9 (0.06), 4 (0.105); hardest two kept.
    assert mined.negatives.tolist() == [5, 9]
    # The hardest candidates are remembered for the next visit, violating or not.
    assert miner.remembered_negatives[0].tolist() == [5, 9]


def test_remembered_negatives_are_reused():
    distances = [0.01, 0.5, 0.5] + [0.5] * 27
    distances[17] = 0.02
    miner = miner_with_distances(distances, num_negatives=10, num_sampled_negatives=1, seed=3)
    miner.remembered_negatives[0] = np.array([17])
    sampled_alone = miner._sample_definite_negatives  # one random definite negative
    assert len(sampled_alone(0)) == 1
    assert 17 in miner.mine(0).negatives.tolist()


def test_no_violating_negative_skips_the_query():
    miner = miner_with_distances([0.01, 0.5, 0.5] + [1.0] * 10)
    assert miner.mine(0) is None


def test_queries_without_positive_are_dropped():
    dataset = GeoDataset("far", ["d"], [[0, 0]], ["near", "far"], [[5, 0], [500, 0]])
    miner = HardNegativeMiner(dataset)
    assert miner.training_queries.tolist() == [0] and miner.num_dropped == 1
    with pytest.raises(ValueError, match="nothing to train on"):
        HardNegativeMiner(GeoDataset("none", ["d"], [[0, 0]], ["q"], [[500, 0]]))


def test_int8_cache_is_a_quarter_of_float32_and_close(rng):
    descriptors = rng.normal(size=(300, 4096)).astype("float32")
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    compact, exact = DescriptorCache("int8"), DescriptorCache("float32")
    compact.store(descriptors)
    exact.store(descriptors)
    assert compact.bytes_per_vector * 4 == exact.bytes_per_vector == 4096 * 4
    restored = compact.get(np.arange(300))
    value_range = descriptors.max(0) - descriptors.min(0)
    assert np.all(np.abs(restored - descriptors) <= value_range / 255 + 1e-6)
    with pytest.raises(RuntimeError, match="empty"):
        DescriptorCache().get([0])
