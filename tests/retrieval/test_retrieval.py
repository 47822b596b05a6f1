"""Search backends against NumPy brute force; Recall@N against hand-computed cases."""

import numpy as np
import pytest

from netvlad_tf.evaluation import recall_at_n
from netvlad_tf.retrieval import (
    FaissFlatIndex,
    FaissHNSWIndex,
    FaissIVFPQIndex,
    FaissIVFSQ8Index,
    NumpyIndex,
    create_index,
    load_index,
)


def test_recall_hand_computed():
    ranked = np.array([[4, 2, 7], [1, 0, 3], [5, 6, 8], [9, 9, 9]])
    positives = [np.array([2]), np.array([1, 3]), np.array([0]), np.array([], dtype=int)]
    assert recall_at_n(ranked, positives, ns=(1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.5}


def test_recall_against_brute_force_definition(rng):
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(30)])
    positives = [rng.choice(50, size=rng.integers(1, 4), replace=False) for _ in range(30)]
    result = recall_at_n(ranked, positives)
    for n in (1, 5, 10, 20):
        hits = [len(set(ranked[q, :n]) & set(positives[q])) > 0 for q in range(30)]
        assert result[n] == pytest.approx(np.mean(hits))


def test_recall_bad_input():
    with pytest.raises(ValueError, match="one row per query"):
        recall_at_n(np.zeros((2, 3)), [np.array([0])])
    with pytest.raises(ValueError, match=">= 1"):
        recall_at_n(np.zeros((1, 3)), [np.array([0])], ns=(0,))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_faiss_flat_equals_numpy(rng, metric):
    database = rng.normal(size=(500, 32)).astype("float32")
    queries = rng.normal(size=(40, 32)).astype("float32")
    exact, faiss_flat = NumpyIndex(32, metric), FaissFlatIndex(32, metric)
    for index in (exact, faiss_flat):
        index.add(database[:300])
        index.add(database[300:])
    d_exact, i_exact = exact.search(queries, 10)
    d_faiss, i_faiss = faiss_flat.search(queries, 10, batch_size=7)
    np.testing.assert_array_equal(i_faiss, i_exact)
    np.testing.assert_allclose(d_faiss, d_exact, rtol=1e-4, atol=1e-3)
    brute = ((queries[:, None] - database[None]) ** 2).sum(-1) if metric == "l2" else -(queries @ database.T)
    np.testing.assert_array_equal(i_exact, np.argsort(brute, axis=1, kind="stable")[:, :10])


def clustered_unit_vectors(rng, count, dim, centres):
    """Descriptor-like data: unit vectors around cluster centres."""
    points = centres[rng.integers(0, len(centres), count)] + 0.5 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("kind", ["ivfpq", "ivfsq8", "hnsw"])
def test_approximate_backends_find_the_exact_neighbours(rng, kind):
    centres = rng.normal(size=(50, 32))
    database = clustered_unit_vectors(rng, 3000, 32, centres)
    queries = clustered_unit_vectors(rng, 200, 32, centres)
    exact = NumpyIndex(32)
    exact.add(database)
    _, true_neighbours = exact.search(queries, 1)
    index = create_index(kind, 32)
    index.add(database)
    _, found = index.search(queries, 10)
    # 1-recall@10 (the usual ANN measure): the exact nearest neighbour is in the top 10.
    assert np.mean([t in row for t, row in zip(true_neighbours[:, 0], found)]) >= 0.9


def test_ivfpq_needs_enough_training_data(rng):
    with pytest.raises(ValueError, match="at least 256 descriptors"):
        FaissIVFPQIndex(8).add(rng.normal(size=(100, 8)))
    with pytest.raises(ValueError, match="must divide"):
        FaissIVFPQIndex(10, num_subquantizers=4)
    with pytest.raises(ValueError, match="IVF-SQ8 needs at least 256 descriptors"):
        FaissIVFSQ8Index(8).add(rng.normal(size=(100, 8)))


def test_ivfsq8_stores_one_byte_per_dimension(rng, tmp_path):
    index = FaissIVFSQ8Index(64, num_lists=4)
    index.add(rng.normal(size=(2000, 64)).astype("float32"))
    index.save(tmp_path / "sq8")
    flat = FaissFlatIndex(64)
    flat.add(rng.normal(size=(2000, 64)).astype("float32"))
    flat.save(tmp_path / "flat")
    sizes = {name: sum(f.stat().st_size for f in (tmp_path / name).iterdir()) for name in ("sq8", "flat")}
    # 64 bytes of codes + an 8-byte id per vector, against 256 bytes of float32.
    assert sizes["sq8"] < 0.4 * sizes["flat"]


@pytest.mark.parametrize("index_class", [NumpyIndex, FaissFlatIndex, FaissIVFPQIndex, FaissIVFSQ8Index,
                                         FaissHNSWIndex])
def test_save_load_round_trip(rng, tmp_path, index_class):
    database = rng.normal(size=(300, 8)).astype("float32")
    index = index_class(8, model_name="vgg16_netvlad")
    index.add(database)
    index.save(tmp_path / "index")
    reloaded = load_index(tmp_path / "index", expected_dim=8)
    assert type(reloaded) is index_class and reloaded.model_name == "vgg16_netvlad"
    np.testing.assert_array_equal(reloaded.search(database[:5], 1)[1][:, 0], np.arange(5))
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "index")
    with pytest.raises(ValueError, match="holds 8-D descriptors"):
        load_index(tmp_path / "index", expected_dim=16)


def test_corrupt_or_missing_index(tmp_path, rng):
    index = FaissFlatIndex(4)
    index.add(rng.normal(size=(3, 4)))
    index.save(tmp_path / "index")
    (tmp_path / "index" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_index(tmp_path / "index")
    with pytest.raises(FileNotFoundError, match="not a saved index"):
        load_index(tmp_path / "nothing")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfsq8"])
def test_an_index_file_of_another_dimension_than_its_metadata_is_one_line(tmp_path, rng, kind):
    index = create_index(kind, 4)
    index.add(rng.normal(size=(300, 4)))
    index.save(tmp_path / "index")
    other = create_index(kind, 8)
    other.add(rng.normal(size=(300, 8)))
    other.save(tmp_path / "other")
    (tmp_path / "other/index.faiss").replace(tmp_path / "index/index.faiss")
    with pytest.raises(ValueError) as error:
        load_index(tmp_path / "index", expected_dim=4)
    message = str(error.value)
    assert "\n" not in message and f"{tmp_path / 'index' / 'index.faiss'} holds 8-D vectors" in message
    assert "metadata says 4-D" in message


def test_search_errors(rng):
    index = NumpyIndex(4)
    with pytest.raises(ValueError, match="empty"):
        index.search(rng.normal(size=(1, 4)), 1)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        index.add(rng.normal(size=(2, 5)))
