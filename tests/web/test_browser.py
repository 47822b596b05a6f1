"""The page in a real browser: Debian's Chromium driven by Playwright (its own browser download
cannot be used here). Uploads a bundled winter frame to the `--demo` page, waits for the answer,
checks the verdict and the first match, and that every request stayed on this machine; writes
the README's screenshot when `NETVLAD_TF_SCREENSHOT` names where."""

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.web.conftest import ANSWER_TIMEOUT_S, serve

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's `chromium`)")
def test_the_demo_page_answers_a_winter_frame_in_a_browser(tmp_path, monkeypatch):
    playwright = pytest.importorskip("playwright.sync_api")
    from netvlad_tf.commands.serve import demo_place_index
    from netvlad_tf.web.app import build_app

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    places, examples = demo_place_index(tmp_path / "demo", verbose=False)
    page = build_app(places, examples=examples)
    url = serve(page, 20)
    # The screenshot shows a "seen before" answer when an example gives one.
    answers = [places.query([example], top_k=5)[0] for example in examples]
    number = next((i for i, found in enumerate(answers) if 1 - found[0].distance / 2 >= places.threshold["similarity"]), 0)
    photo, expected = examples[number], answers[number]
    requests = []
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM)
            tab = browser.new_page(viewport={"width": 1280, "height": 1000})
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto(url, timeout=ANSWER_TIMEOUT_S * 1000)
            tab.locator("input[type=file]").first.set_input_files(photo)
            verdict = tab.locator("#verdict")
            verdict.filter(has_text="—").wait_for(timeout=ANSWER_TIMEOUT_S * 1000)
            text = verdict.inner_text()
            tab.locator("#matches img").nth(4).wait_for(timeout=ANSWER_TIMEOUT_S * 1000)
            captions = tab.locator("#matches").inner_text()
            tab.wait_for_timeout(1500)  # the plot and the overlay draw
            tab.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        page.close()
    assert text.startswith(("Seen before", "New place"))
    assert Path(expected[0].image_path).name in text
    assert "#1" in captions and "#5" in captions
    hosts = {urlparse(address).hostname for address in requests if urlparse(address).scheme in ("http", "https", "ws")}
    assert hosts == {"127.0.0.1"}, hosts
    if os.environ.get("NETVLAD_TF_SCREENSHOT"):
        shutil.copyfile(tmp_path / "page.png", os.environ["NETVLAD_TF_SCREENSHOT"])


def test_serve_demo_answers_from_a_fresh_demo_folder(tmp_path):
    """`netvlad-tf serve --demo` as a newcomer runs it: the index is built into the demo folder,
    the page answers a bundled winter frame with a verdict and five matches, and a second start
    reads the index it built."""
    import subprocess
    import sys
    import time

    from gradio_client import Client, handle_file

    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from tests.web.conftest import free_port

    port = free_port()
    command = [sys.executable, "-m", "netvlad_tf.cli", "serve", "--demo", f"--demo_dir={tmp_path / 'demo'}",
               f"--port={port}"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        client = None
        while client is None and time.monotonic() < deadline and server.poll() is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # not listening yet: the index is being built
                time.sleep(2)
        assert client is not None, log.read_text()[-3000:]
        photo = read_csv_dataset(nordland_csv("test")).query_paths[0]
        verdict, gallery, plot, *_ = client.submit(handle_file(photo), api_name="/answer").result(
            timeout=ANSWER_TIMEOUT_S)
        assert verdict.startswith(("Seen before", "New place")) and len(gallery) == 5 and plot is not None
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "demo" / "place_index" / "places.json").is_file()
