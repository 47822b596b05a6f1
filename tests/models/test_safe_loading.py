"""Every kind of model the package writes loads with `safe_mode=True` in a fresh process after
`import netvlad_tf`: no Lambda layers, every class registered."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netvlad_tf import build_netvlad_model, fit_pca_whitening
from netvlad_tf.converters.pytorch_netvlad import convert_pytorch_netvlad
from tests.support.tiny_backbone import TINY_BACKBONE

FIXTURES = Path(__file__).parents[1] / "fixtures"

LOAD_SAFELY = """
import sys, numpy as np, keras
import netvlad_tf
images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
for path in sys.argv[1:]:
    model = keras.saving.load_model(path, safe_mode=True)
    np.save(path + ".npy", model.predict(images, verbose=0))
"""


@pytest.mark.slow
def test_models_the_package_writes_load_in_safe_mode(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    pooled = np.random.default_rng(1).normal(size=(20, 64)).astype("float32")
    whitened = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=4).with_whitening(
        fit_pca_whitening(pooled, output_dim=8))
    models = {
        "netvlad_whitened": whitened,
        "mac": build_netvlad_model(TINY_BACKBONE, weights=None, pooling="mac"),
        "gem": build_netvlad_model(TINY_BACKBONE, weights=None, pooling="gem"),
        "lite0": build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=2),
        "converted_pytorch": convert_pytorch_netvlad(FIXTURES / "pytorch_netvlad_checkpoint.pth.tar"),
    }
    paths = []
    for name, model in models.items():
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
    run = subprocess.run([sys.executable, "-c", LOAD_SAFELY, *paths], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for path, model in zip(paths, models.values()):
        np.testing.assert_allclose(np.load(path + ".npy"), model.predict(images, verbose=0), atol=1e-5)
