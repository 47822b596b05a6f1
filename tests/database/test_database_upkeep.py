"""A descriptor folder in production: unreadable images are skipped, listed and retried; a
damaged shard is found and embedded again on resume; rows appended to the plan are embedded
alone and added to an index without a rebuild. References: the in-RAM embedding of the images
that read (`embed_images`) and indices built from scratch."""

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from netvlad_tf import build_netvlad_model, embed_database, read_descriptors
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.database.shard_writer import UnreadableImagesError
from netvlad_tf.database.shards import DescriptorFolderError
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.retrieval import create_index
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4).save(path)
    return path


@pytest.fixture(scope="module")
def reference(model_file):
    """Every one of the first 30 database images of the bundled test set, embedded in RAM."""
    dataset = read_csv_dataset(nordland_csv("test"))
    paths, coordinates = dataset.database_paths[:30], dataset.database_utm[:30]
    return paths, coordinates, embed_images(keras.saving.load_model(model_file), paths, IMAGE_SIZE, verbose=False)


@pytest.fixture
def images(reference, tmp_path):
    """Copies of the 30 images that a test may delete or truncate."""
    folder = tmp_path / "images"
    folder.mkdir()
    copies = []
    for path in reference[0]:
        copies.append(str(shutil.copy(path, folder)))
    return copies


def embed(model_file, paths, coordinates, output, **options):
    return embed_database(model_file, paths, coordinates, output, image_size=IMAGE_SIZE, shard_size=5, verbose=False,
                          **options)


def break_two(images, tmp_path):
    """Deletes image 3 (kept aside) and truncates image 12 (its bytes kept); returns a restorer."""
    deleted = shutil.move(images[3], tmp_path / "aside.png")
    truncated = Path(images[12])
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])

    def restore():
        shutil.move(deleted, images[3])
        truncated.write_bytes(whole)

    return restore


@pytest.mark.slow
def test_unreadable_images_are_skipped_listed_left_out_and_retried(model_file, reference, images, tmp_path):
    _, coordinates, expected = reference
    restore = break_two(images, tmp_path)
    folder = embed(model_file, images, coordinates, tmp_path / "db", max_unreadable=0.5)
    table = read_descriptors(folder)
    readable = [row for row in range(30) if row not in (3, 12)]
    assert table.row_ids.tolist() == readable and table.num_missing == 2
    assert table.image_paths == [images[row] for row in readable]
    np.testing.assert_allclose(table.descriptors, expected[readable], atol=1e-5)
    np.testing.assert_array_equal(table.coordinates, coordinates[readable])
    with open(folder / "missing.csv", newline="") as file:
        listed = list(csv.DictReader(file))
    assert [(int(row["row_id"]), row["image_path"]) for row in listed] == [(3, images[3]), (12, images[12])]
    assert "does not exist" in listed[0]["reason"] and "not a valid" in listed[1]["reason"]
    places = PlaceIndex.from_descriptors(folder, verbose=False)
    assert places.image_paths == [images[row] for row in readable] and places.index.size == 28
    best = places.query([images[20]], top_k=1)[0][0]
    assert best.image_path == images[20]

    restore()
    retried = []
    embed(model_file, images, coordinates, folder, retry_missing=True, on_shard_start=retried.append)
    assert retried == [], "a retry re-reads the missing rows only, not whole shards"
    table = read_descriptors(folder)
    assert table.num_missing == 0 and not (folder / "missing.csv").exists()
    np.testing.assert_allclose(table.descriptors, expected, atol=1e-5)


def test_a_lost_image_store_stops_the_run_and_stop_mode_names_the_image(model_file, reference, images, tmp_path):
    _, coordinates, _ = reference
    shutil.rmtree(tmp_path / "images")  # the mount is gone: every image fails
    with pytest.raises(UnreadableImagesError, match=r"shard-000000.parquet: 5 of 5 images cannot be read .*"
                                                    r"--max_unreadable=0.1 .*mounted"):
        embed(model_file, images, coordinates, tmp_path / "db")
    assert not list((tmp_path / "db/shards").iterdir()), "nothing is written for a refused shard"
    with pytest.raises(FileNotFoundError, match=f"Image {images[0]} does not exist"):
        embed(model_file, images, coordinates, tmp_path / "stop", on_unreadable="stop")


