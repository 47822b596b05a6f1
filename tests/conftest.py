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

# Doctests that build VGG16 and embed images (3 s and more each) run in the slow tier.
SLOW_DOCTESTS = {
    "netvlad_tf.database.embed.embed_database",
    "netvlad_tf.database.place_index.PlaceIndex",
    "netvlad_tf.evaluation.evaluate.evaluate",
    "netvlad_tf.inference.embedding.embed_images",
    "netvlad_tf.database.hloc_features.write_hloc_features",
    "netvlad_tf.initialization.learned_whitening.with_learned_whitening",
    "netvlad_tf.training.frozen_features.FrozenFeatureStore",
    "netvlad_tf.training.frozen_features.PoolFeatureStore",
}
# A test of the fast tier (`-m "not slow"`) should take less than this; the fast tier's summary
# names the ones above it (mark them slow, or give them tinier shapes).
FAST_TEST_LIMIT_S = 5.0


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
    # Slow tests first: with one pytest-xdist worker per core, the minute-long ones then start
    # at once and the short ones fill in around them, instead of a notebook starting last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_terminal_summary(terminalreporter, config):
    if "not slow" not in (config.getoption("markexpr") or ""):
        return
    durations = {}
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration
    over = sorted(((seconds, nodeid) for nodeid, seconds in durations.items() if seconds > FAST_TEST_LIMIT_S),
                  reverse=True)
    if over:
        terminalreporter.write_sep("-", f"fast-tier tests over {FAST_TEST_LIMIT_S:.0f} s (mark them slow or shrink them)")
        for seconds, nodeid in over:
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
