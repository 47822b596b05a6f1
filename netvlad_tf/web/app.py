"""A web page over a place index: a photo in, "have I been here?" out (`netvlad-tf serve`).

A thin edge over the library: the page calls `PlaceIndex.query`, draws with the package's plots
and decides with the index's stored threshold; it adds no retrieval logic of its own. Gradio is
an optional extra (`pip install 'netvlad_tf[web]'`); nothing on the page is loaded from outside
the machine (system fonts, no map tiles, analytics off).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from netvlad_tf.data.images import image_problem
from netvlad_tf.database.place_index import PlaceIndex, PlaceMatch
from netvlad_tf.evaluation.plots import plot_soft_assignment

DEFAULT_TOP_K = 5
DEFAULT_MAX_UPLOAD_MB = 20
# System fonts only: Gradio's default theme fetches Google Fonts from the internet.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


@dataclass
class PageAnswer:
    """What the page shows for one photo (every field a plain value, so tests read it too).

    Attributes:
        verdict: the first line: seen before / new place / no threshold, or what is wrong with the upload.
        matches: the top-k `PlaceMatch`es, best first (empty when the upload is refused).
        similarities: each match's cosine similarity to the photo.
    """

    verdict: str
    matches: list[PlaceMatch]
    similarities: list[float]


def import_gradio():
    """Gradio, or one line saying how to install it."""
    try:
        import gradio
    except ImportError:
        raise ImportError("The web page needs Gradio: pip install 'netvlad_tf[web]'.") from None
    return gradio


def answer_photo(places: PlaceIndex, photo_path: str | None, top_k: int = DEFAULT_TOP_K,
                 threshold: dict | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> PageAnswer:
    """The page's answer for one uploaded photo: the verdict and the top-k matches.

    Args:
        places: the place index.
        photo_path: the uploaded file (None: nothing uploaded).
        top_k: matches to show.
        threshold: `{"similarity", "precision", "source"}` to decide by (the index's own when None).
        max_upload_mb: larger uploads are refused.

    Returns:
        A `PageAnswer`; a file that is not a readable image, empty or too large gets a verdict
        saying so and no matches (never an exception).

    Example:
    >>> answer_photo(PlaceIndex(None, None, [], np.zeros((0, 2)), None), None).verdict
    'Upload a photo (or paste one, or use the webcam) to find where it was taken.'
    """
    if photo_path is None:
        return PageAnswer("Upload a photo (or paste one, or use the webcam) to find where it was taken.", [], [])
    size_mb = os.path.getsize(photo_path) / 2**20
    if size_mb == 0:
        return PageAnswer("That upload is empty (0 bytes): choose an image file.", [], [])
    if size_mb > max_upload_mb:
        return PageAnswer(f"That file is {size_mb:.1f} MB; this page takes photos up to {max_upload_mb:g} MB.", [], [])
    problem = image_problem(photo_path)
    if problem is not None:
        return PageAnswer(f"Cannot use that upload: {problem.replace(str(photo_path), Path(photo_path).name)}", [], [])
    matches = places.query([photo_path], top_k=top_k)[0]
    similarities = [1.0 - match.distance / 2.0 for match in matches]  # L2-normalised: ‖a − b‖² = 2 − 2 cos
    return PageAnswer(verdict_line(matches[0], similarities[0], threshold or places.threshold), matches, similarities)


def verdict_line(best: PlaceMatch, similarity: float, threshold: dict | None) -> str:
    """"Seen before — …" or "New place — …" by the threshold, or a line saying there is none.

    Example:
    >>> best = PlaceMatch(1, "/db/images-12510.png", 12500.0, 0.0, 0.3)
    >>> threshold = {"similarity": 0.62, "precision": 0.99, "source": "nordland_test"}
    >>> verdict_line(best, 0.85, threshold).startswith("Seen before — place images-12510.png (easting 12500.0")
    True
    >>> verdict_line(best, 0.5, threshold).startswith("New place — best similarity 0.500 < threshold 0.620")
    True
    """
    place = f"place {Path(best.image_path).name}" + (
        f" (easting {best.easting:.1f}, northing {best.northing:.1f})" if best.easting is not None else "")
    if threshold is None:
        return (f"No threshold is stored with this index, so no verdict: the best match is {place}, similarity "
                f"{similarity:.3f}. Build the index with --threshold_from=<evaluation>/results.json, or serve with "
                "--threshold.")
    measured = f"{threshold.get('precision', 0.99) * 100:g} % precision on {threshold.get('source') or 'an evaluation'}"
    if similarity >= threshold["similarity"]:
        return f"Seen before — {place}, similarity {similarity:.3f} ≥ threshold {threshold['similarity']:.3f} ({measured})."
    return (f"New place — best similarity {similarity:.3f} < threshold {threshold['similarity']:.3f} ({measured}); "
            f"the nearest is {place}.")


def position_figure(places: PlaceIndex, answer: PageAnswer):
    """Where the matches are: a track strip when the coordinates are 1-D (a route like
    Nordland's), an easting/northing scatter otherwise; the best match starred. Drawn locally,
    no map tiles. None when the index has no coordinates."""
    from matplotlib.figure import Figure

    known = ~np.isnan(places.coordinates).any(axis=1)
    if not known.any() or not answer.matches:
        return None
    coordinates = places.coordinates[known]
    one_dimensional = np.ptp(coordinates[:, 1]) == 0
    figure = Figure(figsize=(7, 2.2 if one_dimensional else 4.5), dpi=100)
    axis = figure.add_subplot()
    if one_dimensional:
        axis.scatter(coordinates[:, 0], np.zeros(len(coordinates)), s=4, color="0.75", label="database")
        axis.set_yticks([])
        axis.set_xlabel("position along the route (easting, m)")
    else:
        axis.scatter(coordinates[:, 0], coordinates[:, 1], s=4, color="0.75", label="database")
        axis.set_xlabel("easting (m)")
        axis.set_ylabel("northing (m)")
        axis.set_aspect("equal", adjustable="datalim")
    for match in answer.matches[::-1]:
        if match.easting is None:
            continue
        y = 0.0 if one_dimensional else match.northing
        best = match.rank == 1
        axis.scatter([match.easting], [y], marker="*" if best else "o", s=220 if best else 40,
                     color="tab:red" if best else "tab:blue", zorder=3, label="best match" if best else None)
        axis.annotate(str(match.rank), (match.easting, y), textcoords="offset points", xytext=(0, 8), ha="center",
                      fontsize=8)
    axis.legend(loc="upper right", fontsize=8)
    axis.set_title(f"top {len(answer.matches)} matches")
    figure.tight_layout()
    return figure


def match_files(answer: PageAnswer, folder: Path) -> list[str]:
    """The matches as `matches.csv` and `matches.json` in `folder` (the page's downloads)."""
    rows = [{**asdict(match), "similarity": similarity} for match, similarity in zip(answer.matches, answer.similarities)]
    csv_path, json_path = folder / "matches.csv", folder / "matches.json"
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["rank"])
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=2))
    return [str(csv_path), str(json_path)]


