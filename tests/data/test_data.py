"""Dataset readers and ground truth, against brute force and hand-made files."""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from netvlad_tf.data import (
    GeoDataset,
    latlon_to_utm,
    read_csv_dataset,
    read_folder_dataset,
    read_mat_dataset,
)
from netvlad_tf.data.images import image_batches
from netvlad_tf.sample_data import nordland_csv


def haversine_m(lat1, lon1, lat2, lon2):
    radius = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * radius * math.asin(math.sqrt(a))


def test_utm_distances_match_great_circle():
    # Pittsburgh, two points about 120 m apart.
    lat, lon = np.array([40.4406, 40.4416]), np.array([-79.9959, -79.9948])
    coordinates, zone = latlon_to_utm(lat, lon)
    assert zone == 17
    planar = np.linalg.norm(coordinates[0] - coordinates[1])
    # The sphere differs from the WGS84 ellipsoid by up to 0.3 %, the UTM scale by 0.04 %.
    assert planar == pytest.approx(haversine_m(lat[0], lon[0], lat[1], lon[1]), rel=3e-3)
    assert 5.8e5 < coordinates[0, 0] < 5.9e5 and 4.47e6 < coordinates[0, 1] < 4.48e6


def test_radius_ground_truth_equals_brute_force(rng):
    database = rng.uniform(0, 200, size=(300, 2))
    queries = rng.uniform(0, 200, size=(40, 2))
    dataset = GeoDataset("random", [f"d{i}" for i in range(300)], database, [f"q{i}" for i in range(40)], queries)
    for radius in (10.0, 25.0):
        distances = np.linalg.norm(queries[:, None] - database[None], axis=-1)
        expected = [np.flatnonzero(row <= radius) for row in distances]
        found = dataset.positives_within(radius)
        for a, b in zip(found, expected):
            np.testing.assert_array_equal(a, b)
    with_positives = dataset.queries_with_positives(10.0)
    assert with_positives.tolist() == [q for q, e in enumerate(dataset.positives_within(10.0)) if e.size]


def test_timestamps_exclude_same_date_positives():
    dataset = GeoDataset(
        "tm", ["a", "b"], [[0, 0], [1, 0]], ["q"], [[0, 0]],
        database_timestamps=np.array([2010, 2014]), query_timestamps=np.array([2010]),
    )
    assert dataset.positives_within(10.0)[0].tolist() == [1]


def write(path, text):
    path.write_text(text)
    return path


