"""Any photo collection works: mixed sizes, phone photos (EXIF orientation), large photos,
real CSVs and damaged model files, through the commands users run with their default flags."""

import json

import keras
import numpy as np
import pytest
from PIL import Image, ImageOps

from netvlad_tf import build_netvlad_model, initialize_clusters
from netvlad_tf.cli import main
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.data.images import DEFAULT_MAX_SIDE, image_batches, load_image
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.sample_data import nordland_csv
from tests.support.image_files import blank_png, bmp_bytes, photo_with_orientation
from tests.support.tiny_backbone import TINY_BACKBONE

# Sizes of a real collection: off by a pixel or two, both aspect ratios, one over the cap.
SIZES = [(96, 128), (97, 128), (96, 129), (128, 96), (120, 160), (96, 128), (700, 900), (64, 64)]


def scene(rng, height, width):
    """A smooth random picture with structure at several scales (JPEG-friendly)."""
    coarse = rng.uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32)
    picture += rng.normal(0, 12, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A CSV (Excel's UTF-8 with BOM, latitude/longitude) over JPEGs and PNGs of mixed sizes,
    one of them a portrait phone photo stored landscape with EXIF orientation 6."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("photos")
    rows = ["split,image_path,latitude,longitude"]
    for index, (height, width) in enumerate(SIZES):
        for split, offset in (("database", 0.0), ("query", 0.00005)):
            name = f"{split}_{index}.{'jpg' if index % 2 else 'png'}"
            picture = scene(rng, height, width)
            if split == "query" and index == 3:  # the phone photo: portrait, stored turned
                photo_with_orientation(root / name, picture, 6)
            else:
                Image.fromarray(picture).save(root / name, quality=95)
            rows.append(f"{split},{name},{47.0 + index * 0.01 + offset:.6f},{8.0:.6f}")
    (root / "photos.csv").write_bytes("\ufeff".encode() + "\n".join(rows).encode() + b"\n")
    return root


@pytest.fixture(scope="module")
def tiny_model_file(photo_folder):
    keras.utils.set_random_seed(0)
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4)
    paths = read_csv_dataset(photo_folder / "photos.csv").database_paths
    initialize_clusters(model, paths, num_descriptors=200, descriptors_per_image=10, verbose=False)
    path = photo_folder / "tiny.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, rng, orientation, suffix):
    upright = scene(rng, 24, 40)
    path = tmp_path / f"photo{suffix}"
    photo_with_orientation(path, upright, orientation, quality=100)
    ours = load_image(path).numpy()
    with Image.open(path) as photo:
        reference = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"), np.float32)
    assert ours.shape == reference.shape == (24, 40, 3)
    if suffix == ".png":
        np.testing.assert_array_equal(ours, reference)
    else:  # two JPEG decoders (chroma upsampling differs): close on average, far from sideways
        assert np.abs(ours - reference).mean() < 3
        mirrored = reference[:, ::-1]
        assert np.abs(ours - mirrored).mean() > 10


@pytest.mark.slow
def test_exif_photo_has_the_descriptor_of_the_upright_image(photo_folder, tiny_model_file, tmp_path):
    model = keras.models.load_model(tiny_model_file)
    rotated = photo_folder / "query_3.jpg"
    with Image.open(rotated) as stored:
        assert stored.size == (128, 96)  # stored landscape (width, height)
    # The same pixels turned upright by hand (NumPy, from TensorFlow's decoder, which ignores
    # EXIF) and saved without any tag, losslessly.
    import tensorflow as tf

    stored = tf.io.decode_jpeg(rotated.read_bytes(), channels=3).numpy()
    upright = np.rot90(stored, k=-1)  # orientation 6: turn 90° clockwise
    Image.fromarray(np.ascontiguousarray(upright)).save(tmp_path / "upright.png")
    descriptors = embed_images(model, [str(rotated), str(tmp_path / "upright.png")], verbose=False)
    np.testing.assert_allclose(descriptors[0], descriptors[1], atol=2e-3)
    sideways = embed_images(model, [str(tmp_path / "upright.png")], verbose=False)
    Image.fromarray(stored).save(tmp_path / "sideways.png")
    assert not np.allclose(sideways, embed_images(model, [str(tmp_path / "sideways.png")], verbose=False), atol=2e-3)


@pytest.mark.slow
def test_mixed_sizes_batch_by_shape_and_keep_order(photo_folder, tiny_model_file):
    model = keras.models.load_model(tiny_model_file)
    paths = read_csv_dataset(photo_folder / "photos.csv").query_paths
    batched = embed_images(model, paths, batch_size=8, verbose=False)
    one_by_one = np.concatenate([model.predict(load_image(path).numpy()[None], verbose=0) for path in paths])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    shapes = sorted(batch.shape[1:3] for batch in image_batches(paths, batch_size=8))
    assert (128, 96) in shapes and (96, 128) in shapes  # the EXIF photo is portrait


def test_large_photos_are_capped_and_bombs_refused_by_name(tmp_path):
    Image.fromarray(np.zeros((2000, 3000, 3), np.uint8)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png").shape == (427, DEFAULT_MAX_SIDE, 3)
    assert load_image(tmp_path / "big.png", max_side=None).shape == (2000, 3000, 3)
    assert load_image(tmp_path / "big.png", (48, 64)).shape == (48, 64, 3)
    (tmp_path / "bomb.png").write_bytes(blank_png(10_000, 10_000))
    with pytest.raises(ValueError, match=r"bomb.png has 10000×10000 pixels"):
        load_image(tmp_path / "bomb.png")


def test_gif_and_bmp_sizes_come_from_their_headers_and_bombs_are_refused_undecoded(tmp_path):
    import tensorflow as tf

    from netvlad_tf.io.image_header import read_image_header

    pixels = np.random.default_rng(5).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "pillow.gif")
    Image.fromarray(pixels).save(tmp_path / "pillow.bmp")
    (tmp_path / "bottom_up.bmp").write_bytes(bmp_bytes(pixels))
    (tmp_path / "top_down.bmp").write_bytes(bmp_bytes(pixels, top_down=True))
    for name in ("pillow.gif", "pillow.bmp", "bottom_up.bmp", "top_down.bmp"):
        header = read_image_header(tmp_path / name)
        decoded = tf.io.decode_image((tmp_path / name).read_bytes(), channels=3, expand_animations=False)
        assert (header.height, header.width) == tuple(decoded.shape[:2]) == (37, 53), name
        with Image.open(tmp_path / name) as image:
            assert image.size == (53, 37)
        assert load_image(tmp_path / name, max_side=None).shape == (37, 53, 3)
    for name in ("pillow.bmp", "bottom_up.bmp", "top_down.bmp"):  # lossless: the same pixels
        np.testing.assert_array_equal(load_image(tmp_path / name, max_side=None).numpy(), pixels)

    # Headers claiming more than 50 MP, with almost no data: refused before any decoding.
    (tmp_path / "bomb.bmp").write_bytes(bmp_bytes(pixels)[:54].replace(
        (53).to_bytes(4, "little") + (37).to_bytes(4, "little"),
        (20_000).to_bytes(4, "little") + (20_000).to_bytes(4, "little")))
    (tmp_path / "bomb.gif").write_bytes(b"GIF89a" + (65_535).to_bytes(2, "little") * 2 + bytes(7))
    for name, size in (("bomb.bmp", "20000×20000"), ("bomb.gif", "65535×65535")):
        with pytest.raises(ValueError, match=f"{name} has {size} pixels"):
            load_image(tmp_path / name)
    (tmp_path / "os2.bmp").write_bytes(bmp_bytes(pixels, info_size=12))
    with pytest.raises(ValueError, match="os2.bmp: its header is damaged.*12-byte BMP info header"):
        load_image(tmp_path / "os2.bmp")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg: not a JPEG, PNG, GIF or BMP file"):
        load_image(tmp_path / "notes.jpg")


@pytest.mark.slow
def test_commands_run_on_the_photo_folder_with_default_flags(photo_folder, tiny_model_file, tmp_path, capsys):
    csv_path = photo_folder / "photos.csv"
    assert main(["netvlad-tf", "evaluate", f"--model={tiny_model_file}", f"--dataset={csv_path}",
                 f"--output={tmp_path / 'eval'}", "--ns=1,5"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    found = results["recall"]["1"] * results["num_queries"]  # a count of queries, at most all of them
    assert abs(found - round(found)) < 1e-6 and round(found) <= results["num_queries"]
    assert results["recall"]["1"] <= results["recall"]["5"]
    assert main(["netvlad-tf", "index", f"--model={tiny_model_file}", f"--dataset={csv_path}",
                 f"--output={tmp_path / 'index'}"]) == 0
    capsys.readouterr()
    query = read_csv_dataset(csv_path).query_paths[3]
    assert main(["netvlad-tf", "query", f"--place_index={tmp_path / 'index'}", query]) == 0
    assert "database_" in capsys.readouterr().out
    assert main(["netvlad-tf", "cluster", f"--model={tiny_model_file}", f"--dataset={csv_path}",
                 "--num_descriptors=100", "--descriptors_per_image=5", f"--output={tmp_path / 'c.keras'}"]) == 0
    assert main(["netvlad-tf", "train", f"--dataset={csv_path}", f"--model={tiny_model_file}",
                 "--image_size=96,128", "--epochs=1", "--num_negatives=2", "--num_sampled_negatives=4",
                 f"--output_root={tmp_path / 'runs'}"]) == 0


@pytest.mark.parametrize("name, content, message", [
    ("latin1.csv", "split,image_path,easting,northing\nquery,caf\xe9.png,1,2\n".encode("latin-1"),
     r"latin1.csv:2: not UTF-8 \(byte 0xe9\); save the CSV as UTF-8"),
    ("east.csv", b"split,image_path,latitude,longitude\ndatabase,a.png,47.0,8.0\nquery,b.png,47.0,200\n",
     r"east.csv:3: longitude 200.0 is outside \[-180, 180\]"),
    ("north.csv", b"split,image_path,latitude,longitude\ndatabase,a.png,-95,8.0\n",
     r"north.csv:2: latitude -95.0 is outside \[-90, 90\]"),
])
def test_csv_errors_name_the_file_and_row(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_csv_dataset(tmp_path / name, check_files=False)


def test_excel_csv_with_bom_reads(photo_folder):
    assert (photo_folder / "photos.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    dataset = read_csv_dataset(photo_folder / "photos.csv")
    assert dataset.num_database == dataset.num_queries == len(SIZES)


def test_damaged_model_files_are_one_line_errors(tiny_model_file, tmp_path, capsys):
    good = tiny_model_file.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    foreign = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    foreign.save(tmp_path / "foreign.keras")
    (tmp_path / "folder.keras").mkdir()
    files = {"truncated.keras": good[: len(good) // 3], "flipped.keras": bytes(flipped),
             "text.keras": b"not a model", "empty.keras": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expected = {
        "missing.keras": "does not exist", "truncated.keras": "is damaged", "flipped.keras": "is damaged",
        "text.keras": "is not a Keras archive", "empty.keras": "is not a Keras archive",
        "folder.keras": "is a folder", "foreign.keras": "not a netvlad_tf model",
    }
    dataset = nordland_csv("test")
    for name, words in expected.items():
        output = tmp_path / f"out_{name}"
        assert main(["netvlad-tf", "evaluate", f"--model={tmp_path / name}", f"--dataset={dataset}",
                     "--baseline=mac", f"--output={output}"]) == 1
        error = capsys.readouterr().err
        assert words in error and name in error and "Traceback" not in error, (name, error)
        assert error.count("\n") == 1, error
        assert not output.exists()


@pytest.mark.slow
def test_a_jpeg_over_50_megapixels_is_decoded_downscaled_in_the_dct_domain(tmp_path):
    """A 54 MP phone photo: decoded at 1/2 by the JPEG decoder, then sized by the policy, and
    equal to the smooth picture it shows (a gradient, written analytically)."""
    height, width = 6400, 8400
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    picture = np.stack([np.broadcast_to(rows, (height, width)), np.broadcast_to(columns, (height, width)),
                        np.full((height, width), 128.0, np.float32)], -1)
    Image.fromarray(picture.astype(np.uint8)).save(tmp_path / "huge.jpg", quality=90)
    image = load_image(tmp_path / "huge.jpg").numpy()
    assert image.shape == (488, 640, 3)  # 6400×8400 → 3200×4200 → longer side 640
    expected_rows = np.linspace(0, 255, 488)[:, None]
    expected_columns = np.linspace(0, 255, 640)[None, :]
    # JPEG at quality 90, the decoder's 1/2 scaling and a bilinear resize: a few grey levels.
    assert np.abs(image[4:-4, 4:-4, 0] - expected_rows[4:-4]).max() < 6
    assert np.abs(image[4:-4, 4:-4, 1] - expected_columns[:, 4:-4]).max() < 6
    assert next(iter(image_batches([tmp_path / "huge.jpg"]))).shape == (1, 488, 640, 3)
    Image.fromarray(picture.astype(np.uint8)).save(tmp_path / "huge.png", compress_level=1)
    with pytest.raises(ValueError, match="huge.png has 6400×8400 pixels and is not a JPEG"):
        load_image(tmp_path / "huge.png")
