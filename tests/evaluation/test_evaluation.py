"""evaluate(), its outputs, the baselines and the place index on the bundled Nordland data."""

import json

import numpy as np
import pytest

from netvlad_tf import build_netvlad_model
from netvlad_tf.cli import main
from netvlad_tf.data import GeoDataset, read_csv_dataset
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.evaluation import pixel_descriptors
from netvlad_tf.evaluation.evaluate import evaluate
from netvlad_tf.evaluation.output import write_evaluation
from netvlad_tf.evaluation.recall import first_per_group
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def nordland_small():
    full = read_csv_dataset(nordland_csv("test"))
    part = slice(0, 60)
    conditions = ["dusk" if i % 3 == 0 else "winter" for i in range(60)]
    return GeoDataset("nordland_small", full.database_paths[part], full.database_utm[part],
                      full.query_paths[part], full.query_utm[part], query_conditions=conditions)


def brute_force_recall(database, queries, positives, n):
    ranked = np.argsort(((queries[:, None] - database[None]) ** 2).sum(-1), axis=1, kind="stable")
    return np.mean([np.isin(ranked[q, :n], positives[q]).any() for q in range(len(queries))])


@pytest.mark.slow
def test_pixels_evaluation_against_brute_force(nordland_small):
    result = evaluate(None, nordland_small, ns=(1, 5), baseline="pixels", verbose=False)
    database = pixel_descriptors(nordland_small.database_paths)
    queries = pixel_descriptors(nordland_small.query_paths)
    positives = nordland_small.positives_within(25.0)
    for n in (1, 5):
        assert result.recall[n] == pytest.approx(brute_force_recall(database, queries, positives, n))
    dusk = np.arange(0, 60, 3)
    assert result.recall_by_condition["dusk"][5] == pytest.approx(
        brute_force_recall(database, queries[dusk], [positives[q] for q in dusk], 5)
    )


@pytest.mark.slow
def test_model_evaluation_mac_baseline_and_cache(nordland_small, tmp_path):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    first = evaluate(model.with_pooling("mac"), nordland_small, ns=(1, 5), image_size=IMAGE_SIZE,
                     stored_descriptors=tmp_path / "cache", verbose=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    again = evaluate(model.with_pooling("mac"), nordland_small, ns=(1, 5), image_size=IMAGE_SIZE,
                     stored_descriptors=tmp_path / "cache", verbose=False)
    assert again.recall == first.recall
    np.testing.assert_array_equal(again.ranked, first.ranked)
    assert first.ranked.shape == (60, 5)


@pytest.mark.slow
def test_write_evaluation_outputs(nordland_small, tmp_path):
    result = evaluate(None, nordland_small, baseline="pixels", verbose=False)
    out = write_evaluation(result, nordland_small, tmp_path / "eval", "pixels")
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["recall"]) == {"1", "5", "10", "20"} and saved["num_queries"] == 60
    for png in ("recall_curve.png", "precision_recall.png", "gallery.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert set(saved["precision_recall"]) >= {"auc", "recall_at_100_precision", "recall_at_99_precision",
                                              "threshold_at_99_precision"}
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_evaluation(result, nordland_small, out, "pixels")


@pytest.mark.slow
def test_queries_without_positive_stay_in_precision_recall(nordland_small):
    moved = nordland_small.query_utm.copy()
    moved[:10, 1] += 1000.0  # ten queries of places the database does not hold
    dataset = GeoDataset("moved", nordland_small.database_paths, nordland_small.database_utm,
                         nordland_small.query_paths, moved)
    result = evaluate(None, dataset, baseline="pixels", verbose=False)
    database = pixel_descriptors(dataset.database_paths)
    queries = pixel_descriptors(dataset.query_paths)
    similarities = queries @ database.T
    best = similarities.argmax(axis=1)
    positives = dataset.positives_within(25.0)
    correct = np.array([b in found for b, found in zip(best, positives)])
    # Every query counts: at the lowest threshold all 60 are accepted, the ten new places as
    # false positives; recall is over the 50 that have a positive.
    curve = result.precision_recall
    assert curve.num_queries == 60 and curve.num_without_positive == 10
    assert curve.precision[-1] == pytest.approx(correct.sum() / 60)
    assert curve.recall[-1] == pytest.approx(correct.sum() / 50)
    np.testing.assert_allclose(result.single.best_similarity, similarities.max(axis=1), atol=1e-5)