def test_csv_reader_with_gps_and_conditions(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("d.png", "q.png"):
        (tmp_path / "img" / name).touch()
    csv_path = write(
        tmp_path / "mine.csv",
        "split,image_path,latitude,longitude,condition\n"
        "database,img/d.png,40.4406,-79.9959,day\n"
        "query,img/q.png,40.4407,-79.9959,night\n",
    )
    dataset = read_csv_dataset(csv_path)
    assert dataset.num_database == 1 and dataset.num_queries == 1
    assert dataset.query_conditions == ["night"]
    gap = np.linalg.norm(dataset.database_utm[0] - dataset.query_utm[0])
    assert gap == pytest.approx(haversine_m(40.4406, -79.9959, 40.4407, -79.9959), rel=3e-3)
    assert dataset.database_paths[0] == str(tmp_path / "img" / "d.png")


@pytest.mark.parametrize(
    "content, message",
    [
        ("split,image_path,x,y\n", "coordinate columns"),
        ("split,image_path,easting,northing\ntrain,a.png,1,2\n", "split must be one of"),
        ("split,image_path,easting,northing\ndatabase,a.png,nan,2\nquery,a.png,1,2\n", ":2: easting is 'nan'"),
        ("split,image_path,easting,northing\ndatabase,a.png,one,2\n", "not a number"),
        ("split,image_path,easting,northing\ndatabase,a.png,1,2\n", "no query rows"),
    ],
)
def test_csv_reader_errors_name_the_row(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_csv_dataset(write(tmp_path / "bad.csv", content), check_files=False)


def test_place_ids_define_positives_and_negatives():
    """Positives share the query's place ID wherever they are; negatives have another ID and,
    with coordinates, lie beyond the negative radius; the query's own file is no positive."""
    database = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "q.jpg"]
    places = ["hall", "lab", "lab", "hall", "yard", "lab"]
    where = [[0, 0], [0, 0], [500, 0], [20, 0], [300, 0], [0, 0]]
    dataset = GeoDataset("rooms", database, where, ["q.jpg"], [[0, 0]],
                         database_place_ids=places, query_place_ids=["lab"])
    assert dataset.positives_within(25.0)[0].tolist() == [1, 2]  # a is at the spot but another place
    assert dataset.not_negatives_within(25.0)[0].tolist() == [0, 1, 2, 3, 5]  # only e is a negative
    labels_only = GeoDataset("rooms", database, None, ["q.jpg"], None,
                             database_place_ids=places, query_place_ids=["lab"])
    assert labels_only.positives_within()[0].tolist() == [1, 2]
    assert labels_only.not_negatives_within(25.0)[0].tolist() == [1, 2, 5]
    assert labels_only.select([1, 4], [0]).database_place_ids.tolist() == ["lab", "yard"]
    with pytest.raises(ValueError, match="needs a place ID"):
        GeoDataset("none", ["a.jpg"], None, ["q.jpg"], None)
    with pytest.raises(ValueError, match="no coordinates"):
        labels_only._within(25.0)


def test_csv_reader_with_place_ids_and_no_coordinates(tmp_path):
    csv_path = write(tmp_path / "rooms.csv", "split,image_path,place_id\ndatabase,a.png,hall\n"
                     "database,b.png,lab\nquery,q.png, lab \n")
    dataset = read_csv_dataset(csv_path, check_files=False)
    assert not dataset.has_coordinates and dataset.query_place_ids.tolist() == ["lab"]
    assert dataset.positives_within()[0].tolist() == [1]
    with pytest.raises(ValueError, match=":3: place_id is empty"):
        read_csv_dataset(write(tmp_path / "bad.csv", "split,image_path,place_id\ndatabase,a.png,x\n"
                               "query,q.png,\n"), check_files=False)
    with pytest.raises(ValueError, match="or a place_id column"):
        read_csv_dataset(write(tmp_path / "none.csv", "split,image_path\ndatabase,a.png\n"), check_files=False)


def test_csv_reader_missing_files(tmp_path):
    csv_path = write(tmp_path / "x.csv", "split,image_path,easting,northing\ndatabase,a.png,1,2\nquery,b.png,1,2\n")
    with pytest.raises(FileNotFoundError, match="2 image files are missing"):
        read_csv_dataset(csv_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_csv_dataset(tmp_path / "none.csv")


def test_bundled_nordland_is_split_along_the_route():
    train, test = read_csv_dataset(nordland_csv("train")), read_csv_dataset(nordland_csv("test"))
    assert train.num_database == train.num_queries == 779
    assert test.num_database == test.num_queries == 348
    # At least 500 m between the stretches: no test place is a positive of a training place.
    assert test.database_utm[:, 0].min() - train.database_utm[:, 0].max() >= 500
    # Each winter query has its own summer place within 10 m.
    assert all(0 in np.abs(test.database_utm[p, 0] - q[0]) for p, q in zip(test.positives_within(10.0), test.query_utm))


def test_folder_reader(tmp_path):
    for folder, names in {"database": ["@1.0@2.0@x.jpg", "@30.0@2.0@y.jpg"], "queries": ["@2.0@2.0@.png"]}.items():
        (tmp_path / "images/val" / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / "images/val" / folder / name).touch()
    # What a killed write and a macOS copy leave beside the photos: hidden, never read as images.
    (tmp_path / "images/val/database/.@5.0@2.0@x.jpg.4242-ab12cd34.staging.jpg").touch()
    (tmp_path / "images/val/database/._@1.0@2.0@x.jpg").write_bytes(b"\x00\x05\x16\x07")
    dataset = read_folder_dataset(tmp_path, "val")
    assert dataset.database_utm.tolist() == [[1.0, 2.0], [30.0, 2.0]]
    assert dataset.positives_within(25.0)[0].tolist() == [0]
    (tmp_path / "images/val/queries/bad_name.jpg").touch()
    with pytest.raises(ValueError, match="bad_name.jpg"):
        read_folder_dataset(tmp_path, "val")


def write_db_struct(path, with_timestamps=False, drop=None):
    fields = {
        "whichSet": "val",
        "dataset": "pitts30k",
        "dbImageFns": np.array(["000/a.jpg", "000/b.jpg", "001/c.jpg"], dtype=object),
        "utmDb": np.array([[0.0, 5.0, 100.0], [0.0, 0.0, 0.0]]),
        "qImageFns": np.array(["q/1.jpg", "q/2.jpg"], dtype=object),
        "utmQ": np.array([[1.0, 99.0], [0.0, 0.0]]),
        "numImages": 3,
        "numQueries": 2,
        "posDistThr": 25,
        "posDistSqThr": 625,
        "nonTrivPosDistSqThr": 100,
    }
    if with_timestamps:
        fields["dbTimeStamp"] = np.array([201001, 201401, 201401])
        fields["qTimeStamp"] = np.array([201001, 201001])
    if drop:
        fields.pop(drop)
    scipy.io.savemat(path, {"dbStruct": fields})
    return path


def test_mat_reader(tmp_path):
    dataset = read_mat_dataset(write_db_struct(tmp_path / "pitts30k_val.mat"), "/data/pitts", "/data/q")
    assert dataset.database_paths[2] == "/data/pitts/001/c.jpg"
    assert dataset.query_paths[0] == "/data/q/q/1.jpg"
    assert dataset.database_utm.tolist() == [[0, 0], [5, 0], [100, 0]]
    assert [p.tolist() for p in dataset.positives_within(25.0)] == [[0, 1], [2]]
    timed = read_mat_dataset(write_db_struct(tmp_path / "tokyoTM_val.mat", with_timestamps=True), "/x")
    assert [p.tolist() for p in timed.positives_within(25.0)] == [[1], [2]]


def test_mat_reader_names_missing_fields(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the fields \['utmQ'\]"):
        read_mat_dataset(write_db_struct(tmp_path / "bad.mat", drop="utmQ"), "/x")
    scipy.io.savemat(tmp_path / "other.mat", {"something": 1})
    with pytest.raises(ValueError, match="no 'dbStruct'"):
        read_mat_dataset(tmp_path / "other.mat", "/x")


def test_corrupt_image_is_named(tmp_path):
    good = str(nordland_csv("test").parent / "images/summer/images-12510.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png"):
        list(image_batches([good, str(bad)], (32, 64), batch_size=1))


def test_grey_and_rgb_images_decode_to_rgb(tmp_path):
    import tensorflow as tf

    grey = tf.cast(tf.reshape(tf.range(12), (3, 4, 1)) * 10, tf.uint8)
    path = tmp_path / "grey.png"
    path.write_bytes(tf.io.encode_png(grey).numpy())
    (batch,) = list(image_batches([str(path)]))
    assert batch.shape == (1, 3, 4, 3)
    np.testing.assert_array_equal(batch[0, ..., 0], batch[0, ..., 2])
    assert batch[0, 2, 3, 1] == 110.0


def test_unreadable_images_are_skipped_with_a_count(tmp_path):
    from netvlad_tf.data.unreadable import drop_unreadable_images

    full = read_csv_dataset(nordland_csv("test"))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(full.query_paths[0]).read_bytes()[:40])
    dataset = GeoDataset("mixed", full.database_paths[:3], full.database_utm[:3],
                         [full.query_paths[1], str(truncated)], full.query_utm[:2],
                         query_conditions=["a", "b"])
    with pytest.warns(UserWarning, match="skipped 1 unreadable images"):
        kept, dropped = drop_unreadable_images(dataset)
    assert dropped == [str(truncated)]
    assert kept.query_paths == [full.query_paths[1]] and kept.query_conditions == ["a"]
    assert kept.num_database == 3
