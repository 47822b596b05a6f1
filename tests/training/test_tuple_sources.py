"""One refresh protocol: every tuple source behind `TupleSource`, the miner's one mode."""

import keras
import numpy as np
import pytest

from netvlad_tf.data.images import load_image
from netvlad_tf.training import (
    FrozenFeatureStore,
    HardNegativeMiner,
    ImageSource,
    PoolFeatureStore,
    TupleSource,
)
from netvlad_tf.training.mining import RefreshPlan
from tests.support.training_data import IMAGE_SIZE, initialised_model, nordland_stretch


def test_every_source_implements_the_interface():
    assert all(issubclass(kind, TupleSource) for kind in (ImageSource, FrozenFeatureStore, PoolFeatureStore))

    class Incomplete(TupleSource):
        def prepare(self, plan, verbose=False):
            return plan

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


@pytest.mark.slow
def test_image_source_descriptors_are_the_models_on_the_plans_images():
    dataset = nordland_stretch(count=10)
    model = initialised_model(dataset)
    source = ImageSource(dataset, IMAGE_SIZE, batch_size=3)
    plan = RefreshPlan(np.array([1, 4, 7]), np.array([0, 9]))
    prepared = source.prepare(plan)
    for part, paths, ids in (("database", dataset.database_paths, [1, 4, 7]), ("queries", dataset.query_paths, [0, 9])):
        images = np.stack([keras.ops.convert_to_numpy(load_image(paths[i], IMAGE_SIZE)) for i in ids])
        np.testing.assert_allclose(source.descriptors(model, prepared, part), model.predict(images, verbose=0),
                                   atol=1e-5)
    np.testing.assert_array_equal(source.query_input(9), load_image(dataset.query_paths[9], IMAGE_SIZE).numpy())
    with pytest.raises(ValueError, match="part must be one of"):
        source.descriptors(model, prepared, "train")


def test_full_mining_hands_out_every_training_query_once_per_pass_across_refreshes():
    dataset = nordland_stretch(count=20)
    miner = HardNegativeMiner(dataset, num_sampled_negatives=5, cache_encoding="float32")
    visited = []
    for _ in range(5):  # a refresh every 8 queries, as CacheRefresh plans them
        plan = miner.plan_refresh(queries_until_next=8)
        assert plan.num_images == dataset.num_database + dataset.num_queries  # the paper: every image
        miner.refresh(np.zeros((dataset.num_database, 2), "float32"), np.zeros((dataset.num_queries, 2), "float32"))
        visited += [miner.next_query() for _ in range(8)]
    # 40 visits: two passes over the 20 training queries, each a permutation.
    assert sorted(visited[:20]) == sorted(visited[20:]) == miner.training_queries.tolist()
    assert visited[:20] != visited[20:] and miner.revisited_queries == 0


def test_a_refresh_interval_beyond_every_query_plans_one_pass_and_goes_on_in_passes():
    """`refresh_every=10**9` (refresh once, as the demo does) plans one pass, not 10⁹ queries."""
    dataset = nordland_stretch(count=12)
    miner = HardNegativeMiner(dataset, num_sampled_negatives=5, cache_encoding="float32")
    miner.plan_refresh(queries_until_next=10**9)
    miner.refresh(np.zeros((dataset.num_database, 2), "float32"), np.zeros((dataset.num_queries, 2), "float32"))
    count = len(miner.training_queries)
    visited = [miner.next_query() for _ in range(3 * count)]
    for start in range(0, 3 * count, count):
        assert sorted(visited[start:start + count]) == miner.training_queries.tolist()
    assert miner.revisited_queries == 0


def test_a_query_before_the_first_refresh_says_to_refresh():
    miner = HardNegativeMiner(nordland_stretch(count=6))
    with pytest.raises(RuntimeError, match="refresh it first.*CacheRefresh.refresh"):
        miner.next_query()
