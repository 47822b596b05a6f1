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
    return _saved(figure, path, title)


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
    return _saved(figure, path, title)


def plot_patch_matches(pairs: list[tuple[str, str, object]], path, image_size: tuple[int, int] | None = None,
                       max_side: int | None = None, title: str = "") -> Path:
    """Each query beside its best candidate after re-ranking, a line between every matched pair
    of patch keypoints: green where the spatial check agrees (RANSAC inliers, or an offset near
    the matches' mean), red where it does not.

    Args:
        pairs: `(query image, candidate image, Verification)` per row (`Reranker.verify`).
        path: the image file to write.
        image_size, max_side: the image policy the keypoints were found under.
        title: the figure's title.

    Returns:
        `path` as a `Path`.

    Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from netvlad_tf.reranking.reranker import Verification
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> image = str(NORDLAND_DIR / "images/summer/images-12510.png")
    >>> points = np.array([[4.0, 4.0], [40.0, 20.0]])
    >>> check = Verification(np.array([0.5]), 0.5, points, points, np.array([True, False]))
    >>> plot_patch_matches([(image, image, check)], pathlib.Path(tempfile.mkdtemp()) / "m.png").is_file()
    True
    """
    from netvlad_tf.data.images import load_image

    figure, axes = plt.subplots(len(pairs), 1, figsize=(8, 2.4 * len(pairs) + 0.4), dpi=100, squeeze=False)
    for axis, (query_path, candidate_path, verification) in zip(axes[:, 0], pairs):
        query = load_image(query_path, image_size, max_side).numpy().astype("uint8")
        candidate = load_image(candidate_path, image_size, max_side).numpy().astype("uint8")
        height = max(query.shape[0], candidate.shape[0])
        canvas = np.zeros((height, query.shape[1] + candidate.shape[1], 3), np.uint8)
        canvas[: query.shape[0], : query.shape[1]] = query
        canvas[: candidate.shape[0], query.shape[1]:] = candidate
        axis.imshow(canvas)
        for (qx, qy), (cx, cy), agrees in zip(verification.query_points, verification.candidate_points,
                                               verification.consistent):
            axis.plot([qx, cx + query.shape[1]], [qy, cy], color="tab:green" if agrees else "tab:red",
                      linewidth=0.8 if agrees else 0.4, alpha=0.9 if agrees else 0.5)
        axis.set_title(f"{Path(query_path).name} → {Path(candidate_path).name}: verification {verification.score:.3f}, "
                       f"{int(np.sum(verification.consistent))}/{len(verification.consistent)} matches agree",
                       fontsize=8)
        axis.axis("off")
    return _saved(figure, path, title)


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
    return _saved(figure, path, title)


def plot_soft_assignment(model, image_paths: list[str], path, image_size: tuple[int, int] | None = None,
                         max_side: int | None = None, title: str = "") -> Path:
    """Each image beside NetVLAD's soft assignment over it: every conv cell coloured by the
    cluster that takes most of it, paler where the assignment is split between clusters.

    Args:
        model: a `PlaceRecognitionModel` with NetVLAD pooling.
        image_paths: the images, one row each.
        path: the image file to write.
        image_size, max_side: the image policy the model is run with.
        title: the figure's title; empty for none.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: the model's pooling has no soft assignment.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.sample_data import NORDLAND_DIR
    >>> image = str(NORDLAND_DIR / "images/summer/images-12510.png")
    >>> model = build_netvlad_model(weights=None, num_clusters=4)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "assignment.png"
    >>> plot_soft_assignment(model, [image], out, image_size=(64, 128)).is_file()
    True

    Reference: arXiv 1511.07247, Sec. 3.1 (the soft assignment a_k(x_i)) and Fig. 3.
    """
    from netvlad_tf.data.images import load_image

    pooling = getattr(model, "pooling", None)
    if not hasattr(pooling, "soft_assignment"):
        raise ValueError(f"{model.name} does not pool by NetVLAD: it has no soft assignment to show.")
    num_clusters = pooling.num_clusters
    palette = plt.get_cmap("tab20" if num_clusters <= 20 else "hsv", num_clusters)
    figure, axes = plt.subplots(len(image_paths), 2, figsize=(6.0, 1.6 * len(image_paths) + 0.4), dpi=100,
                                squeeze=False)
    for row, image_path in enumerate(image_paths):
        image = load_image(image_path, image_size, max_side).numpy()
        assignment = np.asarray(pooling.soft_assignment(model.backbone(image[None], training=False)))[0]
        colours = palette(assignment.argmax(-1))[..., :3]
        strength = assignment.max(-1, keepdims=True)  # 1: one cluster; 1/K: evenly split
        cells = np.clip(colours * strength + (1 - strength), 0.0, 1.0)
        axes[row, 0].imshow(image.astype("uint8"))
        axes[row, 1].imshow(image.astype("uint8"))
        axes[row, 1].imshow(cells, alpha=0.55, interpolation="nearest",
                            extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 1].set_title(f"soft assignment ({num_clusters} clusters)", fontsize=8)
    return _saved(figure, path, title)


def _saved(figure, path, title: str) -> Path:
    """Titles (above every panel), lays out, writes and closes `figure`; returns `path`."""
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
