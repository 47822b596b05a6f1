"""Training with `model.fit` on the bundled Nordland images (tiny sizes)."""

import json

import keras
import numpy as np
import pytest

from netvlad_tf import PlaceRecognitionModel, RankingLoss, build_netvlad_model
from netvlad_tf.data import GeoDataset, read_csv_dataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.training import CacheRefresh, FrozenFeatureStore, RecallEvaluation, train, tuple_dataset
from netvlad_tf.training import frozen_features as frozen_features_module
from netvlad_tf.training.mining import HardNegativeMiner
from netvlad_tf.training.overlap import ValidationOverlapWarning, validation_overlap
from tests.support.tiny_backbone import TINY_BACKBONE, TINY_DIM
from tests.support.training_data import IMAGE_SIZE, initialised_model, nordland_stretch, stretch_with_store


def refresh_cache(miner, model, source=IMAGE_SIZE):
    callback = CacheRefresh(miner, source, verbose=False)
    callback.set_model(model)
    callback.refresh()


def test_refresh_refuses_descriptors_of_another_dataset():
    dataset = nordland_stretch(count=6)
    miner = HardNegativeMiner(dataset, cache_encoding="float32")
    with pytest.raises(ValueError, match="6 database images; got database descriptors of shape \\(5, 3\\)"):
        miner.refresh(np.zeros((5, 3)), np.zeros((dataset.num_queries, 3)))


@pytest.mark.slow
def test_a_cache_refreshed_just_before_fit_is_not_refreshed_again():
    dataset = nordland_stretch(count=20)
    model = initialised_model(dataset)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=RankingLoss())
    miner = HardNegativeMiner(dataset, num_negatives=2, num_sampled_negatives=10, cache_encoding="float32")
    callback = CacheRefresh(miner, IMAGE_SIZE, refresh_every=10**6, verbose=False)
    callback.set_model(model)
    callback.refresh()
    tuples = tuple_dataset(miner, IMAGE_SIZE, batch_size=2)
    model.fit(tuples, epochs=1, steps_per_epoch=1, shuffle=False, callbacks=[callback], verbose=0)
    assert callback.refreshes == 1  # fit started with the weights the cache was computed with
    model.fit(tuples, epochs=1, steps_per_epoch=1, shuffle=False, callbacks=[callback], verbose=0)
    assert callback.refreshes == 2  # one step later they had changed


@pytest.mark.slow
def test_fit_steps_lower_the_loss_on_a_fixed_batch():
    dataset = nordland_stretch()
    model = initialised_model(dataset)
    miner = HardNegativeMiner(dataset, num_negatives=5, num_sampled_negatives=30, cache_encoding="float32")
    refresh_cache(miner, model)
    batch = next(iter(tuple_dataset(miner, IMAGE_SIZE, batch_size=4)))
    assert batch["negatives"].shape == (4, 5, *IMAGE_SIZE, 3)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9), loss=RankingLoss(normalization="none"))
    before = model.evaluate(batch, verbose=0)
    model.fit(_repeat(batch, 5), epochs=1, steps_per_epoch=5, shuffle=False, verbose=0)
    after = model.evaluate(batch, verbose=0)
    assert before > 0
    assert after < before


def _repeat(batch, times):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(batch).repeat(times)


@pytest.mark.slow
def test_train_writes_run_and_resumes_after_a_kill(tmp_path):
    dataset = nordland_stretch(count=24)
    model = initialised_model(dataset)
    run_dir = tmp_path / "run"

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    settings = dict(image_size=IMAGE_SIZE, val_dataset=dataset, batch_size=4, num_negatives=3,
                    num_sampled_negatives=10, refresh_every=12, seed=0, verbose=0)
    # Validating on the training data itself: every validation query is a training image.
    with pytest.raises(KeyboardInterrupt), pytest.warns(ValidationOverlapWarning, match="24 of 24 validation queries"):
        train(model, dataset, run_dir=run_dir, epochs=2, extra_callbacks=[KillAfterFirstEpoch()], **settings)
    assert not (run_dir / "last.keras").exists()
    assert (run_dir / "frozen_features" / "metadata.json").is_file(), "kept for the resumed run"

    with pytest.warns(ValidationOverlapWarning):
        resumed = train(initialised_model(dataset), dataset, run_dir=run_dir, epochs=2, **settings)
    # Epoch 1 was finished before the kill, so only epoch 2 runs after resuming; the history
    # holds both.
    assert len(resumed.history["loss"]) == 2
    for name in ("best.keras", "last.keras", "history.json"):
        assert (run_dir / name).is_file()
    assert not (run_dir / "frozen_features").exists(), "the finished run deletes its stored features"
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_recall@5"]) == 2
    counted = len(dataset.queries_with_positives())  # a recall is a count of these queries over their number
    for recall in history["val_recall@5"]:
        assert abs(recall * counted - round(recall * counted)) < 1e-6 and round(recall * counted) <= counted
    reloaded = keras.models.load_model(run_dir / "last.keras")
    assert reloaded.predict(np.zeros((1, *IMAGE_SIZE, 3)), verbose=0).shape == (1, 4 * TINY_DIM)


