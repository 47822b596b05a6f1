"""Writes an evaluation to a folder: results.json, Recall@N and precision–recall curves and a
retrieval gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.evaluation.evaluate import EvaluationResult
from netvlad_tf.evaluation.plots import (
    plot_precision_recall,
    plot_recall_curves,
    plot_retrieval_gallery,
    plot_soft_assignment,
)
from netvlad_tf.io.atomic_writes import atomic_directory

GALLERY_QUERIES = 8
GALLERY_RETRIEVALS = 5
ASSIGNMENT_QUERIES = 4


def write_evaluation(result: EvaluationResult, dataset: GeoDataset, output_dir, label: str,
                     overwrite: bool = False, only_wrong: bool = False, model=None,
                     image_size: tuple[int, int] | None = None, max_side: int | None = None,
                     query_galleries: bool = False) -> Path:
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

    Returns:
        `output_dir` as a Path.
    """
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite) as staging:
        (staging / "results.json").write_text(json.dumps(result.to_json(), indent=2, allow_nan=False))
        curves = {label: result.recall, **{f"{label} ({c})": r for c, r in result.recall_by_condition.items()},
                  **{sequence_label(label, length): ranking.recall for length, ranking in result.sequences.items()}}
        plot_recall_curves(curves, staging / "recall_curve.png", title=dataset.name)
        plot_precision_recall(
            {label: result.precision_recall,
             **{sequence_label(label, length): ranking.precision_recall for length, ranking in result.sequences.items()}},
            staging / "precision_recall.png", title=f"{dataset.name}: best match accepted by similarity",
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


def sequence_label(label: str, length: int) -> str:
    """The name of sequence matching's rows in tables and plots.

    Example:
    >>> sequence_label("netvlad", 5)
    'netvlad, sequences of 5'
    """
    return f"{label}, sequences of {length}"
