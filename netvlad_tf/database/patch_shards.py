"""Stored patch features: Patch-NetVLAD's descriptors of every database image, shard by shard.

With `netvlad-tf embed --patch_features=NAME` each descriptor shard gets a patch shard beside it
in `patches/`:

- `shard-000000.npy`: the patch descriptors of the shard's rows, one after another (row by row,
  patch size by patch size), `(patches, dims)` in float16 or float32, read memory-mapped;
- `shard-000000.json`: how many patches each row has per size and the image size it was seen
  at (null for a missing row), written last: a patch shard without it is unfinished.

The global shard is written after its patch shard, so a finished global shard always has its
patches; a run that is killed, or a patch shard that fails its check, embeds the shard again.
The manifest's `patch_features` records the settings (a resume must repeat them).

Reference: Hausler et al., CVPR 2021, Sec. 4.5 and Table 3 (storage per image of each setting).
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netvlad_tf.io.atomic_writes import atomic_file, write_bytes_atomically
from netvlad_tf.reranking.patch_descriptors import PatchFeatures
from netvlad_tf.reranking.settings import PatchSettings

PATCHES_FOLDER = "patches"
PATCH_DTYPES = ("float16", "float32")
# Patch shards kept open (memory-mapped) at once when reading.
OPEN_SHARDS = 8


def patch_manifest(settings: PatchSettings, name: str | None, dims: int, dtype: str) -> dict:
    """What a manifest records of the patch features (a resume must repeat it exactly).

    Example:
    >>> from netvlad_tf.reranking.settings import PATCH_SETTINGS
    >>> patch_manifest(PATCH_SETTINGS["speed"], "speed", 512, "float16")["patch_sizes"]
    [5]
    """
    if dtype not in PATCH_DTYPES:
        raise ValueError(f"Patch features are stored as one of {PATCH_DTYPES}, not {dtype!r}.")
    return {"name": name, "patch_sizes": list(settings.patch_sizes), "strides": list(settings.strides),
            "weights": list(settings.weights), "dims": int(dims), "scoring": settings.scoring, "dtype": dtype}


def settings_of(record: dict) -> PatchSettings:
    """The `PatchSettings` a manifest's `patch_features` record stands for."""
    return PatchSettings(tuple(record["patch_sizes"]), tuple(record["strides"]), tuple(record["weights"]),
                         record["dims"], record["scoring"])


def _paths(folder: Path, shard: int) -> tuple[Path, Path]:
    stem = f"shard-{shard:06d}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def write_patch_shard(folder, shard: int, features: Sequence[PatchFeatures | None], dtype: str) -> None:
    """Writes one patch shard (descriptors, then its index) atomically.

    Args:
        folder: the `patches/` folder.
        shard: the shard number.
        features: per row of the shard, its `PatchFeatures` (None: a missing row).
        dtype: `"float16"` or `"float32"`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [array for row in features if row is not None for array in row.descriptors]
    width = arrays[0].shape[1] if arrays else 0
    stacked = np.concatenate(arrays).astype(dtype) if arrays else np.zeros((0, width), dtype)
    array_path, index_path = _paths(folder, shard)
    with atomic_file(array_path, overwrite=True) as staging:
        with open(staging, "wb") as file:
            np.save(file, stacked)
    index = {"dims": int(width),
             "counts": [None if row is None else [len(array) for array in row.descriptors] for row in features],
             "image_sizes": [None if row is None else list(row.image_size) for row in features]}
    write_bytes_atomically(index_path, json.dumps(index).encode(), overwrite=True)


def patch_shard_problem(folder, shard: int, num_rows: int, dims: int) -> str | None:
    """Why patch shard `shard` cannot stand for `num_rows` rows of `dims`-D patches, or None.

    Example:
    >>> patch_shard_problem("/no/such/patches", 0, 4, 128)
    'has no patch shard'
    """
    array_path, index_path = _paths(Path(folder), shard)
    if not index_path.is_file() or not array_path.is_file():
        return "has no patch shard"
    try:
        index = json.loads(index_path.read_text())
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError) as error:
        return f"has a damaged patch shard ({str(error).splitlines()[0]})"
    counts = index.get("counts")
    if not isinstance(counts, list) or len(counts) != num_rows:
        return f"has a patch shard of {len(counts) if isinstance(counts, list) else 'no'} rows, not {num_rows}"
    total = sum(sum(row) for row in counts if row)
    if array.shape != (total, dims) and not (total == 0 and array.shape[0] == 0):
        return f"has a patch shard of shape {array.shape}, its index says ({total}, {dims})"
    return None


def read_patch_shard(folder, shard: int) -> list[PatchFeatures | None]:
    """Every row of one patch shard, in float32 (None for missing rows)."""
    opened = _OpenShard(Path(folder), shard)
    return opened.rows(range(len(opened.counts)))


class _OpenShard:
    def __init__(self, folder: Path, shard: int):
        array_path, index_path = _paths(folder, shard)
        index = json.loads(index_path.read_text())
        self.counts = index["counts"]
        self.image_sizes = index["image_sizes"]
        self.array = np.load(array_path, mmap_mode="r")
        totals = [sum(row) if row else 0 for row in self.counts]
        self.starts = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)

    def rows(self, positions) -> list[PatchFeatures | None]:
        result = []
        for position in positions:
            counts = self.counts[position]
            if counts is None:
                result.append(None)
                continue
            start, descriptors = int(self.starts[position]), []
            for count in counts:
                descriptors.append(np.asarray(self.array[start: start + count], np.float32))
                start += count
            result.append(PatchFeatures(tuple(self.image_sizes[position]), descriptors))
        return result


class StoredPatches:
    """Reads stored patch features by database index (the `CandidatePatches` of a descriptor
    folder or a place index), a few shards memory-mapped at a time.

    Args:
        folder: the `patches/` folder.
        row_ids: the plan row of each database index.
        shard_starts: the first plan row of each shard, ascending.

    Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> row = PatchFeatures((64, 96), [np.ones((3, 4), np.float32)])
    >>> write_patch_shard(folder, 0, [row, None, row], "float16")
    >>> [features.descriptors[0].shape for features in StoredPatches(folder, [0, 2], [0]).features([1])]
    [(3, 4)]
    """

    def __init__(self, folder, row_ids: Sequence[int], shard_starts: Sequence[int]):
        self.folder = Path(folder)
        self.row_ids = np.asarray(row_ids, np.int64)
        self.shard_starts = [int(start) for start in shard_starts]
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()

    def features(self, database_indices: Sequence[int]) -> list[PatchFeatures]:
        """The stored patch features of these database images, in this order."""
        result = []
        for index in database_indices:
            row = int(self.row_ids[int(index)])
            shard = bisect.bisect_right(self.shard_starts, row) - 1
            features, = self._shard(shard).rows([row - self.shard_starts[shard]])
            if features is None:
                raise ValueError(f"{self.folder}: row {row} has no stored patch features (its image was missing).")
            result.append(features)
        return result

    def _shard(self, shard: int) -> _OpenShard:
        if shard not in self._open:
            self._open[shard] = _OpenShard(self.folder, shard)
            while len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open.move_to_end(shard)
        return self._open[shard]
