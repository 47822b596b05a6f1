"""A place index served in this process on a free loopback port, and a client for it."""

import socket

import pytest

from netvlad_tf import PlaceIndex
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.sample_data import nordland_csv
from tests.support.tiny_backbone import clustered_tiny_model

gradio = pytest.importorskip("gradio")
# Answers wait at most this long: a test fails instead of hanging on a dead server.
ANSWER_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def route():
    return read_csv_dataset(nordland_csv("test")).select(range(40), range(6))


@pytest.fixture(scope="module")
def places(route):
    model = clustered_tiny_model()
    index = PlaceIndex.build(model, route, image_size=(64, 128), verbose=False)
    index.set_threshold(0.95, source="a test")
    return index


def serve(page, max_upload_mb):
    from netvlad_tf.web.app import launch

    port = free_port()
    launch(page, "127.0.0.1", port, max_upload_mb, block=False)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(places, route, monkeypatch_module):
    """(url, client) of the page over `places`, uploads capped at 0.2 MB; stopped afterwards."""
    from gradio_client import Client

    from netvlad_tf.web.app import build_app

    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    page = build_app(places, top_k=5, max_upload_mb=0.2, examples=route.query_paths[:2])
    url = serve(page, 0.2)
    try:
        yield url, Client(url, verbose=False)
    finally:
        page.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