def build_app(places: PlaceIndex, *, top_k: int = DEFAULT_TOP_K, threshold: dict | None = None,
              max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, examples: list[str] | None = None,
              title: str = "Where was this photo taken?"):
    """The page over `places`, as a `gradio.Blocks` (`.launch()` it, inline in a notebook too).

    Args:
        places: the place index.
        top_k: matches shown per photo.
        threshold: `{"similarity", "precision", "source"}` to decide by; None: the index's own.
        max_upload_mb: larger uploads are answered with a message.
        examples: photos offered as examples under the upload box.
        title: the page's heading.

    Returns:
        A `gradio.Blocks`; one request runs at a time (Gradio's queue), others wait their turn.

    Example:
    >>> import pytest; _ = pytest.importorskip("gradio")
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> route = read_csv_dataset(nordland_csv("test")).select(range(5), range(1))
    >>> places = PlaceIndex.build(build_netvlad_model(weights=None, pooling="mac"), route, image_size=(32, 64),
    ...                           verbose=False)
    >>> type(build_app(places)).__name__
    'Blocks'
    """
    gr = import_gradio()
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    outputs_root = Path(tempfile.mkdtemp(prefix="netvlad_tf_page_"))
    shows_assignment = hasattr(getattr(places.model, "pooling", None), "soft_assignment")

    def answer(photo):
        result = answer_photo(places, photo, top_k, threshold, max_upload_mb)
        folder = Path(tempfile.mkdtemp(dir=outputs_root))
        gallery = [(match.image_path, f"#{match.rank} · {similarity:.3f}")
                   for match, similarity in zip(result.matches, result.similarities)]
        table = [[match.rank, Path(match.image_path).name, match.easting, match.northing, round(similarity, 4)]
                 for match, similarity in zip(result.matches, result.similarities)]
        assignment = None
        if result.matches and shows_assignment:
            assignment = str(plot_soft_assignment(places.model, [photo], folder / "assignment.png", places.image_size,
                                                  places.max_side, title="NetVLAD's soft assignment of the photo"))
        files = match_files(result, folder) if result.matches else None
        return result.verdict, gallery, position_figure(places, result), assignment, table, files

    with warnings.catch_warnings():
        # Gradio 6 wants the theme in launch(); given here it also serves a plain `page.launch()`
        # in a notebook (Gradio 6 still reads it from here, and only warns).
        warnings.filterwarnings("ignore", message="The parameters have been moved from the Blocks constructor")
        page = gr.Blocks(title="netvlad_tf", theme=theme, analytics_enabled=False)
    with page:
        gr.Markdown(f"# {title}\nNetVLAD place recognition over {places.index.size} indexed images.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = _raw_image(gr, label="Photo", type="filepath", sources=["upload", "clipboard", "webcam"])
                button = gr.Button("Find the place", variant="primary")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[photo], label="Bundled winter frames")
            with gr.Column(scale=2):
                verdict = gr.Markdown(elem_id="verdict")
                gallery = gr.Gallery(label=f"Top {top_k}: rank · cosine similarity", columns=top_k, rows=1, height=240,
                                     object_fit="contain", elem_id="matches")
        with gr.Row():
            positions = gr.Plot(label="Positions")
            assignment = gr.Image(label="Soft assignment", type="filepath", visible=shows_assignment)
        table = gr.Dataframe(headers=["rank", "image", "easting", "northing", "similarity"], label="Matches",
                             interactive=False)
        downloads = gr.File(label="Download the matches (CSV, JSON)", file_count="multiple")
        outputs = [verdict, gallery, positions, assignment, table, downloads]
        button.click(answer, inputs=[photo], outputs=outputs, api_name="answer", concurrency_limit=1)
        photo.upload(answer, inputs=[photo], outputs=outputs, api_name=False, concurrency_limit=1)
    page.netvlad_tf_allowed_paths = sorted({str(Path(path).resolve().parent) for path in places.image_paths}
                                        | {str(outputs_root)})
    return page


def launch(page, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
           block: bool = True):
    """Serves `page` (from `build_app`) on `host:port`, the index's image folders readable and
    nothing else; Gradio refuses uploads beyond twice `max_upload_mb` before they reach the page."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return page.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, allowed_paths=page.netvlad_tf_allowed_paths, show_error=True,
        max_file_size=int(2 * max_upload_mb * 2**20), prevent_thread_lock=not block, quiet=True)


def _raw_image(gr, **options):
    """An image input that hands the page the uploaded file as it came, so the package's image
    policy judges it and a bad file becomes a message, not an error raised inside Gradio first.
    (Set on the instance: a subclass of a Gradio component makes Gradio write a `.pyi` file
    beside the module that defines it.)"""
    image = gr.Image(**options)
    preprocess = image.preprocess
    image.preprocess = lambda payload: (str(payload.path) if payload is not None and payload.path is not None
                                        else preprocess(payload))
    return image
