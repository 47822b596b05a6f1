"""Stored patch features: equal to computed ones, resumable and healed like the global shards,
and read by a place index's re-ranking."""

import json

import numpy as np
import pytest

from netvlad_tf import PlaceIndex, embed_database
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.database.patch_shards import PATCHES_FOLDER, StoredPatches
from netvlad_tf.database.shards import DescriptorFolderError
from netvlad_tf.reranking.patch_descriptors import PatchDescriber
from netvlad_tf.reranking.reranker import Reranker
from netvlad_tf.sample_data import nordland_csv

IMAGE_SIZE = (96, 128)  # a 6×8 map of the tiny backbone: room for 5×5 patches


@pytest.fixture(scope="module")
def route():
    dataset = read_csv_dataset(nordland_csv("test"))
    return dataset.select(range(11), range(3))


def embed(model_file, route, output, **options):
    return embed_database(model_file, route.database_paths, route.database_utm, output, image_size=IMAGE_SIZE, shard_size=4,
                          verbose=False, patch_features="speed", **options)


def stored(folder, count):
    return StoredPatches(folder / PATCHES_FOLDER, range(count), [0, 4, 8]).features(range(count))


def test_stored_patches_equal_computed_ones(model_file, route, tmp_path):
    import keras

    folder = embed(model_file, route, tmp_path / "db", patch_dtype="float32")
    describer = PatchDescriber(keras.saving.load_model(model_file), "speed")
    computed = dict(describer.describe_images(route.database_paths, IMAGE_SIZE))
    for position, features in enumerate(stored(folder, route.num_database)):
        assert features.image_size == IMAGE_SIZE
        np.testing.assert_allclose(features.descriptors[0], computed[position].descriptors[0], atol=1e-6)
    half = embed(model_file, route, tmp_path / "half")  # float16: half the disk, close
    assert (half / PATCHES_FOLDER / "shard-000000.npy").stat().st_size < 0.6 * (
        folder / PATCHES_FOLDER / "shard-000000.npy").stat().st_size
    np.testing.assert_allclose(stored(half, 3)[2].descriptors[0], computed[2].descriptors[0], atol=2e-3)


def test_a_resumed_patch_embedding_equals_an_uninterrupted_one(model_file, route, tmp_path):
    whole = embed(model_file, route, tmp_path / "whole")

    def killed_at_shard_two(shard):
        if shard == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed(model_file, route, tmp_path / "resumed", on_shard_start=killed_at_shard_two)
    (tmp_path / "resumed" / PATCHES_FOLDER / "shard-000001.json").unlink()  # a patch shard lost: healed
    resumed = embed(model_file, route, tmp_path / "resumed")
    for a, b in zip(stored(whole, route.num_database), stored(resumed, route.num_database)):
        np.testing.assert_array_equal(a.descriptors[0], b.descriptors[0])


def test_a_resume_with_other_patch_settings_is_refused(model_file, route, tmp_path):
    embed(model_file, route, tmp_path / "db")
    with pytest.raises(DescriptorFolderError, match="other patch features"):
        embed_database(model_file, route.database_paths, route.database_utm, tmp_path / "db", image_size=IMAGE_SIZE,
                       shard_size=4, verbose=False)


def test_a_place_index_reranks_from_its_stored_patches_as_from_computed_ones(model_file, route, tmp_path):
    folder = embed(model_file, route, tmp_path / "db", patch_dtype="float32")
    places = PlaceIndex.from_descriptors(folder, verbose=False)
    places.save(tmp_path / "index")
    loaded = PlaceIndex.load(tmp_path / "index")
    assert loaded.stored_patches_fit("speed") and not loaded.stored_patches_fit("performance")
    photo = [route.database_paths[6]]
    from_storage = loaded.query(photo, top_k=5, rerank="speed", rerank_top_k=8, patches="stored")[0]
    computed = loaded.query(photo, top_k=5, rerank="speed", rerank_top_k=8, patches="computed")[0]
    assert [m.image_path for m in from_storage] == [m.image_path for m in computed]
    assert [m.verification for m in from_storage] == pytest.approx([m.verification for m in computed], abs=1e-6)
    assert from_storage[0].image_path == photo[0] and from_storage[0].verification == pytest.approx(1.0)


def test_bad_reranking_requests_are_one_clear_line(model_file, route, tmp_path):
    folder = embed_database(model_file, route.database_paths, route.database_utm, tmp_path / "plain", image_size=IMAGE_SIZE,
                            shard_size=4, verbose=False)
    places = PlaceIndex.from_descriptors(folder, verbose=False)
    photo = [route.database_paths[0]]
    with pytest.raises(ValueError, match="has no stored patch features; re-ranking with 'speed' from storage"):
        places.query(photo, rerank="speed", patches="stored")
    with pytest.raises(ValueError, match="rerank_top_k must be at least 1"):
        places.query(photo, rerank="speed", rerank_top_k=0)
    reranker = Reranker(places.model, "speed")
    query = next(iter(reranker.describer.describe_images(photo, IMAGE_SIZE)))[1]
    with pytest.raises(ValueError, match="at least one candidate"):
        reranker.rerank(query, [])
    with pytest.raises(ValueError, match="larger than the 2×4 feature map"):
        next(iter(reranker.describer.describe_images(photo, (32, 64))))
    places.query(photo, top_k=2, rerank="speed", rerank_top_k=3)  # computed on the fly: works
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "patch_features" not in manifest
