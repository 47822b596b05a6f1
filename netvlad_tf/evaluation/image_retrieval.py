"""Image retrieval mAP on Oxford 5k / Paris 6k and INRIA Holidays (paper, Sec. 5.3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netvlad_tf.data.folder_dataset import image_files
from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.retrieval import create_index


@dataclass
class RetrievalBenchmark:
    """Queries, database images and, per query, the relevant and the ignored ("junk") images.

    Attributes:
        name: benchmark name.
        database_paths: all database images.
        query_paths: query images.
        query_boxes: per query an `(x1, y1, x2, y2)` region (Oxford/Paris) or None.
        relevant: per query, database indices that count as correct.
        junk: per query, database indices left out of the ranking (e.g. the query itself).
    """

    name: str
    database_paths: list[str]
    query_paths: list[str]
    query_boxes: list[tuple[float, float, float, float] | None]
    relevant: list[np.ndarray]
    junk: list[np.ndarray]


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


def read_oxford_paris(root, name: str | None = None) -> RetrievalBenchmark:
    """Reads the Oxford 5k / Paris 6k layout: `root/gt/<query>_{query,good,ok,junk}.txt` and the
    images anywhere under `root/images/` (searched recursively by file stem). Relevant =
    good ∪ ok; junk images are ignored; the query box comes from `_query.txt`.

    Example: see `tests/test_image_retrieval.py`, which builds a miniature of this layout.
    """
    root = Path(root)
    gt_dir = root / "gt"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir} does not exist: expected the benchmark's gt/ folder.")
    by_stem = {p.stem: str(p) for p in image_files(root / "images", recursive=True)}
    if not by_stem:
        raise ValueError(f"No images under {root / 'images'}.")
    database_paths = list(by_stem.values())
    position = {stem: i for i, stem in enumerate(by_stem)}
    query_paths, boxes, relevant, junk = [], [], [], []
    for query_file in sorted(gt_dir.glob("*_query.txt")):
        prefix = str(query_file)[: -len("_query.txt")]
        fields = query_file.read_text().split()
        stem = fields[0].removeprefix("oxc1_")
        if stem not in position:
            raise ValueError(f"{query_file.name}: query image {stem!r} is not under images/.")
        query_paths.append(by_stem[stem])
        boxes.append(tuple(float(v) for v in fields[1:5]) if len(fields) >= 5 else None)

        def listed(kind, prefix=prefix):
            path = Path(f"{prefix}_{kind}.txt")
            names = path.read_text().split() if path.is_file() else []
            unknown = [n for n in names if n not in position]
            if unknown:
                raise ValueError(f"{path.name}: images {unknown[:3]} are not under images/.")
            return [position[n] for n in names]

        relevant.append(np.array(listed("good") + listed("ok"), dtype=np.int64))
        junk.append(np.array(listed("junk"), dtype=np.int64))
    if not query_paths:
        raise ValueError(f"No *_query.txt files in {gt_dir}.")
    return RetrievalBenchmark(name or root.name, database_paths, query_paths, boxes, relevant, junk)


def read_holidays(image_dir, name: str = "holidays") -> RetrievalBenchmark:
    """Reads INRIA Holidays: images `NNNNNN.jpg`; each group of 100 numbers is one scene whose
    first image (number divisible by 100) is the query; the query itself is junk.

    Example: see `tests/test_image_retrieval.py`.
    """
    paths = image_files(image_dir)
    try:
        numbers = np.array([int(p.stem) for p in paths])
    except ValueError:
        raise ValueError(f"Holidays images must be named NNNNNN.jpg, found e.g. {paths[0].name}.") from None
    groups = numbers // 100
    query_positions = np.flatnonzero(numbers % 100 == 0)
    relevant = [np.flatnonzero((groups == groups[q]) & (np.arange(len(paths)) != q)) for q in query_positions]
    return RetrievalBenchmark(
        name, [str(p) for p in paths], [str(paths[q]) for q in query_positions],
        [None] * len(query_positions), relevant, [np.array([q]) for q in query_positions],
    )


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
    queries = []
    for path, box in zip(benchmark.query_paths, benchmark.query_boxes):
        native = load_image(path, max_side=None)  # decoded once; the box is in native pixels
        height, width = resized_size(native.shape[0], native.shape[1], max_side=max_side)
        scale = height / native.shape[0]
        image = tf.image.resize(native, (height, width)).numpy() if scale != 1 else native.numpy()
        if crop_queries and box is not None:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
            image = image[max(y1, 0): max(y2, y1 + 1), max(x1, 0): max(x2, x1 + 1)]
        queries.append(np.asarray(model(image[None], training=False))[0])
    index = create_index("flat", database.shape[1])
    index.add(database)
    _, ranked = index.search(np.stack(queries), len(benchmark.database_paths))
    precisions = [average_precision(r, rel, j) for r, rel, j in zip(ranked, benchmark.relevant, benchmark.junk)]
    return {"map": float(np.mean(precisions)), "average_precision": precisions}