@pytest.mark.slow
def test_recall_callback_matches_brute_force():
    dataset = nordland_stretch(count=30)
    model = initialised_model(dataset)
    recalls = RecallEvaluation(dataset, IMAGE_SIZE, ns=(1, 5), verbose=False).evaluate(model)
    database = model.predict(np.concatenate(list(image_batches(dataset.database_paths, IMAGE_SIZE))), verbose=0)
    queries = model.predict(np.concatenate(list(image_batches(dataset.query_paths, IMAGE_SIZE))), verbose=0)
    distances = ((queries[:, None] - database[None]) ** 2).sum(-1)
    ranked = np.argsort(distances, axis=1)
    positives = dataset.positives_within(25.0)
    for n in (1, 5):
        expected = np.mean([np.isin(ranked[q, :n], positives[q]).any() for q in range(30)])
        assert recalls[n] == pytest.approx(expected)


def test_mixed_bfloat16_training_step():
    from netvlad_tf import NetVLAD, PlaceRecognitionModel

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        images = keras.Input((None, None, 3))
        backbone = keras.Model(images, keras.layers.Conv2D(8, 3, strides=4)(images))
        model = PlaceRecognitionModel(backbone, NetVLAD(num_clusters=3))
        assert model.pooling.compute_dtype == "bfloat16" and model.pooling.centroids.dtype == "float32"
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=RankingLoss(margin=10.0))
        rng = np.random.default_rng(0)
        batch = {
            "query": rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32"),
            "positives": rng.uniform(0, 255, (2, 1, 16, 16, 3)).astype("float32"),
            "negatives": rng.uniform(0, 255, (2, 2, 16, 16, 3)).astype("float32"),
            "positive_mask": np.ones((2, 1), "float32"),
            "negative_mask": np.ones((2, 2), "float32"),
        }
        before = np.array(model.pooling.centroids)
        logs = model.train_on_batch(batch, return_dict=True)
        assert np.isfinite(logs["loss"]) and logs["loss"] > 0
        assert not np.allclose(np.array(model.pooling.centroids), before)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _pool4(model, paths):
    """The reference: VGG16's block4_pool output of each image, computed from the backbone."""
    pool4 = keras.Model(model.backbone.input, model.backbone.get_layer("block4_pool").output)
    return np.concatenate([np.asarray(pool4(batch)) for batch in image_batches(paths, IMAGE_SIZE)])


@pytest.mark.slow
def test_frozen_feature_store_holds_pool4(tmp_path):
    dataset = nordland_stretch(count=12)
    model = build_netvlad_model(weights=None, num_clusters=4)
    exact = FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f32", "float32", verbose=False)
    half = FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f16", "float16", verbose=False)
    for part, paths in (("database", dataset.database_paths), ("queries", dataset.query_paths)):
        reference = _pool4(model, paths)
        np.testing.assert_allclose(getattr(exact, part), reference, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(getattr(half, part).astype("float32"), reference,
                                   rtol=2**-10, atol=1e-3 * reference.max())
    assert exact.bytes_per_image == 2 * half.bytes_per_image == 4 * (2 * 4 * 512)  # pool4: 1/16 of 32×64


@pytest.mark.slow
def test_frozen_feature_store_reuses_refuses_and_never_half_writes(tmp_path, monkeypatch):
    dataset = nordland_stretch(count=8)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    target = tmp_path / "features"
    FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, target, verbose=False)
    written = (target / "database.npy").stat().st_mtime_ns
    FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, target, verbose=False)
    assert (target / "database.npy").stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="remove it or choose another directory"):
        FrozenFeatureStore.build(model, dataset, (64, 64), target, verbose=False)
    with pytest.raises(ValueError, match=r"image_size must be \(height, width\)"):
        FrozenFeatureStore.build(model, dataset, None, tmp_path / "native", verbose=False)

    def fail_on_queries(trunk, paths, image_size, path, *args):
        if path.stem == "queries":
            raise KeyboardInterrupt
        return original(trunk, paths, image_size, path, *args)

    original = frozen_features_module._write_features
    monkeypatch.setattr(frozen_features_module, "_write_features", fail_on_queries)
    with pytest.raises(KeyboardInterrupt):
        FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "interrupted", verbose=False)
    assert not [entry for entry in tmp_path.iterdir() if "interrupted" in entry.name], "nothing half-written"


