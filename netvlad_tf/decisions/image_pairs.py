"""Image pairs for structure from motion, in hloc's format: which images to match.

hloc's `pairs_from_retrieval` (github.com/cvg/Hierarchical-Localization) pairs each query with
its `num_matched` most similar database images by the inner product of global descriptors,
never an image with itself and never at a negative similarity; without query or database
prefixes every image is matched against every other. For video, each frame is also paired with
the frames right after it (the idea of hloc's sequential pairs): consecutive frames overlap
whatever their descriptors say.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netvlad_tf.io.atomic_writes import atomic_file


def retrieval_pairs(query_names: Sequence[str], query_descriptors: np.ndarray, database_names: Sequence[str],
                    database_descriptors: np.ndarray, num_matched: int) -> list[tuple[str, str]]:
    """hloc's retrieval pairs: per query, up to `num_matched` database images, most similar first.

    Args:
        query_names, query_descriptors: the queries and their `(Q, dim)` descriptors.
        database_names, database_descriptors: the database and its `(N, dim)` descriptors.
        num_matched: database images per query at most.

    Returns:
        `(query_name, database_name)` pairs, query by query in order, best first; a pair of an
        image with itself or with a negative similarity is left out.

    Example:
    >>> names = ["a.jpg", "b.jpg", "c.jpg"]
    >>> descriptors = np.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
    >>> retrieval_pairs(names, descriptors, names, descriptors, num_matched=2)
    [('a.jpg', 'b.jpg'), ('b.jpg', 'a.jpg')]
    """
    if num_matched < 1:
        raise ValueError(f"num_matched must be at least 1, got {num_matched}.")
    query_descriptors = np.asarray(query_descriptors, np.float32)
    database_descriptors = np.asarray(database_descriptors, np.float32)
    if len(query_names) != len(query_descriptors) or len(database_names) != len(database_descriptors):
        raise ValueError("One name per descriptor is needed.")
    similarities = query_descriptors @ database_descriptors.T
    invalid = np.asarray(query_names, dtype=object)[:, None] == np.asarray(database_names, dtype=object)[None, :]
    invalid |= similarities < 0
    similarities = np.where(invalid, -np.inf, similarities)
    keep = min(int(num_matched), similarities.shape[1])
    ranked = np.argsort(-similarities, axis=1, kind="stable")[:, :keep]
    return [(query_names[query], database_names[match])
            for query, row in enumerate(ranked) for match in row if np.isfinite(similarities[query, match])]


def sequential_pairs(names: Sequence[str], window: int) -> list[tuple[str, str]]:
    """Each frame paired with the `window` frames after it, in stream order.

    Example:
    >>> sequential_pairs(["0.jpg", "1.jpg", "2.jpg"], 1)
    [('0.jpg', '1.jpg'), ('1.jpg', '2.jpg')]
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}.")
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(i + 1 + window, len(names)))]


def merged_pairs(pairs: list[tuple[str, str]], *more: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`pairs` as they are (hloc's retrieval pairs hold both `a b` and `b a`), then the pairs of
    `more` that are not there yet in either order.

    Example:
    >>> merged_pairs([("a", "b"), ("b", "a")], [("b", "a"), ("b", "c")])
    [('a', 'b'), ('b', 'a'), ('b', 'c')]
    """
    seen = {frozenset(pair) for pair in pairs}
    merged = list(pairs)
    for extra in more:
        for pair in extra:
            if frozenset(pair) not in seen:
                seen.add(frozenset(pair))
                merged.append(pair)
    return merged


def write_pairs(pairs: list[tuple[str, str]], path, overwrite: bool = False) -> Path:
    """Writes hloc's pairs file: one `name0 name1` per line (atomically)."""
    for pair in pairs:
        if any(" " in name for name in pair):
            raise ValueError(f"hloc's pairs file separates names by a space; {pair} holds one inside a name.")
    with atomic_file(path, overwrite) as staging:
        Path(staging).write_text("".join(f"{first} {second}\n" for first, second in pairs))
    return Path(path)
