"""Hard-negative mining on synthetic descriptors with known distances."""

import numpy as np
import pytest

from netvlad_tf.data import GeoDataset
from netvlad_tf.training.mining import DescriptorCache, HardNegativeMiner, RefreshPlan


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
    miner = HardNegativeMiner(line_dataset(len(squared_distances)), cache_encoding="float32", **kwargs)
    miner.refresh(np.sqrt(np.asarray(squared_distances, dtype=np.float32))[:, None], np.zeros((1, 1), np.float32))
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


def test_sq8_cache_is_a_quarter_of_float32_and_close(rng):
    descriptors = rng.normal(size=(300, 4096)).astype("float32")
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    compact, exact = DescriptorCache("sq8"), DescriptorCache("float32")
    compact.store(descriptors)
    exact.store(descriptors)
    assert compact.bytes_per_vector * 4 == exact.bytes_per_vector == 4096 * 4
    restored = compact.get(np.arange(300))
    value_range = descriptors.max(0) - descriptors.min(0)
    assert np.all(np.abs(restored - descriptors) <= value_range / 255 + 1e-6)
    with pytest.raises(RuntimeError, match="empty"):
        DescriptorCache().get([0])


def street_dataset(num_database, num_queries=20):
    """Database every 10 m along a street; query q at 100·q m: positives within 10 m."""
    return GeoDataset(
        "street",
        [f"d{i}" for i in range(num_database)],
        [[10.0 * i, 0.0] for i in range(num_database)],
        [f"q{q}" for q in range(num_queries)],
        [[100.0 * q, 0.0] for q in range(num_queries)],
    )


def test_a_pool_plans_random_images_plus_the_upcoming_queries_positives():
    dataset = street_dataset(20_000, num_queries=100)
    miner = HardNegativeMiner(dataset, mining_pool=50, num_sampled_negatives=10, seed=1)
    plan = miner.plan_refresh(queries_until_next=40)
    # The queries due before the next refresh and 16 more: 56 of the 100.
    assert len(plan.query_ids) == 56
    expected_positives = {i for q in plan.query_ids for i in (10 * q - 1, 10 * q, 10 * q + 1) if 0 <= i}
    assert expected_positives <= set(plan.database_ids.tolist())
    # 50 random images and at most 3 positives per planned query: the pool, not the database.
    assert 50 <= len(plan.database_ids) <= 50 + 3 * 56
    assert np.all(np.diff(plan.database_ids) > 0)
    with pytest.raises(ValueError, match="plans 56 query images"):
        miner.refresh(np.zeros((len(plan.database_ids), 2), "float32"), np.zeros((100, 2), "float32"))


def test_a_pool_mines_from_its_own_images_like_the_full_formula():
    """The tuple equals the paper's rule (NumPy below) applied to the pool's images only."""
    rng = np.random.default_rng(5)
    dataset = street_dataset(600, num_queries=30)
    descriptors = rng.normal(size=(600, 8)).astype("float32")
    query_descriptors = rng.normal(size=(30, 8)).astype("float32")
    miner = HardNegativeMiner(dataset, mining_pool=40, num_negatives=3, num_sampled_negatives=1000,
                              cache_encoding="float32", margin=20.0)
    plan = miner.plan_refresh(queries_until_next=2)
    miner.refresh(descriptors[plan.database_ids], query_descriptors[plan.query_ids])
    query = miner.next_query()
    assert query in plan.query_ids
    mined = miner.mine(query)
    d2 = ((descriptors - query_descriptors[query]) ** 2).sum(1)
    positives = dataset.positives_within(10.0)[query]
    definite = [i for i in plan.database_ids if abs(10 * i - 100 * query) > 25]
    expected_negatives = [i for i in sorted(definite, key=lambda i: d2[i]) if d2[i] < d2[positives].min() + 20.0][:3]
    assert mined.positive == positives[np.argmin(d2[positives])]
    assert mined.negatives.tolist() == expected_negatives
    with pytest.raises(ValueError, match="no cached descriptor"):
        miner.mine(next(q for q in range(30) if q not in plan.query_ids))


def test_a_pool_visits_every_query_across_refreshes_and_stays_bounded():
    dataset = street_dataset(5000, num_queries=30)
    miner = HardNegativeMiner(dataset, mining_pool=100, num_sampled_negatives=5, seed=2)
    visited, sizes = [], []
    for _ in range(10):  # a refresh every 6 queries, as CacheRefresh does
        plan = miner.plan_refresh(queries_until_next=6)
        sizes.append(len(plan.database_ids))
        miner.refresh(np.zeros((len(plan.database_ids), 4), "float32"), np.zeros((len(plan.query_ids), 4), "float32"))
        visited += [miner.next_query() for _ in range(6)]
    # 60 visits: each of the 30 queries twice (two passes), none lost between plans.
    assert sorted(visited) == sorted(list(range(30)) * 2)
    assert max(sizes) <= 100 + 3 * 22 and miner.revisited_queries == 0


def test_a_pool_at_least_the_database_is_full_mining():
    dataset = street_dataset(40, num_queries=2)
    miner = HardNegativeMiner(dataset, mining_pool=40)
    assert miner.mining_pool is None and len(miner.plan_refresh(5).database_ids) == 40
    with pytest.raises(ValueError, match="mining_pool"):
        HardNegativeMiner(dataset, mining_pool=0)


def test_a_plan_gives_the_rows_of_its_images_and_refuses_others():
    plan = RefreshPlan(np.array([2, 5, 9]), np.array([0, 4]))
    assert plan.database_rows([9, 2]).tolist() == [2, 0] and plan.query_rows([4]).tolist() == [1]
    with pytest.raises(ValueError, match="Database image 6 is not in the refresh plan"):
        plan.database_rows([5, 6])
    with pytest.raises(ValueError, match="Query 7 is not in the refresh plan"):
        plan.query_rows([7])