@pytest.mark.slow
def test_only_wrong_gallery_and_sequences_in_the_output(nordland_small, tmp_path):
    result = evaluate(None, nordland_small, baseline="pixels", sequence_lengths=[3], verbose=False)
    out = write_evaluation(result, nordland_small, tmp_path / "eval", "pixels", only_wrong=True, query_galleries=True)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["sequences"]["3"]) == {"recall", "recall_by_condition", "precision_recall"}
    assert (out / "gallery.png").is_file()
    wrong = {f"{result.query_indices[row]:06d}.png" for row in range(len(result.query_indices))
             if result.ranked[row, 0] not in result.positives[row]}
    assert 0 < len(wrong) < 60 and {path.name for path in (out / "queries").iterdir()} == wrong


def test_queries_without_positives_are_dropped_and_counted(nordland_small):
    moved = nordland_small.query_utm.copy()
    moved[:10, 1] += 1000.0
    dataset = GeoDataset("moved", nordland_small.database_paths, nordland_small.database_utm,
                         nordland_small.query_paths, moved)
    result = evaluate(None, dataset, baseline="pixels", verbose=False)
    assert result.num_dropped == 10 and len(result.query_indices) == 50
    nowhere = GeoDataset("nowhere", ["a"], [[0, 0]], ["b"], [[1e6, 0]])
    with pytest.raises(ValueError, match="no query has a database image"):
        evaluate(None, nowhere, baseline="pixels", verbose=False)
    with pytest.raises(ValueError, match="needs a model"):
        evaluate(None, nordland_small, verbose=False)
    with pytest.raises(ValueError, match=r"model.with_pooling\('mac'\)"):
        evaluate(None, nordland_small, baseline="mac", verbose=False)


def test_panorama_cutouts_count_once():
    ranked = np.array([[5, 4, 9, 1, 0, 2]])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # two cutouts per panorama
    # groups of the ranking: 2, 2, 4, 0, 0, 1 → first of each: 5, 9, 1, 2; then padding.
    assert first_per_group(ranked, groups, keep=5).tolist() == [[5, 9, 1, 2, -1]]


@pytest.mark.slow
def test_index_and_query_commands(tmp_path, capsys):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    model.save(tmp_path / "model.keras")
    full = read_csv_dataset(nordland_csv("test"))
    rows = ["split,image_path,easting,northing"] + [
        f"database,{path},{e},{n}" for path, (e, n) in zip(full.database_paths[:20], full.database_utm[:20])
    ]
    (tmp_path / "places.csv").write_text("\n".join(rows) + "\n")
    assert main(["netvlad-tf", "index", f"--model={tmp_path / 'model.keras'}",
                 f"--dataset={tmp_path / 'places.csv'}", f"--output={tmp_path / 'index'}",
                 "--image_size=32,64"]) == 0
    photo = full.database_paths[7]
    capsys.readouterr()
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", "--json", "--top_k=3", photo]) == 0
    matches = json.loads(capsys.readouterr().out)[photo]
    assert matches[0]["image_path"] == photo
    assert matches[0]["easting"] == full.database_utm[7, 0] and len(matches) == 3

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", str(broken)]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path}", photo]) == 1
    assert "not a place index" in capsys.readouterr().err


def test_index_of_another_model_is_rejected(tmp_path):
    full = read_csv_dataset(nordland_csv("test"))
    database = GeoDataset("db", full.database_paths[:4], full.database_utm[:4], [], [])
    places = PlaceIndex.build(build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac"), database,
                              image_size=IMAGE_SIZE, verbose=False)
    places.runner = ModelRunner(build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=2))  # 32-D, index 16-D
    places.save(tmp_path / "mismatch")
    with pytest.raises(ValueError, match="16-D descriptors"):
        PlaceIndex.load(tmp_path / "mismatch")


