"""Readable text of Recall@N and precision–recall results."""

from __future__ import annotations

from netvlad_tf.decisions.precision_recall import PrecisionRecall


def format_recall_table(recalls: dict[str, dict[int, float]]) -> str:
    """A plain-text table of Recall@N (%) per method (or condition).

    Example:
    >>> print(format_recall_table({"netvlad": {1: 0.5, 5: 0.75}}))
    method       R@1    R@5
    netvlad     50.0   75.0
    """
    ns = sorted(next(iter(recalls.values())))
    width = max(8, *(len(name) + 2 for name in recalls))
    lines = [f"{'method':<{width}}" + "".join(f"{'R@' + str(n):>7}" for n in ns)]
    for method, curve in recalls.items():
        lines.append(f"{method:<{width}}" + "".join(f"{100 * curve[n]:7.1f}" for n in ns))
    return "\n".join(lines)


def format_precision_recall_table(curves: dict[str, PrecisionRecall]) -> str:
    """A plain-text table of the precision–recall summary per method: area under the curve,
    recall (%) at 100 % and 99 % precision, and the similarity threshold that keeps 99 %.

    Example:
    >>> from netvlad_tf.decisions.precision_recall import best_match_precision_recall
    >>> print(format_precision_recall_table(
    ...     {"netvlad": best_match_precision_recall([0.9, 0.5], [True, False], [True, True])}))
    method       AUC  R@100%P  R@99%P  threshold@99%P
    netvlad    0.500     50.0    50.0          0.9000
    """
    width = max(8, *(len(name) + 2 for name in curves))
    lines = [f"{'method':<{width}}{'AUC':>7}{'R@100%P':>9}{'R@99%P':>8}{'threshold@99%P':>16}"]
    for method, curve in curves.items():
        summary = curve.summary()
        threshold = summary["threshold_at_99_precision"]
        lines.append(f"{method:<{width}}{summary['auc']:7.3f}{100 * summary['recall_at_100_precision']:9.1f}"
                     f"{100 * summary['recall_at_99_precision']:8.1f}"
                     f"{'none' if threshold is None else f'{threshold:.4f}':>16}")
    return "\n".join(lines)
