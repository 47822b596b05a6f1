"""Descriptor folders: streamed shards hold every row exactly once, equal to the one in-RAM
embedding; a resumed run repeats nothing and refuses other settings; indices built from shards
(in RAM, from parts, on disk) search exactly like a one-process build."""

import json
import re
import shutil
import sys

import numpy as np
import pytest

from netvlad_tf import build_netvlad_model, embed_database, read_descriptors
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.database.descriptor_folder import FORMAT, DescriptorFolder, iter_shards
from netvlad_tf.database.index_build import build_index_from_shards, training_sample, write_part_from_shard
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.database.shards import DescriptorFolderError
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.retrieval import create_index
from netvlad_tf.sample_data import nordland_csv
from tests.support.descriptor_folders import random_descriptor_folder
from tests.support.tiny_backbone import TINY_BACKBONE

IMAGE_SIZE = (32, 64)


@pytest.fixture(scope="module")
def database():
    dataset = read_csv_dataset(nordland_csv("test"))
    return dataset.database_paths[:23], dataset.database_utm[:23]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4).save(path)
    return path


def embed(model_file, database, output, **options):
    paths, coordinates = database
    return embed_database(model_file, paths, coordinates, output, image_size=IMAGE_SIZE, shard_size=5,
                          verbose=False, **options)


def folder_of(segments, shard_size=5):
    """A `DescriptorFolder` (in memory only) with these segments."""
    return DescriptorFolder("/nowhere", {
        "format": FORMAT, "version": 1, "model_name": "m", "model_sha256": "-", "descriptor_dim": 4,
        "image_size": None, "max_side": None, "shard_size": shard_size, "rows_sha256": "-", "precision": "float32",
        "num_rows": sum(length for _, length in segments), "complete": False,
        "segments": [{"first_row": first, "num_rows": length} for first, length in segments]})


def test_shard_ranges_cover_the_plan_once():
    covered = [row for rows in folder_of([(0, 23)]).shard_ranges for row in rows]
    assert covered == list(range(23))
    appended = folder_of([(0, 12), (12, 11)]).shard_ranges
    assert [row for rows in appended for row in rows] == list(range(23))
    assert appended[2] == range(10, 12) and appended[3] == range(12, 17), "no shard straddles an append"


@pytest.mark.slow
def test_shards_hold_every_row_once_equal_to_the_in_ram_embedding(model_file, database, tmp_path):
    import keras

    folder = embed(model_file, database, tmp_path / "db")
    table = read_descriptors(folder)
    expected = embed_images(keras.saving.load_model(model_file), database[0], IMAGE_SIZE, verbose=False)
    assert table.image_paths == list(database[0])
    np.testing.assert_allclose(table.descriptors, expected, atol=1e-5)
    np.testing.assert_array_equal(table.coordinates, database[1])
    row_ids = np.concatenate([shard.row_ids for shard in iter_shards(folder)])
    assert sorted(row_ids.tolist()) == list(range(23))
    assert len(list((folder / "shards").iterdir())) == 5
    memmapped = read_descriptors(folder, memmap_path=tmp_path / "all.npy")
    assert isinstance(memmapped.descriptors, np.memmap)
    np.testing.assert_array_equal(memmapped.descriptors, table.descriptors)


@pytest.mark.slow
def test_a_stopped_run_resumes_with_the_missing_shards_only(model_file, database, tmp_path):
    complete = read_descriptors(embed(model_file, database, tmp_path / "whole")).descriptors
    started = []

    def stop_at_third(shard):
        started.append(shard)
        if len(started) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed(model_file, database, tmp_path / "db", on_shard_start=stop_at_third)
    assert sorted(p.name for p in (tmp_path / "db/shards").iterdir()) == [
        "shard-000000.parquet", "shard-000001.parquet"]
    with pytest.raises(DescriptorFolderError, match="unfinished"):
        read_descriptors(tmp_path / "db")
    resumed = []
    embed(model_file, database, tmp_path / "db", on_shard_start=resumed.append)
    assert resumed == [2, 3, 4]
    np.testing.assert_allclose(read_descriptors(tmp_path / "db").descriptors, complete, atol=1e-6)