@pytest.mark.slow
def test_one_bad_image_in_a_shard_is_within_the_default_share(model_file, reference, images, tmp_path):
    _, coordinates, _ = reference
    (tmp_path / "images" / images[7].rsplit("/", 1)[1]).unlink()
    folder = embed_database(model_file, images, coordinates, tmp_path / "db", image_size=IMAGE_SIZE, shard_size=10,
                            verbose=False)  # 1 of 10 images: exactly the default 0.1, allowed
    assert read_descriptors(folder).num_missing == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "other rows"])
def test_rerunning_embed_heals_a_damaged_shard(model_file, reference, tmp_path, damage, capsys):
    paths, coordinates, expected = reference
    folder = embed(model_file, paths, coordinates, tmp_path / "db")
    shard = folder / "shards/shard-000002.parquet"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        shutil.copy(folder / "shards/shard-000001.parquet", shard)
    with pytest.raises(DescriptorFolderError, match="shard-000002.parquet .*rerun the `netvlad-tf embed` command"):
        PlaceIndex.from_descriptors(folder, verbose=False)
    started = []
    embed_database(model_file, paths, coordinates, folder, image_size=IMAGE_SIZE, shard_size=5, on_shard_start=started.append)
    assert started == [2]
    assert "shard-000002.parquet" in capsys.readouterr().out
    np.testing.assert_allclose(read_descriptors(folder).descriptors, expected, atol=1e-5)


@pytest.mark.slow
def test_rows_appended_to_the_plan_are_embedded_alone_as_new_shards(model_file, reference, tmp_path):
    paths, coordinates, expected = reference
    folder = embed(model_file, paths[:13], coordinates[:13], tmp_path / "db")
    started = []
    embed(model_file, paths, coordinates, folder, on_shard_start=started.append)
    assert started == [3, 4, 5, 6], "rows 13–29 in new shards; the short shard of rows 10–12 is kept"
    table = read_descriptors(folder)
    assert table.image_paths == list(paths)
    np.testing.assert_allclose(table.descriptors, expected, atol=1e-5)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(s["first_row"], s["num_rows"]) for s in manifest["segments"]] == [(0, 13), (13, 17)]
    edited = list(paths)
    edited[4] = paths[29]
    with pytest.raises(DescriptorFolderError, match="another num_rows, rows_sha256"):
        embed(model_file, edited + list(paths[:5]), np.concatenate([coordinates, coordinates[:5]]), folder)
    with pytest.raises(DescriptorFolderError, match="another num_rows, rows_sha256"):
        embed(model_file, paths[:20], coordinates[:20], folder)


@pytest.mark.slow
def test_an_updated_place_index_answers_like_a_rebuilt_one(model_file, reference, images, tmp_path):
    _, coordinates, _ = reference
    (tmp_path / "images" / images[16].rsplit("/", 1)[1]).unlink()  # a missing row among the appended ones
    folder = embed(model_file, images[:13], coordinates[:13], tmp_path / "db")
    PlaceIndex.from_descriptors(folder, verbose=False).save(tmp_path / "index")
    embed(model_file, images, coordinates, folder, max_unreadable=0.5)
    updated = PlaceIndex.load(tmp_path / "index")
    assert updated.add_appended(folder, verbose=False) == 16
    updated.save(tmp_path / "index", overwrite=True)
    updated = PlaceIndex.load(tmp_path / "index")
    rebuilt = PlaceIndex.from_descriptors(folder, verbose=False)
    assert updated.image_paths == rebuilt.image_paths and len(rebuilt.image_paths) == 29
    np.testing.assert_array_equal(updated.coordinates, rebuilt.coordinates)
    queries = read_descriptors(folder).descriptors + 0.01
    for expected, got in zip(rebuilt.index.search(queries, 5), updated.index.search(queries, 5)):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="first 30 rows of .* are not the ones"):
        updated.add_appended(embed(model_file, images[1:], coordinates[1:], tmp_path / "other", max_unreadable=0.5))