def test_frozen_feature_store_checks_free_disk_space(tmp_path, monkeypatch):
    import collections

    dataset = nordland_stretch(count=4)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(frozen_features_module.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    # 8 images × 4·8·16 values (the tiny trunk, stride 8) × 2 bytes = 8192 bytes needed, 1000 free.
    with pytest.raises(OSError, match=r"needs .* GB .*1000 free|needs .* GB.*--nofrozen_features"):
        FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f", verbose=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_frozen_feature_store_refuses_float16_overflow(tmp_path):
    dataset = nordland_stretch(count=4)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    kernel, bias = model.backbone.get_layer("tiny_conv3").get_weights()  # the trunk's last layer
    model.backbone.get_layer("tiny_conv3").set_weights([kernel * 1e6, bias])
    with pytest.raises(ValueError, match="not finite in float16.*float32"):
        FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f16", "float16", verbose=False)
    assert not [entry for entry in tmp_path.iterdir() if "f16" in entry.name], "nothing half-written"
    FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f32", "float32", verbose=False)


@pytest.mark.slow
def test_refresh_and_tuples_from_stored_features_match_images(tmp_path):
    dataset, model, store = stretch_with_store(tmp_path, count=30)
    from_images = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=20, cache_encoding="float32")
    from_store = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=20, cache_encoding="float32")
    refresh_cache(from_images, model)
    refresh_cache(from_store, model, store)
    everything = np.arange(dataset.num_database)
    np.testing.assert_allclose(from_store.database_cache.get(everything),
                               from_images.database_cache.get(everything), atol=1e-6)
    batch = next(iter(tuple_dataset(from_store, store, batch_size=2)))
    assert batch["negative_features"].shape == (2, 3, 4, 8, 16)  # the tiny trunk: stride 8, 16 channels
    query_rows = [int(np.flatnonzero((store.queries == q).all(axis=(1, 2, 3)))[0])
                  for q in np.asarray(batch["query_features"])]
    assert all(q in from_store.training_queries for q in query_rows)
    other_miner = HardNegativeMiner(nordland_stretch(count=20), num_negatives=3, num_sampled_negatives=5)
    with pytest.raises(ValueError, match="does not hold the miner's dataset"):
        tuple_dataset(other_miner, store)


def test_validation_overlap_counts_shared_files_and_same_date_neighbours():
    train_data = GeoDataset("train", ["db/a.jpg"], [[0, 0]], ["q/1.jpg", "q/2.jpg"], [[0, 0], [100, 0]],
                            query_timestamps=np.array([2020, 2021]))
    val = GeoDataset("val", ["db/b.jpg"], [[0, 0]], ["db/a.jpg", "v/1.jpg", "v/2.jpg", "v/3.jpg"],
                     [[500, 0], [5, 0], [104, 0], [300, 0]], query_timestamps=np.array([2020, 2020, 2020, 2020]))
    # db/a.jpg is a training image; v/1.jpg is 5 m from q/1.jpg (same date 2020); v/2.jpg is 4 m
    # from q/2.jpg but that was taken in 2021; v/3.jpg is 200 m from any training query.
    overlap = validation_overlap(train_data, val)
    assert (overlap.same_file, overlap.near_training_query) == (1, 1)
    assert overlap.message(4).startswith("1 of 4 validation queries are training images and 1 more")
    undated = GeoDataset("val", val.database_paths, val.database_utm, val.query_paths, val.query_utm)
    assert validation_overlap(train_data, undated).near_training_query == 2
    assert validation_overlap(train_data, GeoDataset("far", [], [], ["v/9.jpg"], [[900, 0]])).message(1) is None


