"""Presets: built ones give the configured model; converted ones need their file; a saved preset
folder loads from disk and, through the real Hugging Face client, from its offline cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netvlad_tf import PRESETS, PlaceRecognitionModel, build_netvlad_model
from tests.support.tiny_backbone import TINY_BACKBONE

FIXTURES = Path(__file__).parents[1] / "fixtures"
from_preset = PlaceRecognitionModel.from_preset


def test_built_preset_has_its_configuration_and_overrides():
    model = from_preset("efficientnet_lite0_imagenet", num_clusters=4)
    assert isinstance(model, PlaceRecognitionModel)
    assert model.backbone.output.shape[-1] == 112  # stride-16 cut of Lite0
    assert model.pooling.num_clusters == 4 and model.descriptor_dim == 4 * 112
    stride32 = from_preset("efficientnet_lite0_stride32_imagenet", num_clusters=2, whitening_dim=16)
    assert stride32.backbone.output.shape[-1] == 320 and stride32.descriptor_dim == 16


def test_converted_preset_reads_the_given_file_and_says_which_file_it_needs():
    expected = np.load(FIXTURES / "pytorch_netvlad_expected.npz")
    model = from_preset("vgg16_pitts30k_pytorch", released_file=FIXTURES / "pytorch_netvlad_checkpoint.pth.tar")
    np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-5)
    with pytest.raises(ValueError, match="converted as released; drop \\['backbone_weights'\\]"):
        from_preset("vgg16_pitts30k_pytorch", backbone_weights="vgg16.h5")
    with pytest.raises(ValueError, match="is built, not converted.*drop released_file"):
        from_preset("vgg16_imagenet", released_file="vgg16.h5")
    with pytest.raises(ValueError, match="vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat"):
        from_preset("vgg16_pitts30k_matconvnet")
    with pytest.raises(ValueError, match="is not a preset name, a preset folder"):
        from_preset("resnet_imagenet")


def test_every_preset_says_what_it_was_trained_on():
    for name, preset in PRESETS.items():
        assert preset.description and preset.trained_on, name
        assert (preset.converter is None) == (preset.weights_file is None), name


@pytest.fixture(scope="module")
def saved_preset(tmp_path_factory):
    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4, whitening_dim=8)
    folder = model.save_to_preset(tmp_path_factory.mktemp("presets") / "tiny", image_size=(32, 64),
                                  training_data="nothing (random weights)", results={"R@1": 0.5}, licence="mit")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 64, 3)).astype("float32")
    return folder, images, model.predict(images, verbose=0)


def test_a_saved_preset_folder_holds_model_metadata_and_card_and_loads_back(saved_preset):
    folder, images, expected = saved_preset
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "metadata.json", "model.keras"]
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["input"] == {"color": "RGB", "range": [0, 255], "dtype": "float32", "image_size": [32, 64],
                                 "max_side": 640}
    assert metadata["descriptor"] == {"dimension": 8, "pooling": "NetVLAD", "layout": "matlab", "whitening": 8,
                                      "normalization": "L2"}
    assert metadata["licence"] == "mit" and metadata["results"] == {"R@1": 0.5}
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: keras\nlicense: mit\n") and "| R@1 | 0.5 |" in card
    loaded = from_preset(str(folder))
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    with pytest.raises(ValueError, match="saved model; num_clusters apply to the built-in presets"):
        from_preset(str(folder), num_clusters=8)


def test_a_folder_that_is_not_a_preset_is_named(tmp_path, saved_preset):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a netvlad_tf preset folder \\(no model.keras or metadata.json"):
        from_preset(str(tmp_path / "empty"))
    shutil.copytree(saved_preset[0], tmp_path / "edited")
    (tmp_path / "edited/metadata.json").write_text("[]")
    with pytest.raises(ValueError, match="metadata.json must hold a JSON object, not list"):
        from_preset(str(tmp_path / "edited"))
    (tmp_path / "edited/metadata.json").write_text("{}")
    with pytest.raises(ValueError, match="metadata.json is not netvlad_tf preset metadata"):
        from_preset(str(tmp_path / "edited"))


LOAD_FROM_HUB = """
import sys, numpy as np
from netvlad_tf import PlaceRecognitionModel
images = np.load(sys.argv[1])
model = PlaceRecognitionModel.from_preset("hf://netvlad-tf/tiny-preset")
np.save(sys.argv[2], model.predict(images, verbose=0))
"""


@pytest.mark.slow  # a fresh process: the client reads its offline switch and cache when imported
def test_hf_preset_loads_through_the_real_client_from_its_offline_cache(saved_preset, tmp_path):
    pytest.importorskip("huggingface_hub")
    folder, images, expected = saved_preset
    # The client's own cache layout: models--OWNER--REPO/{refs/main, snapshots/<commit>/...}.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--netvlad-tf--tiny-preset"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    np.save(tmp_path / "images.npy", images)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                   "HF_HOME": str(tmp_path / "hf_home")}
    run = subprocess.run([sys.executable, "-c", LOAD_FROM_HUB, str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
                         env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_a_hub_handle_without_its_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    with pytest.raises(ValueError, match=r"hf:// presets need huggingface_hub: pip install 'netvlad_tf\[hub\]'"):
        from_preset("hf://owner/repo")
    with pytest.raises(ValueError, match=r"kaggle:// presets need kagglehub"):
        from_preset("kaggle://owner/model/keras/variant")


LOAD_FROM_KAGGLE = """
import sys, numpy as np
from netvlad_tf import PlaceRecognitionModel
images = np.load(sys.argv[1])
model = PlaceRecognitionModel.from_preset("kaggle://netvlad-tf/tiny-preset/keras/tiny/1")
np.save(sys.argv[2], model.predict(images, verbose=0))
"""


@pytest.mark.slow
def test_kaggle_preset_loads_through_the_real_client_from_its_cache(saved_preset, tmp_path):
    """A versioned handle found complete in kagglehub's cache loads without the network (no
    credentials are set, so the client could not download; the loopback proxy below refuses)."""
    pytest.importorskip("kagglehub")
    folder, images, expected = saved_preset
    # The client's own layout: models/OWNER/MODEL/FRAMEWORK/VARIATION/VERSION/ and VERSION.complete.
    variation = tmp_path / "kaggle" / "models" / "netvlad-tf" / "tiny-preset" / "keras" / "tiny"
    shutil.copytree(folder, variation / "1")
    (variation / "1.complete").touch()
    np.save(tmp_path / "images.npy", images)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KAGGLE")}
    environment.update(KAGGLEHUB_CACHE=str(tmp_path / "kaggle"), HOME=str(tmp_path / "home"),
                       HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    run = subprocess.run([sys.executable, "-c", LOAD_FROM_KAGGLE, str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
                         env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
