"""Baseline poolings against their NumPy definitions."""

import numpy as np
import pytest

from netvlad_tf import AveragePooling, GeMPooling, MACPooling, NetVLAD
from netvlad_tf.layers.pooling import get_pooling
from tests.support.layer_harness import check_layer


def unit(vectors):
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "layer, reference",
    [
        (MACPooling(), lambda x: x.max(axis=(1, 2))),
        (AveragePooling(), lambda x: x.mean(axis=(1, 2))),
        (
            GeMPooling(p=3.0),
            lambda x: (np.maximum(x, 1e-6) ** 3).mean(axis=(1, 2)) ** (1 / 3),
        ),
    ],
)
def test_pooling_matches_definition(rng, layer, reference):
    features = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    np.testing.assert_allclose(np.array(layer(features)), unit(reference(features)), atol=1e-5)


@pytest.mark.parametrize(
    "layer_class, kwargs",
    [(MACPooling, {}), (AveragePooling, {}), (GeMPooling, {"p": 2.0, "trainable_p": True})],
)
def test_pooling_harness(rng, tmp_path, layer_class, kwargs):
    check_layer(layer_class, kwargs, rng.normal(size=(2, 3, 3, 4)).astype("float32"), tmp_path)


def test_registry():
    assert isinstance(get_pooling("netvlad", num_clusters=3), NetVLAD)
    assert isinstance(get_pooling("gem"), GeMPooling)
    with pytest.raises(ValueError, match="choose one of"):
        get_pooling("vlad")


def test_gem_rejects_nonpositive_p():
    with pytest.raises(ValueError, match="p > 0"):
        GeMPooling(p=0.0)