@pytest.mark.slow
def test_frozen_feature_store_is_refused_above_its_disk_budget_before_writing(tmp_path, monkeypatch):
    import collections

    dataset = nordland_stretch(count=4)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    usage = collections.namedtuple("usage", "total used free")
    # 8 images × 4·8·16 values × 2 bytes = 8192 bytes needed; 10 000 free, so the default
    # budget (half the free space, 5000 bytes) is too small although the disk is not.
    monkeypatch.setattr(frozen_features_module.shutil, "disk_usage", lambda path: usage(10**6, 990_000, 10_000))
    with pytest.raises(OSError, match=r"over the budget of 0.0 GB \(half the free space.*--frozen_features_budget_gb"):
        FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f", verbose=False)
    with pytest.raises(OSError, match=r"over the budget of 0.0 GB \(asked"):
        FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f", verbose=False, budget_gb=6e-6)
    assert list(tmp_path.iterdir()) == []
    store = FrozenFeatureStore.build(model, dataset, IMAGE_SIZE, tmp_path / "f", verbose=False, budget_gb=9e-6)
    assert store.directory.is_dir()


@pytest.mark.slow
def test_a_mining_pool_refreshes_only_its_images_from_the_store_and_trains(tmp_path, capsys):
    dataset, model, store = stretch_with_store(tmp_path, count=40)
    full = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=20, cache_encoding="float32")
    pooled = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=20, cache_encoding="float32",
                               mining_pool=6)
    refresh_cache(full, model)
    callback = CacheRefresh(pooled, store, refresh_every=4, verbose=True)
    callback.set_model(model)
    callback.refresh()
    plan = pooled.plan
    assert len(plan.query_ids) <= 4 + 16 and len(plan.database_ids) < dataset.num_database
    assert f"{len(plan.database_ids)} database images, a pool of 6" in capsys.readouterr().out
    # The pool's rows, computed over the stored features, are the full cache's rows of those images.
    np.testing.assert_allclose(pooled.database_cache.get(np.arange(len(plan.database_ids))),
                               full.database_cache.get(plan.database_ids), atol=1e-6)
    np.testing.assert_allclose(pooled.query_cache.get(np.arange(len(plan.query_ids))),
                               full.query_cache.get(plan.query_ids), atol=1e-6)
    run = train(initialised_model(dataset), dataset, IMAGE_SIZE, tmp_path / "run", epochs=1, steps_per_epoch=4,
                batch_size=2, num_negatives=3, num_sampled_negatives=10, refresh_every=4, mining_pool=6,
                seed=0, verbose=0)
    assert np.isfinite(run.history["loss"]).all() and (run.run_dir / "last.keras").is_file()


@pytest.mark.slow
def test_train_on_place_ids_without_coordinates(tmp_path):
    """Positives share the query's place ID and every negative has another one."""
    from tests.support.place_labels import nordland_by_place_id

    dataset = read_csv_dataset(nordland_by_place_id("train", tmp_path, frames_per_place=30))
    miner = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=20, cache_encoding="float32")
    model = initialised_model(dataset)
    refresh_cache(miner, model)
    checked = 0
    for _ in range(20):
        mined = miner.mine(miner.next_query())
        if mined is None:
            continue
        checked += 1
        place = dataset.query_place_ids[mined.query]
        assert dataset.database_place_ids[mined.positive] == place
        assert all(dataset.database_place_ids[n] != place for n in mined.negatives)
    assert checked > 0
    run = train(model, dataset, IMAGE_SIZE, tmp_path / "run", epochs=1, steps_per_epoch=3, batch_size=2,
                num_negatives=3, num_sampled_negatives=20, seed=0, verbose=0)
    assert np.isfinite(run.history["loss"]).all()


