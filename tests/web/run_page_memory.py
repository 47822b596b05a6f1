"""Resident memory of a page server over many answers, in its own process.

`python tests/web/run_page_memory.py WARM_UP ANSWERS` serves a place index over the bundled route
on a free loopback port, asks WARM_UP answers, then ANSWERS more through `gradio_client`, and
prints the process's resident memory in MB after each part: `settled final`. A process of its
own, so what other tests left in a test worker does not count.
"""

import gc
import os
import sys
from pathlib import Path


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio_client

    from netvlad_tf import PlaceIndex
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.web.app import build_app
    from tests.support.tiny_backbone import clustered_tiny_model
    from tests.web.conftest import ANSWER_TIMEOUT_S, serve

    warm_up, answers = int(sys.argv[1]), int(sys.argv[2])
    route = read_csv_dataset(nordland_csv("test")).select(range(40), range(6))
    places = PlaceIndex.build(clustered_tiny_model(), route, image_size=(64, 128), verbose=False)
    places.set_threshold(0.95, source="a test")
    page = build_app(places, top_k=5, max_upload_mb=0.2)
    client = gradio_client.Client(serve(page, 0.2), verbose=False)
    measured = []
    try:
        for count in (warm_up, answers):
            for number in range(count):
                photo = gradio_client.handle_file(str(route.query_paths[number % 6]))
                client.submit(photo, api_name="/answer").result(timeout=ANSWER_TIMEOUT_S)
            gc.collect()
            measured.append(resident_mb())
    finally:
        page.close()
    print(*measured)


if __name__ == "__main__":
    main()
