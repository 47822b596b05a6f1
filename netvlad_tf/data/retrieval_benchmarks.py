"""The image-retrieval benchmarks of the paper's Sec. 5.3 as files on disk: Oxford 5k / Paris 6k
(images and ground-truth lists) and INRIA Holidays (one folder, groups by file number)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netvlad_tf.data.folder_dataset import image_files


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


def read_oxford_paris(root, name: str | None = None) -> RetrievalBenchmark:
    """Reads the Oxford 5k / Paris 6k layout: `root/gt/<query>_{query,good,ok,junk}.txt` and the
    images anywhere under `root/images/` (searched recursively by file stem). Relevant =
    good ∪ ok; junk images are ignored; the query box comes from `_query.txt`.

    Example: see `tests/evaluation/test_image_retrieval.py`, which builds a miniature of this layout.
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

    Example: see `tests/evaluation/test_image_retrieval.py`.
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
