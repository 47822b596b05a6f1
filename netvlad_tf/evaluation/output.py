"""Writes an evaluation to a folder: results.json, a Recall@N curve and a retrieval gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.evaluation.evaluate import EvaluationResult
from netvlad_tf.evaluation.plots import plot_recall_curves, plot_retrieval_gallery
from netvlad_tf.io.atomic_writes import atomic_directory

GALLERY_QUERIES = 8
GALLERY_RETRIEVALS = 5


def write_evaluation(result: EvaluationResult, dataset: GeoDataset, output_dir, label: str,
                     overwrite: bool = False) -> Path:
    """Writes `results.json`, `recall_curve.png` and `gallery.png` (evenly spaced queries
    beside their top-5: green correct, red wrong) into a new `output_dir`, atomically.

    Args:
        result: what `evaluate` measured.
        dataset: the evaluated dataset (image paths for the gallery).
        output_dir: the folder to create.
        label: the method's name in the plot and the table.
        overwrite: replace an existing `output_dir`.

    Returns:
        `output_dir` as a Path.
    """
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite) as staging:
        (staging / "results.json").write_text(json.dumps(result.to_json(), indent=2))
        curves = {label: result.recall, **{f"{label} ({c})": r for c, r in result.recall_by_condition.items()}}
        plot_recall_curves(curves, staging / "recall_curve.png", title=dataset.name)
        shown = np.linspace(0, len(result.query_indices) - 1, min(GALLERY_QUERIES, len(result.query_indices))).astype(int)
        retrieved = [[i for i in result.ranked[row, :GALLERY_RETRIEVALS] if i >= 0] for row in shown]
        plot_retrieval_gallery(
            [dataset.query_paths[result.query_indices[row]] for row in shown],
            [[dataset.database_paths[i] for i in row] for row in retrieved],
            [[i in result.positives[row] for i in indices] for row, indices in zip(shown, retrieved)],
            staging / "gallery.png",
            title=f"{dataset.name}: {label}, top {GALLERY_RETRIEVALS}",
        )
    return output_dir