def test_an_ivf_index_grows_in_its_trained_lists_and_says_when_to_retrain():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2400, 16)).astype(np.float32)
    grown = create_index("ivfsq8", 16, num_lists=8)
    grown.add(vectors[:600])
    assert grown.retrain_advice() is None
    grown.add(vectors[600:])
    reference = create_index("ivfsq8", 16, num_lists=8)
    reference.train(vectors[:600])
    reference.add(vectors)
    np.testing.assert_array_equal(grown.search(vectors[::50], 5)[1], reference.search(vectors[::50], 5)[1])
    assert "2400 vectors in 8 inverted lists" in grown.retrain_advice()


@pytest.mark.slow  # eight commands end to end; the API tests above cover each behaviour
def test_the_command_line_skips_retries_appends_and_updates(model_file, reference, images, tmp_path, capsys):
    from netvlad_tf.cli import main

    _, coordinates, _ = reference

    def write_csv(path, count):
        with open(path, "w", newline="") as file:
            table = csv.writer(file)
            table.writerow(["split", "image_path", "easting", "northing"])
            table.writerows(["database", image, *utm] for image, utm in zip(images[:count], coordinates[:count]))
        return path

    restore = break_two(images, tmp_path)
    common = [f"--model={model_file}", f"--output={tmp_path / 'db'}", "--image_size=32,64", "--shard_size=10"]
    embed_cli = ["netvlad-tf", "embed", f"--dataset={write_csv(tmp_path / 'first.csv', 20)}", *common]
    assert main(embed_cli) == 0
    assert "Embedded 18 of 20 images" in capsys.readouterr().out
    assert main(["netvlad-tf", "index", f"--descriptors={tmp_path / 'db'}", f"--output={tmp_path / 'index'}"]) == 0
    restore()
    assert main([*embed_cli, "--retry_missing"]) == 0
    assert "Embedded 20 of 20 images into" in capsys.readouterr().out
    assert main(["netvlad-tf", "embed", f"--dataset={write_csv(tmp_path / 'all.csv', 30)}", *common]) == 0
    assert "Appending 10 images" in capsys.readouterr().out
    assert main(["netvlad-tf", "index", f"--descriptors={tmp_path / 'db'}", f"--update={tmp_path / 'index'}"]) == 1
    assert "were embedded (--retry_missing) since this index was built" in capsys.readouterr().err
    assert main(["netvlad-tf", "index", f"--descriptors={tmp_path / 'db'}", f"--output={tmp_path / 'index'}",
                 "--overwrite"]) == 0
    assert main(["netvlad-tf", "index", f"--descriptors={tmp_path / 'db'}", f"--update={tmp_path / 'index'}",
                 "--output=x"]) == 1
    assert "drop --output" in capsys.readouterr().err
    assert main(["netvlad-tf", "embed", f"--dataset={write_csv(tmp_path / 'more.csv', 30)}", *common]) == 0
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", images[25], "--top_k=1"]) == 0
    assert images[25] in capsys.readouterr().out.splitlines()[-1]
    index_file = tmp_path / "index/index/index.faiss"
    other = create_index("flat", places_dim(tmp_path / "index") + 1)
    other.add(np.ones((3, other.dim), np.float32))
    other.save(tmp_path / "other")
    (tmp_path / "other/index.faiss").replace(index_file)
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", images[25]]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{index_file} holds {other.dim}-D vectors" in error


def places_dim(index_folder) -> int:
    return json.loads((index_folder / "index/index.json").read_text())["dim"]
