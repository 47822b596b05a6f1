"""Released weights on first use: a preset whose file is public is downloaded once (from a
mirror on 127.0.0.1 serving the file in its real layout), resumed when the connection drops,
checked, converted once and afterwards loaded without any network."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import keras
import numpy as np
import pytest

from netvlad_tf import PlaceRecognitionModel
from netvlad_tf.cli import main
from netvlad_tf.io import downloads
from tests.support.released_formats import write_hloc_struct_mat

IMAGES = np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 3)).astype("float32")


class Mirror:
    """A loopback HTTP server with byte ranges; `drop_first` sends only that many bytes of the
    first answer and closes the connection."""

    def __init__(self, files: dict[str, bytes], drop_first: int | None = None):
        self.files, self.drop_first, self.requests = files, drop_first, []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append((name, self.headers.get("Range")))
                if name not in mirror.files:
                    self.send_error(404)
                    return
                data, start = mirror.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mirror.drop_first is not None:
                    body, mirror.drop_first = body[:mirror.drop_first], None
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/netvlad"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hloc_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    average_image = (np.array([123.7, 116.3, 103.5]) + rng.normal(0, 20, (224, 224, 3))).astype(np.float32)
    path = tmp_path_factory.mktemp("released") / "Pitts30K_struct.mat"
    write_hloc_struct_mat(path, rng, 8, 16, average_image)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(downloads, "TIMEOUT_S", 20)
    return tmp_path / "keras_home" / "netvlad_tf"


@pytest.mark.slow  # converts a full VGG16 twice
def test_first_call_downloads_and_converts_once_second_call_touches_no_network(hloc_file, cache, tmp_path, monkeypatch):
    with Mirror({"Pitts30K_struct.mat": hloc_file.read_bytes()}, drop_first=1_000_000) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        first = PlaceRecognitionModel.from_preset("vgg16_pitts30k_hloc")
        # The first answer was cut after 1 MB; the second asked for the rest only.
        assert mirror.requests == [("Pitts30K_struct.mat", None), ("Pitts30K_struct.mat", "bytes=1000000-")]
    assert (cache / "downloads/Pitts30K_struct.mat").read_bytes() == hloc_file.read_bytes()
    assert not list((cache / "downloads").glob("*.part"))
    second = PlaceRecognitionModel.from_preset("vgg16_pitts30k_hloc")  # the mirror is gone: no network
    assert main(["netvlad-tf", "convert", "--source=matconvnet", f"--input={hloc_file}",
                 f"--output={tmp_path / 'converted.keras'}"]) == 0
    converted = keras.saving.load_model(tmp_path / "converted.keras")
    expected = converted.predict(IMAGES, verbose=0)
    np.testing.assert_allclose(first.predict(IMAGES, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(second.predict(IMAGES, verbose=0), expected, atol=1e-6)


def test_a_truncated_file_on_the_mirror_is_named_and_leaves_nothing_in_the_cache(hloc_file, cache, monkeypatch):
    with Mirror({"Pitts30K_struct.mat": hloc_file.read_bytes()[:5000]}) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        with pytest.raises(ValueError, match=r"127\.0\.0\.1:\d+/netvlad/Pitts30K_struct.mat gave a file that does "
                                             r"not convert .* removed from the cache"):
            PlaceRecognitionModel.from_preset("vgg16_pitts30k_hloc")
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_a_missing_file_and_an_unreachable_mirror_are_one_line_errors(cache, monkeypatch):
    with Mirror({}) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        with pytest.raises(ValueError, match="Downloading .*/netvlad/TokyoTM_struct.mat stopped after 0 bytes"):
            PlaceRecognitionModel.from_preset("vgg16_tokyotm_hloc")
    monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)  # the server is stopped now
    with pytest.raises(ValueError, match="set NETVLAD_TF_MIRROR to a mirror"):
        PlaceRecognitionModel.from_preset("vgg16_tokyotm_hloc")
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_a_checksum_that_does_not_match_removes_the_file(cache, tmp_path, monkeypatch):
    with Mirror({"weights.bin": b"some bytes"}) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        with pytest.raises(ValueError, match="weights.bin gave a wrong file \\(SHA-256"):
            downloads.download("https://example.org/weights.bin", tmp_path / "weights.bin", sha256="0" * 64,
                               verbose=False)
    assert not list(tmp_path.glob("weights.bin*"))


@pytest.mark.slow  # converts a full VGG16
def test_a_mirror_serves_a_file_whose_official_address_has_another_name(cache, tmp_path, monkeypatch):
    """Patch-NetVLAD's address ends in `/download`; the mirror serves the file by its own name."""
    from netvlad_tf.converters import convert_pytorch_netvlad
    from tests.support.released_formats import patch_netvlad_state_dict, write_torch_state_dict

    path = tmp_path / "pittsburgh_WPCA4096.pth.tar"
    write_torch_state_dict(path, patch_netvlad_state_dict(np.random.default_rng(3), 8, 16))
    with Mirror({"pittsburgh_WPCA4096.pth.tar": path.read_bytes()}) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        model = PlaceRecognitionModel.from_preset("vgg16_pitts30k_patchnetvlad")
        assert mirror.requests == [("pittsburgh_WPCA4096.pth.tar", None)]
    expected = convert_pytorch_netvlad(path).predict(IMAGES, verbose=0)
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0), expected, atol=1e-6)


@pytest.mark.slow  # converts a full VGG16
def test_a_checkpoint_published_as_a_zip_is_unpacked_and_converted(cache, tmp_path, monkeypatch):
    """netvlad_tf_open publishes its TF1 checkpoint as a zip: found inside it by its prefix."""
    import zipfile

    from netvlad_tf.converters import convert_tf_checkpoint_netvlad
    from tests.support.released_formats import tf_open_variables, write_tf_checkpoint

    name = "vd16_pitts30k_conv5_3_vlad_preL2_intra_white"
    (tmp_path / "checkpoint").mkdir()
    write_tf_checkpoint(tmp_path / "checkpoint" / name,
                        tf_open_variables(np.random.default_rng(4), 8, 16, [123.7, 116.3, 103.5]))
    with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as archive:
        for file in (tmp_path / "checkpoint").iterdir():
            archive.write(file, f"checkpoints/{file.name}")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../outside.txt", "no")
    with Mirror({f"{name}.zip": (tmp_path / f"{name}.zip").read_bytes()}) as mirror:
        monkeypatch.setenv("NETVLAD_TF_MIRROR", mirror.url)
        model = PlaceRecognitionModel.from_preset("vgg16_pitts30k_tf_open")
    expected = convert_tf_checkpoint_netvlad(tmp_path / "checkpoint" / name).predict(IMAGES, verbose=0)
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="member '../outside.txt' would be written outside"):
        downloads.extract_zip(tmp_path / "evil.zip", tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists() and not (tmp_path / "outside.txt").exists()
