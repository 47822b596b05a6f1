"""`netvlad-tf serve`: a web page over a place index ("have I been here?")."""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.models.model_files import open_model
from netvlad_tf.sample_data import nordland_csv

SUMMARY = "Serve a web page over a place index: a photo in, the verdict, the matches and where they are."
EXAMPLE = ("netvlad-tf serve --place_index=city_index            # http://127.0.0.1:7860\n"
           "  netvlad-tf serve --demo                              # the bundled Nordland route (built once)")
DEMO_INDEX = "place_index"
# The demo page's examples: winter frames spread over the route.
DEMO_EXAMPLES = 6
# Without a demo model: the README's quick-start model (Lite0 ImageNet, k-means, no training).
QUICK_CLUSTERS = 16
QUICK_IMAGE_SIZE = (128, 256)


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command's flags on `fv`."""
    flags.DEFINE_string("place_index", None, "Folder made by `netvlad-tf index` (or --demo).", flag_values=fv)
    flags.DEFINE_boolean("demo", False, "Serve the bundled Nordland route's index (built into --demo_dir the first "
                         "time, with the demo's model when `netvlad-tf demo` has run there).", flag_values=fv)
    flags.DEFINE_string("demo_dir", "demo_output", "The demo's folder (with --demo).", flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 opens the page to your network).",
                        flag_values=fv)
    flags.DEFINE_integer("port", 7860, "Port to listen on.", lower_bound=1, upper_bound=65535, flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Matches shown per photo.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("threshold", None, "The similarity a best match needs for \"seen before\" (default: the one "
                       "stored with the index).", flag_values=fv)
    flags.DEFINE_float("max_upload_mb", 20, "Uploads larger than this are answered with a message.", lower_bound=0.01,
                       flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Serves the page until interrupted; returns the exit status (errors are raised)."""
    from netvlad_tf.web.app import build_app, import_gradio, launch

    import_gradio()  # before building anything: one line when the extra is missing
    if fv.demo == (fv.place_index is not None):
        raise ValueError("Give --place_index=DIR or --demo (the bundled route), one of them.")
    if fv.threshold is not None and not -1 <= fv.threshold <= 1:
        raise ValueError(f"--threshold is a cosine similarity in [-1, 1], got {fv.threshold:g}.")
    if fv.demo:
        places, examples = demo_place_index(Path(fv.demo_dir))
    else:
        places, examples = PlaceIndex.load(fv.place_index), None
    threshold = None if fv.threshold is None else {"similarity": fv.threshold, "precision": 0.99,
                                                    "source": "given with --threshold"}
    page = build_app(places, top_k=fv.top_k, threshold=threshold, max_upload_mb=fv.max_upload_mb, examples=examples)
    print(f"Serving {places.index.size} places on http://{fv.host}:{fv.port} (Ctrl+C stops)", flush=True)
    launch(page, fv.host, fv.port, fv.max_upload_mb)
    return 0


def demo_place_index(demo_dir: Path, verbose: bool = True) -> tuple[PlaceIndex, list[str]]:
    """The bundled route's place index (summer database) in `demo_dir/place_index`, built the
    first time, and winter frames to offer as examples.

    With the demo's trained model (`netvlad-tf demo` in `demo_dir`) the index uses it, at its
    image size, and its 99 %-precision threshold; without it, the README's quick-start model
    (EfficientNet-Lite0 ImageNet, NetVLAD K = 16 by k-means, no training), its threshold measured
    on the route's winter queries.
    """
    import netvlad_tf
    from netvlad_tf.data import read_csv_dataset

    route = read_csv_dataset(nordland_csv("test"))
    examples = [route.query_paths[i] for i in range(0, route.num_queries, route.num_queries // DEMO_EXAMPLES)][:DEMO_EXAMPLES]
    folder = demo_dir / DEMO_INDEX
    if folder.is_dir():
        return PlaceIndex.load(folder), examples
    trained = demo_dir / "model_whitened.keras"
    if trained.is_file():
        results = json.loads((demo_dir / "results.json").read_text())
        model, image_size = open_model(trained), tuple(results["settings"]["image_size"])
        threshold = results["precision_recall"]["netvlad_whitened"]["threshold_at_99_precision"]
        source = f"the Nordland test route ({trained})"
    else:
        if verbose:
            print(f"No demo model in {demo_dir} (`netvlad-tf demo` makes one): indexing the route with "
                  f"EfficientNet-Lite0 + NetVLAD K={QUICK_CLUSTERS} initialised by k-means, no training.", flush=True)
        model = netvlad_tf.PlaceRecognitionModel.from_preset("efficientnet_lite0_imagenet", num_clusters=QUICK_CLUSTERS)
        image_size = QUICK_IMAGE_SIZE
        netvlad_tf.initialize_clusters(model, route.database_paths, num_images=40, image_size=image_size,
                                       num_descriptors=4000, verbose=False)
        evaluation = netvlad_tf.evaluate(model, route, image_size=image_size, verbose=False)
        threshold = evaluation.precision_recall.threshold_at_precision(0.99)
        source = "the Nordland test route (k-means model)"
    places = PlaceIndex.build(model, route, image_size=image_size, verbose=verbose, threshold=threshold,
                              threshold_source=source)
    places.save(folder)
    return places, examples
