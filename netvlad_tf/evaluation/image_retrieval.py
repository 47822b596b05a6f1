"""Image retrieval mAP on Oxford 5k / Paris 6k and INRIA Holidays (paper, Sec. 5.3); the
benchmarks' files are read by `netvlad_tf.data.retrieval_benchmarks`."""

from __future__ import annotations

import numpy as np

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.data.retrieval_benchmarks import RetrievalBenchmark
from netvlad_tf.inference.embedding import Embedder, embed_images
from netvlad_tf.retrieval import create_index


def average_precision(ranked: np.ndarray, relevant: np.ndarray, junk: np.ndarray) -> float:
    """Average precision of one ranking with the Oxford protocol: junk images are skipped,
    and precision is integrated with the trapezoidal rule over recall steps.

    Args:
        ranked: database indices, best first.
        relevant: indices of the relevant database images.
        junk: indices ignored in the ranking.

    Reference: arXiv 1511.07247, Sec. 5.3 (image retrieval, Oxford/Paris/Holidays protocol).

    Example:
    >>> average_precision(np.array([3, 9, 1]), relevant=np.array([3, 1]), junk=np.array([]))
    0.7916666666666666
    """
    relevant_set, junk_set = set(relevant.tolist()), set(junk.tolist())
    if not relevant_set:
        raise ValueError("A query needs at least one relevant image.")
    ap, hits, seen, previous_recall, previous_precision = 0.0, 0, 0, 0.0, 1.0
    for index in ranked.tolist():
        if index in junk_set:
            continue
        hits += index in relevant_set
        seen += 1
        recall, precision = hits / len(relevant_set), hits / seen
        ap += (recall - previous_recall) * (previous_precision + precision) / 2
        previous_recall, previous_precision = recall, precision
    return ap


def mean_average_precision(model, benchmark: RetrievalBenchmark, max_side: int | None = DEFAULT_MAX_SIDE,
                           crop_queries: bool = True, batch_size: int = 1, verbose: bool = True) -> dict:
    """mAP of `model` on `benchmark`, with query images cropped to their box when given.

    Args:
        model: maps images to descriptors.
        benchmark: queries, database, relevant and junk images per query.
        max_side: the image policy's cap on the longer side (None: native size).
        crop_queries: crop each query to its box (the Oxford/Paris protocol).
        batch_size: database images per forward pass.
        verbose: show progress.

    Returns:
        `{"map": float, "average_precision": [per query]}`.
    """
    import tensorflow as tf

    from netvlad_tf.data.images import load_image, resized_size

    database = embed_images(model, benchmark.database_paths, max_side=max_side, batch_size=batch_size, verbose=verbose)
    forward = Embedder(model)  # compiled, as for every other batch
    queries = []
    for path, box in zip(benchmark.query_paths, benchmark.query_boxes):
        native = load_image(path, max_side=None)  # decoded once; the box is in native pixels
        height, width = resized_size(native.shape[0], native.shape[1], max_side=max_side)
        scale = height / native.shape[0]
        image = tf.image.resize(native, (height, width)).numpy() if scale != 1 else native.numpy()
        if crop_queries and box is not None:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
            image = image[max(y1, 0): max(y2, y1 + 1), max(x1, 0): max(x2, x1 + 1)]
        queries.append(forward(image[None].astype(np.float32))[0][0])
    index = create_index("flat", database.shape[1])
    index.add(database)
    _, ranked = index.search(np.stack(queries), len(benchmark.database_paths))
    precisions = [average_precision(r, rel, j) for r, rel, j in zip(ranked, benchmark.relevant, benchmark.junk)]
    return {"map": float(np.mean(precisions)), "average_precision": precisions}
