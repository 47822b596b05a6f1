"""Plots people would rather look at than read: Recall@N and precision–recall curves, galleries."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from netvlad_tf.decisions.precision_recall import PrecisionRecall

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def plot_recall_curves(recalls: dict[str, dict[int, float]], path, title: str = "") -> Path:
    """Draws Recall@N against N for each method (`{"netvlad": {1: 0.4, 5: 0.6}, ...}`).

    Args:
        recalls: method name → {N: Recall@N as a fraction}.
        path: the image file to write (its suffix picks the format, e.g. `.png`).
        title: the plot's title; empty for none.

    Returns:
        `path` as a `Path`.

    Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "recall.png"
    >>> plot_recall_curves({"netvlad": {1: 0.5, 5: 0.8}}, out).is_file()
    True
    """
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=120)
    for method, curve in recalls.items():
        ns = sorted(curve)
        axes.plot(ns, [100 * curve[n] for n in ns], marker="o", label=method)
    axes.set_xlabel("N (number of top database candidates)")
    axes.set_ylabel("Recall@N (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def plot_retrieval_gallery(
    query_paths: list[str],
    retrieved_paths: list[list[str]],
    correct: list[list[bool]],
    path,
    title: str = "",
) -> Path:
    """Each query beside its top retrievals, framed green when correct and red when wrong.

    Args:
        query_paths: one image per row.
        retrieved_paths: per query, its retrieved database images, best first.
        correct: per query, whether each retrieval is within the positive radius.
        path: the image file to write.
        title: the figure's title; empty for none.

    Returns:
        `path` as a `Path`.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> image = str(NORDLAND_DIR / "images/summer/images-12510.png")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "gallery.png"
    >>> plot_retrieval_gallery([image], [[image, image]], [[True, False]], out).is_file()
    True
    """
    from netvlad_tf.data.images import load_image

    rows, columns = len(query_paths), 1 + max(len(r) for r in retrieved_paths)
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 1.3 * rows + 0.4), dpi=100, squeeze=False)
    for row, (query, retrieved, marks) in enumerate(zip(query_paths, retrieved_paths, correct)):
        cells = [(query, "query", "black")] + [
            (image, f"#{rank + 1}", "tab:green" if ok else "tab:red")
            for rank, (image, ok) in enumerate(zip(retrieved, marks))
        ]
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(cells):
                axis.axis("off")
                continue
            image_path, label, colour = cells[column]
            axis.imshow(load_image(image_path).numpy().astype("uint8"))
            axis.set_title(label, fontsize=8)
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def plot_precision_recall(curves: dict[str, PrecisionRecall], path, title: str = "") -> Path:
    """Draws the precision–recall step curve of accepting best matches, one line per method,
    with the area under it in the legend.

    Args:
        curves: method name → its `PrecisionRecall`.
        path: the image file to write.
        title: the plot's title; empty for none.

    Returns:
        `path` as a `Path`.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf.decisions.precision_recall import best_match_precision_recall
    >>> curve = best_match_precision_recall([0.9, 0.7], [True, False], [True, True])
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "pr.png"
    >>> plot_precision_recall({"netvlad": curve}, out).is_file()
    True
    """
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=120)
    for method, curve in curves.items():
        recall = np.concatenate([[0.0], curve.recall])
        precision = np.concatenate([[curve.precision[0]], curve.precision])
        axes.step(100 * recall, 100 * precision, where="pre", label=f"{method} (AUC {curve.auc:.2f})")
    axes.set_xlabel("Recall (%)")
    axes.set_ylabel("Precision (%)")
    axes.set_xlim(0, 100)
    axes.set_ylim(0, 101)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
