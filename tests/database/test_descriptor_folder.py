"""`DescriptorFolder` owns the manifest: a place index is built reading each shard once, and the
places it keeps are the plan's rows without the missing ones."""

import collections
import re
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

import netvlad_tf
from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.database.shards import DescriptorFolderError
from netvlad_tf.inference.runner import ModelRunner
from tests.support.descriptor_folders import random_descriptor_folder
from tests.support.tiny_backbone import TINY_BACKBONE


@pytest.fixture
def shard_reads(monkeypatch):
    """Counts, per shard file, how often Parquet opens it (whole reads and column reads)."""
    counts = collections.Counter()
    read_table, parquet_file = pq.read_table, pq.ParquetFile

    def counted_read_table(source, *args, **kwargs):
        counts[Path(source).name] += 1
        return read_table(source, *args, **kwargs)

    def counted_parquet_file(source, *args, **kwargs):
        counts[Path(source).name] += 1
        return parquet_file(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", counted_read_table)
    monkeypatch.setattr(pq, "ParquetFile", counted_parquet_file)
    return counts


def test_a_flat_index_build_reads_each_shard_once(tmp_path, shard_reads):
    from netvlad_tf import build_netvlad_model

    descriptors = random_descriptor_folder(tmp_path / "db", num_rows=40, dim=16, shard_size=10, missing_rows=(3, 25))
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")  # 16-D, as the folder
    places = PlaceIndex.from_descriptors(tmp_path / "db", runner=ModelRunner(model), verbose=False)
    shard_files = sorted(path.name for path in (tmp_path / "db/shards").iterdir())
    assert {name: shard_reads[name] for name in shard_files} == dict.fromkeys(shard_files, 1)
    kept = [row for row in range(40) if row not in (3, 25)]
    assert places.image_paths == [f"image-{row}.jpg" for row in kept]
    _, found = places.index.search(descriptors[[0, 26]], 1)
    assert [places.image_paths[i] for i in found[:, 0]] == ["image-0.jpg", "image-26.jpg"]
    # The counter sees a second pass (the mistake this guards against: reading the missing rows again).
    DescriptorFolder.open(tmp_path / "db").missing_rows()
    assert all(shard_reads[name] == 2 for name in shard_files)


def test_the_walk_from_photos_to_an_index_reads_the_shard_once_and_saves_the_model_once(tmp_path, shard_reads,
                                                                                        monkeypatch):
    """`PlaceIndex.build`: embedding writes the shard (an unreadable photo recorded as missing,
    known without reading it back), the index build reads it once."""
    from netvlad_tf import build_netvlad_model
    from netvlad_tf.data import GeoDataset, read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv

    route = read_csv_dataset(nordland_csv("test"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    paths = [*route.database_paths[:4], str(broken), *route.database_paths[4:11]]  # 1 of 12: under 10 %
    coordinates = np.concatenate([route.database_utm[:4], [[0.0, 0.0]], route.database_utm[4:11]])
    model = build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac")
    saves = []
    monkeypatch.setattr(keras.Model, "save", lambda self, *args, save=keras.Model.save, **kwargs: (
        saves.append(self.name), save(self, *args, **kwargs))[1])
    places = PlaceIndex.build(model, GeoDataset("db", paths, coordinates, [], []), image_size=(32, 64), verbose=False)
    assert places.image_paths == [path for path in paths if path != str(broken)]
    assert shard_reads["shard-000000.parquet"] == 1
    places.save(tmp_path / "index")
    assert saves == [model.name], "saved once, into the descriptor folder; the index copies that file"
    loaded = PlaceIndex.load(tmp_path / "index")
    assert loaded.query([paths[2]], top_k=1)[0][0].image_path == paths[2]


def test_a_manifest_without_its_keys_is_one_line(tmp_path):
    random_descriptor_folder(tmp_path / "db", num_rows=10, dim=8, shard_size=5)
    text = (tmp_path / "db/manifest.json").read_text().replace('"precision"', '"precisions"')
    (tmp_path / "db/manifest.json").write_text(text)
    with pytest.raises(DescriptorFolderError, match="not a descriptor manifest \\(missing precision\\)"):
        DescriptorFolder.open(tmp_path / "db")
    (tmp_path / "db/manifest.json").write_text("[1, 2]")
    with pytest.raises(DescriptorFolderError, match="must hold a JSON object, not list"):
        DescriptorFolder.open(tmp_path / "db")


def test_the_folder_answers_what_its_manifest_says(tmp_path):
    random_descriptor_folder(tmp_path / "db", num_rows=23, dim=8, shard_size=5, missing_rows=(4,))
    folder = DescriptorFolder.open(tmp_path / "db")
    assert (folder.num_rows, folder.num_missing, folder.num_embedded, folder.descriptor_dim) == (23, 1, 22, 8)
    assert folder.shard_of_row(0) == 0 and folder.shard_of_row(22) == 4 and folder.rows_in([3, 4]) == 8
    assert np.array_equal(np.concatenate([shard.row_ids for shard in folder.shards(first=4)]), np.arange(20, 23))


def manifest_reads(source: str) -> int:
    """How often `source` reads a manifest's keys directly (`manifest[...]`, `manifest.get(...)`)."""
    return len(re.findall(r"manifest(\[|\.get\()", source))


def test_only_the_folder_reads_manifest_keys():
    assert manifest_reads('size = manifest["shard_size"]\nmanifest.get("precision")\n') == 2  # the scan sees them
    package = Path(netvlad_tf.__file__).parent
    readers = [path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if manifest_reads(path.read_text())]
    assert readers == ["database/descriptor_folder.py"], readers
