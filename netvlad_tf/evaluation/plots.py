"""Plots people would rather look at than read: Recall@N curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def plot_recall_curves(recalls: dict[str, dict[int, float]], path, title: str = "") -> Path:
    """Draws Recall@N against N for each method (`{"netvlad": {1: 0.4, 5: 0.6}, ...}`).

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