@pytest.mark.slow
def test_a_pool_store_holds_each_refresh_images_trunk_features_and_the_tuples_read_them(tmp_path, monkeypatch):
    import collections

    from netvlad_tf.data.images import load_image
    from netvlad_tf.training.frozen_features import PoolFeatureStore

    dataset = nordland_stretch(count=40)
    model = initialised_model(dataset)
    trunk = model.frozen_split().trunk
    miner = HardNegativeMiner(dataset, num_negatives=3, num_sampled_negatives=10, cache_encoding="float32",
                              mining_pool=6)
    store = PoolFeatureStore(model, dataset, IMAGE_SIZE, tmp_path / "pool", "float32")
    callback = CacheRefresh(miner, store, refresh_every=4, verbose=False)
    callback.set_model(model)

    def trunk_of(path):  # the reference: the frozen layers run on the image itself
        return keras.ops.convert_to_numpy(trunk(load_image(path, IMAGE_SIZE)[None], training=False))[0]

    for refresh in (1, 2):
        callback.refresh()
        plan = miner.plan
        assert sorted(path.name for path in store.directory.iterdir()) == [f"refresh-{refresh:06d}"]
        stored = sum(np.load(path, mmap_mode="r").nbytes for path in store.directory.rglob("*.npy"))
        assert stored == plan.num_images * store.bytes_per_image < dataset.num_database * 2 * store.bytes_per_image
        some = plan.database_ids[::7]
        expected = [trunk_of(dataset.database_paths[i]) for i in some]
        np.testing.assert_allclose([store.database_input(int(i)) for i in some], expected, atol=1e-5)
        # The refresh's descriptors are the whole model's on those images.
        images = np.stack([keras.ops.convert_to_numpy(load_image(dataset.database_paths[i], IMAGE_SIZE)) for i in some])
        np.testing.assert_allclose(miner.database_cache.get(plan.database_rows(some)),
                                   model.predict(images, verbose=0), atol=1e-5)
        # A batch mined under this plan holds its queries' trunk features.
        batch = next(iter(tuple_dataset(miner, store, batch_size=2)))
        for features in np.asarray(batch["query_features"]):
            matches = [q for q in plan.query_ids if np.allclose(store.query_input(int(q)), features)]
            assert len(matches) == 1
            np.testing.assert_allclose(features, trunk_of(dataset.query_paths[matches[0]]), atol=1e-5)

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(frozen_features_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(OSError, match="--frozen_features_budget_gb"):
        callback.refresh()
    assert sorted(path.name for path in store.directory.iterdir()) == ["refresh-000002"], "nothing half-written"


@pytest.mark.slow
def test_training_over_a_pool_store_equals_training_on_the_images(tmp_path):
    """With a mining pool, steps over the pool store's float32 trunk features give the weights of
    steps on the images (the same tuples mined, the same loss)."""
    dataset = nordland_stretch(count=40)
    start = initialised_model(dataset)
    weights = {}
    for name, stored in (("images", False), ("pool_store", True)):
        model = PlaceRecognitionModel.from_config(start.get_config())
        model.set_weights(start.get_weights())
        train(model, dataset, IMAGE_SIZE, tmp_path / name, epochs=1, steps_per_epoch=6, batch_size=2,
              num_negatives=3, num_sampled_negatives=10, refresh_every=4, mining_pool=6, learning_rate=0.1,
              cache_encoding="float32", frozen_features=stored, frozen_feature_dtype="float32", seed=0,
              verbose=0)
        weights[name] = model.get_weights()
        assert not (tmp_path / name / "pool_features").exists()
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(weights["images"], start.get_weights())), \
        "training changed nothing"
    # Same tuples, same steps: the two differ only by float32 sums taken in another order
    # (up to 5e-5 seen with other processes on the cores), well under 1 % of what the steps
    # moved; a tuple read from the wrong row moves them elsewhere.
    for a, b, s in zip(weights["pool_store"], weights["images"], start.get_weights()):
        assert np.abs(a - b).max() <= 0.01 * np.abs(b - s).max() + 1e-7


def test_a_pool_store_clears_an_earlier_runs_refreshes_but_refuses_a_foreign_folder(tmp_path):
    from netvlad_tf.training.frozen_features import PoolFeatureStore

    dataset = nordland_stretch(count=4)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    earlier = tmp_path / "pool"
    (earlier / "refresh-000003").mkdir(parents=True)
    (earlier / ".refresh-000004.123-ab12cd34.partial").mkdir()  # a killed write's staging
    PoolFeatureStore(model, dataset, IMAGE_SIZE, earlier)
    assert list(earlier.iterdir()) == []
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(ValueError, match="holds 'holiday.jpg', which is not a refresh"):
        PoolFeatureStore(model, dataset, IMAGE_SIZE, tmp_path / "photos")
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"mine"