@pytest.mark.slow
def test_resuming_with_other_settings_or_model_is_refused_in_one_line(model_file, database, tmp_path):
    embed(model_file, database, tmp_path / "db")
    with pytest.raises(DescriptorFolderError, match=r"another image_size \(\[32, 64\] there, \[64, 64\] now\)"):
        embed_database(model_file, *database, tmp_path / "db", image_size=(64, 64), shard_size=5, verbose=False)
    other = tmp_path / "other.keras"
    build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=2).save(other)
    with pytest.raises(DescriptorFolderError, match="another model_sha256, descriptor_dim"):
        embed(other, database, tmp_path / "db")
    with pytest.raises(DescriptorFolderError, match="another num_rows, rows_sha256"):
        embed_database(model_file, database[0][:7], database[1][:7], tmp_path / "db", image_size=IMAGE_SIZE,
                       shard_size=5, verbose=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/todo.txt").write_text("mine")
    with pytest.raises(DescriptorFolderError, match="not a descriptor folder to resume"):
        embed(model_file, database, tmp_path / "notes")


@pytest.mark.slow
def test_a_staging_file_of_a_killed_writer_is_removed_and_never_read(model_file, database, tmp_path):
    folder = embed(model_file, database, tmp_path / "db")
    manifest = json.loads((folder / "manifest.json").read_text())
    shutil.copy(folder / "shards/shard-000001.parquet", folder / "shards/.shard-000001.parquet.999999999-dead.staging.parquet")
    (folder / "shards/shard-000001.parquet").unlink()
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    resumed = []
    embed(model_file, database, folder, on_shard_start=resumed.append)
    assert resumed == [1]
    assert sorted(p.name for p in (folder / "shards").iterdir())[0] == "shard-000000.parquet"
    assert len(list((folder / "shards").iterdir())) == 5


@pytest.mark.slow
def test_a_damaged_shard_is_named(model_file, database, tmp_path):
    folder = embed(model_file, database, tmp_path / "db")
    (folder / "shards/shard-000002.parquet").write_bytes(b"not parquet")
    with pytest.raises(DescriptorFolderError, match="shard-000002.parquet is damaged"):
        read_descriptors(folder)


@pytest.mark.slow
def test_the_training_sample_spreads_over_all_shards(model_file, database, tmp_path):
    folder = embed(model_file, database, tmp_path / "db")
    everything = read_descriptors(folder).descriptors
    np.testing.assert_array_equal(training_sample(folder, 6), everything[[0, 3, 7, 11, 15, 19]])  # ⌊i·23/6⌋


@pytest.fixture(scope="module")
def large_folder(tmp_path_factory):
    """600 random unit descriptors in 4 shards."""
    folder = tmp_path_factory.mktemp("descriptors") / "random"
    return folder, random_descriptor_folder(folder)


@pytest.mark.parametrize("kind", ["ivfsq8", "ivfpq"])
def test_shard_built_ivf_indices_search_like_a_one_process_build(large_folder, tmp_path, kind):
    folder, descriptors = large_folder
    reference = create_index(kind, 32, num_lists=8)
    reference.train(descriptors, database_size=600)  # the sample rule takes all 600 rows here
    reference.add(descriptors)
    queries = descriptors[::7] + 0.01
    expected = reference.search(queries, 10)
    added = build_index_from_shards(folder, kind, verbose=False, num_lists=8)
    (tmp_path / "work").mkdir()
    on_disk = build_index_from_shards(folder, kind, tmp_path / "work", on_disk=True, verbose=False, num_lists=8)
    merged = create_index(kind, 32, num_lists=8)  # the parts Ray tasks write, merged in RAM
    merged.train(descriptors, database_size=600)
    parts = [tmp_path / f"part-{shard}.index" for shard in range(4)]
    for shard, part in enumerate(parts):
        write_part_from_shard(merged.trained_state(), folder / f"shards/shard-{shard:06d}.parquet", 150 * shard,
                              32, part)
    merged.merge_parts(parts)
    for index in (added, on_disk, merged):
        distances, indices = index.search(queries, 10)
        np.testing.assert_array_equal(indices, expected[1])
        np.testing.assert_allclose(distances, expected[0], rtol=1e-5)


@pytest.mark.parametrize("on_disk", [False, True])
def test_indices_built_in_parts_number_the_embedded_rows_consecutively(tmp_path, on_disk):
    missing = (5, 170, 171, 420)
    descriptors = random_descriptor_folder(tmp_path / "db", missing_rows=missing)
    embedded = np.delete(descriptors, missing, axis=0)
    reference = create_index("ivfsq8", 32, num_lists=8)
    reference.train(embedded, database_size=len(embedded))
    reference.add(embedded)
    (tmp_path / "work").mkdir()
    built = build_index_from_shards(tmp_path / "db", "ivfsq8", tmp_path / "work", on_disk=on_disk,
                                    num_workers=0, verbose=False, num_lists=8) if on_disk else \
        build_index_from_shards(tmp_path / "db", "ivfsq8", verbose=False, num_lists=8)
    queries = embedded[::9] + 0.01
    np.testing.assert_array_equal(built.search(queries, 10)[1], reference.search(queries, 10)[1])
    table = read_descriptors(tmp_path / "db")
    np.testing.assert_array_equal(table.descriptors, embedded)
    assert table.num_missing == 4 and 170 not in table.row_ids


def test_an_on_disk_index_folder_can_be_moved(large_folder, tmp_path):
    from netvlad_tf.retrieval import load_index

    folder, descriptors = large_folder
    work = tmp_path / "work"
    work.mkdir()
    index = build_index_from_shards(folder, "ivfsq8", work, on_disk=True, verbose=False, num_lists=8)
    index.save(tmp_path / "index")
    assert (tmp_path / "index/index.ivfdata").is_file()
    expected = index.search(descriptors[:5], 3)
    shutil.move(tmp_path / "index", tmp_path / "moved")
    moved = load_index(tmp_path / "moved", expected_dim=32)
    np.testing.assert_array_equal(moved.search(descriptors[:5], 3)[1], expected[1])
    assert moved.search(descriptors[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_place_index_from_descriptors_answers_queries(model_file, database, tmp_path):
    folder = embed(model_file, database, tmp_path / "db")
    places = PlaceIndex.from_descriptors(folder, index_kind="flat", verbose=False)
    places.save(tmp_path / "places")
    loaded = PlaceIndex.load(tmp_path / "places")
    match = loaded.query([database[0][9]], top_k=1)[0][0]
    assert match.image_path == str(database[0][9]) and match.easting == database[1][9][0]


@pytest.mark.slow
def test_without_ray_installed_one_process_works_and_workers_name_the_extra(model_file, database, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    assert read_descriptors(embed(model_file, database, tmp_path / "here")).descriptors.shape == (23, 64)
    with pytest.raises(ValueError, match=r"pip install 'netvlad_tf\[ray\]'"):
        embed(model_file, database, tmp_path / "db", num_workers=2)


@pytest.fixture(scope="module")
def saved_places(model_file, database, tmp_path_factory):
    root = tmp_path_factory.mktemp("places")
    folder = embed(model_file, database, root / "db")
    PlaceIndex.from_descriptors(folder, index_kind="flat", verbose=False).save(root / "places")
    return root / "places"


@pytest.mark.parametrize("edit, message", [
    (lambda folder: (folder / "places.json").write_text("[1, 2]"), "places.json must hold a JSON object, not list"),
    (lambda folder: (folder / "places.json").write_text("{"), "places.json is not valid JSON"),
    (lambda folder: (folder / "places.json").write_text(json.dumps(
        {**json.loads((folder / "places.json").read_text()), "coordinates": [[0, 0]]})),
     "'coordinates' must be 23 \\[easting, northing\\] pairs"),
    (lambda folder: (folder / "places.json").write_text(json.dumps(
        {**json.loads((folder / "places.json").read_text()), "image_size": "big"})), "'image_size' must be null or"),
    (lambda folder: (folder / "index/index.json").write_text("[]"), "index: the saved index is corrupt or incomplete"),
    (lambda folder: shutil.rmtree(folder / "index"), "is not a saved index"),
    (lambda folder: build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=2).save(folder / "model.keras"),
     "holds 64-D descriptors .* but the model gives 32-D"),
])
@pytest.mark.slow
def test_an_edited_place_index_folder_fails_in_one_line_naming_the_file(saved_places, tmp_path, capsys, edit, message):
    from netvlad_tf.cli import main

    folder = tmp_path / "places"
    shutil.copytree(saved_places, folder)
    edit(folder)
    assert main(["netvlad-tf", "query", f"--place_index={folder}", str(saved_places.parent / "db/model.keras")]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert re.search(message, error), error


@pytest.mark.slow
def test_index_command_options_that_do_not_apply_are_one_line_errors(model_file, database, tmp_path, capsys):
    from netvlad_tf.cli import main

    folder = embed(model_file, database, tmp_path / "db")
    assert main(["netvlad-tf", "index", f"--descriptors={folder}", "--index=flat", "--num_lists=8",
                 f"--output={tmp_path / 'index'}"]) == 1
    assert "--num_lists sets the inverted lists of ivfpq and ivfsq8, not of --index=flat" in capsys.readouterr().err
    assert main(["netvlad-tf", "index", f"--descriptors={folder}", "--index=hnsw", "--on_disk",
                 f"--output={tmp_path / 'index'}"]) == 1
    assert "build IVF indices" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_a_threshold_out_of_range_is_refused_before_embedding(monkeypatch):
    from netvlad_tf.database import place_index

    monkeypatch.setattr(place_index, "embed_database", lambda *args, **kwargs: pytest.fail("embedded first"))
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    route = read_csv_dataset(nordland_csv("test")).select(range(3), range(1))
    with pytest.raises(ValueError, match="cosine similarity in \\[-1, 1\\], got 1.5"):
        PlaceIndex.build(model, route, image_size=IMAGE_SIZE, threshold=1.5, verbose=False)
