"""Choosing a subset of a dataset's items."""

from __future__ import annotations

from collections.abc import Sequence


def evenly_spaced(items: Sequence, count: int) -> list:
    """At most `count` of `items`, spread evenly over all of them (every ⌈len/count⌉-th): how
    images are chosen for k-means, whitening and calibration, so they see the whole route, not
    its first stretch.

    Example:
    >>> evenly_spaced(list(range(10)), 3)
    [0, 4, 8]
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    return list(items)[:: max(1, -(-len(items) // count))]
