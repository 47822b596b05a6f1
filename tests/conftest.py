"""Shared fixtures: seeded random generators and tiny shapes (32×32 images, 4 clusters)."""

import keras
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_keras():
    keras.utils.set_random_seed(1234)

# Fixture generators run by hand with torch installed; the suite itself never imports torch.
collect_ignore_glob = ["fixtures/make_*.py"]

# Registers the tiny test backbone ("tiny_test") for every test module.
import tests.support.tiny_backbone  # noqa: E402,F401


def pytest_collection_modifyitems(items):
    # Slow tests first: with one pytest-xdist worker per core, the minute-long ones then start
    # at once and the short ones fill in around them, instead of a notebook starting last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
