"""Writes an evaluation to a folder: results.json, Recall@N and precision–recall curves and a
retrieval gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.evaluation.evaluate import EvaluationResult
from netvlad_tf.evaluation.plots import (
    plot_patch_matches,
    plot_precision_recall,
    plot_recall_curves,
    plot_retrieval_gallery,
    plot_soft_assignment,
)
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.reranking.reranker import Reranker

GALLERY_QUERIES = 8
GALLERY_RETRIEVALS = 5
ASSIGNMENT_QUERIES = 4


def write_evaluation(result: EvaluationResult, dataset: GeoDataset, output_dir, label: str,
                     overwrite: bool = False, only_wrong: bool = False, model=None,
                     image_size: tuple[int, int] | None = None, max_side: int | None = None,
                     query_galleries: bool = False, rerank=None) -> Path:
    """Writes `results.json`, `recall_curve.png`, `precision_recall.png` (single images and each
    sequence length) and `gallery.png` (evenly spaced queries beside their top-5: green correct,
    red wrong) into a new `output_dir`, atomically.

    Args:
        result: what `evaluate` measured.
        dataset: the evaluated dataset (image paths for the gallery).
        output_dir: the folder to create.
        label: the method's name in the plot and the table.
        overwrite: replace an existing `output_dir`.
        only_wrong: the galleries show only queries whose best match is wrong (the failures
            to look at); a note says so when there are none.
        query_galleries: also write one gallery per query, `queries/<query row>.png`.
        model, image_size, max_side: the evaluated model and its image policy; with NetVLAD
            pooling, `soft_assignment.png` shows its clusters over the gallery's first queries.
        rerank: the re-ranking settings `evaluate` used: the curves then show the re-ranked
            ranking beside the global one, and `patch_matches.png` draws the matched patches of
            the gallery's first queries and their best candidates after re-ranking.

    Returns:
        `output_dir` as a Path.
    """
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite) as staging:
        (staging / "results.json").write_text(json.dumps(result.to_json(), indent=2, allow_nan=False))
        reranked = {} if result.reranked is None else {rerank_label(label): result.reranked}
        curves = {label: result.recall, **{name: ranking.recall for name, ranking in reranked.items()},
                  **{f"{label} ({c})": r for c, r in result.recall_by_condition.items()},
                  **{sequence_label(label, length): ranking.recall for length, ranking in result.sequences.items()}}
        plot_recall_curves(curves, staging / "recall_curve.png", title=dataset.name)
        plot_precision_recall(
            {label: result.precision_recall, **{name: ranking.precision_recall for name, ranking in reranked.items()},
             **{sequence_label(label, length): ranking.precision_recall for length, ranking in result.sequences.items()}},
            staging / "precision_recall.png", title=f"{dataset.name}: best match accepted by similarity"
            + (" (re-ranked: by verification score)" if reranked else ""),
        )
        rows = np.arange(len(result.query_indices))
        if only_wrong:
            rows = rows[[result.ranked[row, 0] not in result.positives[row] for row in rows]]
        if rows.size:
            shown = rows[np.linspace(0, len(rows) - 1, min(GALLERY_QUERIES, len(rows))).astype(int)]
            retrieved = [[i for i in result.ranked[row, :GALLERY_RETRIEVALS] if i >= 0] for row in shown]
            shown_queries = [dataset.query_paths[result.query_indices[row]] for row in shown]
            if model is not None and hasattr(getattr(model, "pooling", None), "soft_assignment"):
                plot_soft_assignment(model, shown_queries[:ASSIGNMENT_QUERIES], staging / "soft_assignment.png",
                                     image_size, max_side, title=f"{dataset.name}: {label}")
            if result.reranked is not None and model is not None and rerank is not None:
                _plot_matches(result, dataset, model, rerank, shown[:ASSIGNMENT_QUERIES], image_size, max_side,
                              staging / "patch_matches.png", f"{dataset.name}: {rerank_label(label)}, best candidate")
            plot_retrieval_gallery(
                shown_queries,
                [[dataset.database_paths[i] for i in row] for row in retrieved],
                [[i in result.positives[row] for i in indices] for row, indices in zip(shown, retrieved)],
                staging / "gallery.png",
                title=f"{dataset.name}: {label}, top {GALLERY_RETRIEVALS}" + (", wrong best matches" if only_wrong else ""),
            )
            if query_galleries:
                (staging / "queries").mkdir()
                for row in rows:
                    query = result.query_indices[row]
                    retrieved = [i for i in result.ranked[row, :GALLERY_RETRIEVALS] if i >= 0]
                    plot_retrieval_gallery([dataset.query_paths[query]], [[dataset.database_paths[i] for i in retrieved]],
                                           [[i in result.positives[row] for i in retrieved]],
                                           staging / "queries" / f"{query:06d}.png", title=Path(dataset.query_paths[query]).name)
        else:
            (staging / "gallery.txt").write_text("Every query's best match is correct: no wrong match to show.\n")
    return output_dir


def _plot_matches(result, dataset, model, rerank, rows, image_size, max_side, path, title) -> None:
    """`patch_matches.png`: the spatial check of each shown query's best match after re-ranking."""
    reranker = Reranker(model, rerank)
    queries = [dataset.query_paths[result.query_indices[row]] for row in rows]
    best = [dataset.database_paths[result.reranked.ranked[row, 0]] for row in rows]
    query_features = dict(reranker.describer.describe_images(queries, image_size, max_side))
    best_features = dict(reranker.describer.describe_images(best, image_size, max_side))
    pairs = [(query, match, reranker.verify(query_features[number], [best_features[number]])[0])
             for number, (query, match) in enumerate(zip(queries, best))]
    plot_patch_matches(pairs, path, image_size, max_side, title)


def read_threshold(results_path) -> tuple[float, str]:
    """The 99 %-precision similarity threshold an evaluation measured, and on what.

    Args:
        results_path: `results.json` written by `netvlad-tf evaluate` (`write_evaluation`).

    Returns:
        `(threshold_at_99_precision, "<dataset name>")`.

    Raises:
        ValueError: the file is not an evaluation's results, or 99 % precision was never reached.

    Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
    >>> _ = path.write_text(json.dumps({"dataset": "route", "precision_recall": {"threshold_at_99_precision": 0.6}}))
    >>> read_threshold(path)
    (0.6, 'route')
    """
    path = Path(results_path)
    try:
        results = json.loads(path.read_text())
        threshold = results["precision_recall"]["threshold_at_99_precision"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not the results.json of `netvlad-tf evaluate` ({error}).") from None
    if threshold is None:
        raise ValueError(f"{path}: that evaluation never reached 99 % precision, so it has no threshold to use.")
    return float(threshold), str(results.get("dataset", path.parent.name))


def rerank_label(label: str) -> str:
    """The name of the re-ranked ranking in tables and plots.

    Example:
    >>> rerank_label("netvlad")
    'netvlad, re-ranked'
    """
    return f"{label}, re-ranked"


def sequence_label(label: str, length: int) -> str:
    """The name of sequence matching's rows in tables and plots.

    Example:
    >>> sequence_label("netvlad", 5)
    'netvlad, sequences of 5'
    """
    return f"{label}, sequences of {length}"