def test_a_truncated_descriptor_cache_entry_is_named(nordland_small, tmp_path):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    evaluate(model, nordland_small, ns=(1,), image_size=IMAGE_SIZE, stored_descriptors=tmp_path, verbose=False)
    entry = sorted(tmp_path.glob("database-*.npy"))[0]
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"Descriptor cache {entry} is damaged.*delete it"):
        evaluate(model, nordland_small, ns=(1,), image_size=IMAGE_SIZE, stored_descriptors=tmp_path, verbose=False)


@pytest.mark.slow
def test_recall_on_place_ids_counts_a_retrieval_of_the_same_place(tmp_path, capsys):
    """No coordinates: a query is right at N when one of its first N results carries its
    place ID (NumPy below, from the ranking alone); `netvlad-tf evaluate` takes the CSV too."""
    from tests.support.place_labels import nordland_by_place_id

    csv_path = nordland_by_place_id("test", tmp_path, frames_per_place=30)
    dataset = read_csv_dataset(csv_path)
    assert not dataset.has_coordinates
    result = evaluate(None, dataset, baseline="pixels", ns=(1, 5, 10), verbose=False)
    query_places = dataset.query_place_ids[result.query_indices]
    for n in (1, 5, 10):
        hits = (dataset.database_place_ids[result.ranked[:, :n]] == query_places[:, None]).any(axis=1)
        assert result.recall[n] == pytest.approx(hits.mean())
    assert 0 < result.recall[1] < result.recall[10] < 1  # places of three frames: not trivial
    assert main(["netvlad-tf", "evaluate", f"--dataset={csv_path}", "--baseline=pixels",
                 f"--output={tmp_path / 'out'}"]) == 0


def test_a_baseline_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["netvlad-tf", "evaluate", f"--dataset={nordland_csv('test')}", "--baseline=mac",
                 f"--output={tmp_path / 'out'}"]) == 1
    assert "--baseline=mac needs --model" in capsys.readouterr().err


@pytest.mark.slow
def test_a_place_index_of_place_labelled_images_builds_and_answers(tmp_path, capsys):
    """Without coordinates the index keeps null for them (places.json stays strict JSON) and
    still answers with the images."""
    from tests.support.place_labels import nordland_by_place_id

    csv_path = nordland_by_place_id("test", tmp_path)
    model_path = tmp_path / "model.keras"
    build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4).save(model_path)
    assert main(["netvlad-tf", "index", f"--model={model_path}", f"--dataset={csv_path}",
                 f"--output={tmp_path / 'index'}", "--image_size=32,64"]) == 0
    photo = read_csv_dataset(csv_path).query_paths[0]
    capsys.readouterr()
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", photo, "--top_k=2"]) == 0
    assert capsys.readouterr().out.count("unknown") == 4  # two answers, no easting or northing

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    places = json.loads((tmp_path / "index" / "places.json").read_text(), parse_constant=refuse)
    assert all(pair == [None, None] for pair in places["coordinates"])
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", photo, "--top_k=1", "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out, parse_constant=refuse)[photo]
    assert answer["easting"] is None and answer["northing"] is None and answer["rank"] == 1


def test_a_place_index_of_any_keras_model_saves_and_loads(tmp_path):
    """`index --model` takes any Keras model from images to descriptors; the saved index loads back."""
    import keras

    images = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(8, 3, strides=4)(keras.layers.Rescaling(1 / 255)(images))
    model = keras.Model(images, keras.layers.UnitNormalization()(keras.layers.GlobalAveragePooling2D()(features)))
    full = read_csv_dataset(nordland_csv("test"))
    database = GeoDataset("db", full.database_paths[:6], full.database_utm[:6], [], [])
    PlaceIndex.build(model, database, image_size=IMAGE_SIZE, verbose=False).save(tmp_path / "plain")
    loaded = PlaceIndex.load(tmp_path / "plain")
    assert loaded.query([full.database_paths[4]], top_k=1)[0][0].image_path.endswith(full.database_paths[4].split("/")[-1])
