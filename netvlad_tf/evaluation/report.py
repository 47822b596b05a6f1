"""Readable text of Recall@N results."""

from __future__ import annotations


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
