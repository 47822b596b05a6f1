"""The descriptor folder as one object: its manifest, plan, shards and model (`DescriptorFolder`).

The files are described in `shards.py` (the shard format) and below; every reader and writer of a
folder — `embed_database`, the shard writers (here or in Ray actors), the index builders,
`PlaceIndex`, hloc's files — goes through a `DescriptorFolder`, so the manifest's keys are spelled
here only.

A folder holds `manifest.json`: what the rows were embedded with (model checksum and name, image
policy, shard size, the plan's checksum, precision, patch features), its `segments` (the first
plan, then each append of rows: shards never straddle two) and, once every shard exists,
`"complete": true` with `num_missing`.
"""

from __future__ import annotations

import bisect
import csv
import datetime
import io
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netvlad_tf.database.patch_shards import PATCHES_FOLDER, patch_shard_problem
from netvlad_tf.database.shards import (
    MANIFEST_FILE,
    MISSING_FILE,
    ROWS_FILE,
    SHARDS_FOLDER,
    DescriptorFolderError,
    DescriptorShard,
    MissingRow,
    file_sha256,
    read_shard,
    rows_checksum,
    shard_missing_rows,
    shard_name,
    shard_problem,
    table_coordinates,
)
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.io.atomic_writes import atomic_file, write_bytes_atomically
from netvlad_tf.io.json_files import read_json_object
from netvlad_tf.io.keras_archive import MODEL_FILE

FORMAT = "netvlad_tf.descriptors"
FORMAT_VERSION = 1
# The settings that decide the descriptors; a resumed run must repeat them exactly.
IDENTITY_KEYS = ("model_sha256", "descriptor_dim", "image_size", "max_side", "shard_size",
                 "num_rows", "rows_sha256", "precision")
# Every manifest holds these.
REQUIRED_KEYS = ("format", "version", "model_name", *IDENTITY_KEYS, "segments", "complete")
# What a place index records of the finished folder it was built from (`source_record`).
SOURCE_KEYS = ("model_sha256", "descriptor_dim", "num_rows", "rows_sha256", "num_missing")


class DescriptorFolder:
    """A descriptor folder (`netvlad-tf embed`): its manifest's settings as attributes, its plan,
    its shards read one at a time, and the model that embeds it.

    Open one with `DescriptorFolder.open` (finished or not) or make one with `create`; a changed
    manifest is written with `record`, which returns the folder as it now is.

    Args:
        directory: the folder.
        manifest: its manifest (checked: every key of `REQUIRED_KEYS`).

    Example:
    >>> DescriptorFolder.open("/no/such/folder")
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: /no/such/folder is not a descriptor folder (no manifest.json; ...).

    Reference: arXiv 1511.07247, Sec. 5.1 (retrieval over the database's descriptors).
    """

    def __init__(self, directory, manifest: dict):
        self.directory = Path(directory)
        missing = [key for key in REQUIRED_KEYS if key not in manifest]
        if manifest.get("format") != FORMAT or missing:
            raise DescriptorFolderError(f"{self.directory / MANIFEST_FILE} is not a descriptor manifest "
                                        f"(missing {', '.join(missing) or 'its format'}).")
        self._manifest = manifest
        self.shard_ranges = _ranges(manifest["segments"], manifest["shard_size"])

    # Opening and writing.

    @classmethod
    def open(cls, directory, *, complete: bool = True) -> DescriptorFolder:
        """The folder at `directory`.

        Args:
            directory: the folder.
            complete: refuse a folder whose embedding has not finished.

        Raises:
            DescriptorFolderError: no manifest, an unreadable one, or (with `complete`) an
                unfinished folder, each in one line.
        """
        folder = cls.find(directory)
        if folder is None:
            raise DescriptorFolderError(f"{directory} is not a descriptor folder (no {MANIFEST_FILE}; made by "
                                        "`netvlad-tf embed`).")
        if complete and not folder.complete:
            raise DescriptorFolderError(f"{directory} is unfinished ({len(folder.missing_shards())} shards missing); "
                                        "rerun the same `netvlad-tf embed` command to complete it.")
        return folder

    @classmethod
    def of(cls, folder) -> DescriptorFolder:
        """`folder` itself when it is a `DescriptorFolder`, else the finished folder at that path
        (`open`): what the functions that take either call first."""
        return folder if isinstance(folder, DescriptorFolder) else cls.open(folder)

    @classmethod
    def find(cls, directory) -> DescriptorFolder | None:
        """The folder at `directory`, None where it has no manifest (not a descriptor folder)."""
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            return None
        return cls(directory, read_json_object(path, DescriptorFolderError))

    @classmethod
    def create(cls, directory, *, model, model_file=None, rows: pa.Table, identity: dict,
               patch_features: dict | None) -> DescriptorFolder:
        """Makes a new folder: the model (a copy of `model_file`, or `model` saved), the plan,
        then the manifest (one segment over the whole plan, not complete); returns it.

        Args:
            directory: the folder (empty or new).
            model: the model the rows are embedded with.
            model_file: its `.keras` file to copy (None: `model` is saved).
            rows: the plan (`shards.rows_table`).
            identity: the `IDENTITY_KEYS` values; a `model_sha256` of None becomes the saved file's.
            patch_features: the patch-feature record (`patch_shards.patch_manifest`), or None.
        """
        directory = Path(directory)
        (directory / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
        with atomic_file(directory / MODEL_FILE, overwrite=True) as staging:
            if model_file is None:
                model.save(staging)
            else:
                shutil.copyfile(model_file, staging)
        if identity["model_sha256"] is None:
            identity = {**identity, "model_sha256": file_sha256(directory / MODEL_FILE)}
        with atomic_file(directory / ROWS_FILE, overwrite=True) as staging:
            pq.write_table(rows, staging)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "model_name": model.name,
                    **{key: identity[key] for key in IDENTITY_KEYS},
                    **({"patch_features": patch_features} if patch_features else {}),
                    "segments": [_segment(0, identity["num_rows"])], "complete": False}
        return cls(directory, manifest).record()

    def record(self, **changes) -> DescriptorFolder:
        """Writes the manifest with `changes` applied, atomically; returns the folder as it now is.

        Example: `folder.record(complete=True, num_missing=0)`.
        """
        manifest = {**self._manifest, **changes}
        folder = DescriptorFolder(self.directory, manifest)
        write_bytes_atomically(self.directory / MANIFEST_FILE, json.dumps(manifest, indent=2).encode(), overwrite=True)
        return folder

    def append(self, rows: pa.Table) -> DescriptorFolder:
        """Makes `rows` (this folder's plan with rows appended) the plan: the new rows become a
        segment of their own (new shards), not complete. The plan is written before the
        manifest, so a kill in between leaves a folder that the same call appends to again."""
        with atomic_file(self.directory / ROWS_FILE, overwrite=True) as staging:
            pq.write_table(rows, staging)
        added = _segment(self.num_rows, rows.num_rows - self.num_rows)
        return self.record(num_rows=rows.num_rows, rows_sha256=rows_checksum(rows),
                           segments=self._manifest["segments"] + [added], complete=False)

    # The manifest's settings.

    @property
    def identity(self) -> dict:
        """The settings that decide the descriptors (`IDENTITY_KEYS`)."""
        return {key: self._manifest[key] for key in IDENTITY_KEYS}

    @property
    def model_name(self) -> str:
        return self._manifest["model_name"]

    @property
    def num_rows(self) -> int:
        """Rows of the plan, missing ones included."""
        return self._manifest["num_rows"]

    @property
    def descriptor_dim(self) -> int:
        return self._manifest["descriptor_dim"]

    @property
    def image_size(self) -> tuple[int, int] | None:
        """`(H, W)` every image was resized to, or None (native sizes, capped at `max_side`)."""
        size = self._manifest["image_size"]
        return tuple(size) if size else None

    @property
    def max_side(self) -> int | None:
        return self._manifest["max_side"]

    @property
    def precision(self) -> str:
        """The precision the images were embedded in."""
        return self._manifest["precision"]

    @property
    def patch_features(self) -> dict | None:
        """The stored patch features' record (`patch_shards.patch_manifest`), or None."""
        return self._manifest.get("patch_features")

    @property
    def complete(self) -> bool:
        return bool(self._manifest["complete"])

    @property
    def num_missing(self) -> int:
        """Rows whose image could not be read (known once complete)."""
        return self._manifest.get("num_missing", 0)

    @property
    def num_embedded(self) -> int:
        """Rows with a descriptor."""
        return self.num_rows - self.num_missing

    def source_record(self) -> dict:
        """What a place index records of this finished folder, to add its appended rows later."""
        return {key: getattr(self, key) if key == "num_missing" else self._manifest[key] for key in SOURCE_KEYS}

    def differs_from(self, record: dict) -> list[str]:
        """The `SOURCE_KEYS` model and dimension of `record` this folder does not share."""
        return [key for key in ("model_sha256", "descriptor_dim") if self._manifest[key] != record[key]]

    # Files.

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def patches_folder(self) -> Path:
        return self.directory / PATCHES_FOLDER

    def shard_path(self, shard: int) -> Path:
        return self.directory / SHARDS_FOLDER / shard_name(shard)

    def runner(self) -> ModelRunner:
        """What embeds this folder's images: its model in its precision (`ModelRunner.open`)."""
        return ModelRunner.open(self.directory, self.precision)

    # The plan.

    def plan(self) -> pa.Table:
        """`rows.parquet`: `row_id`, `image_path`, `easting`, `northing`, one row per image."""
        return pq.read_table(self.directory / ROWS_FILE)

    def plan_paths_and_coordinates(self) -> tuple[list[str], np.ndarray]:
        """Every row's image path and `(N, 2)` coordinates, missing rows included."""
        rows = self.plan()
        return rows.column("image_path").to_pylist(), table_coordinates(rows)

    def plan_prefix_checksum(self, num_rows: int) -> str:
        """`rows_checksum` of the plan's first `num_rows` rows (what an index built before an
        append covered)."""
        return rows_checksum(self.plan().slice(0, num_rows))

    def shard_of_row(self, row_id: int) -> int:
        """The shard that holds plan row `row_id`."""
        return bisect.bisect_right([rows.start for rows in self.shard_ranges], row_id) - 1

    def rows_in(self, shards: Sequence[int]) -> int:
        """How many plan rows the listed shards hold."""
        return sum(len(self.shard_ranges[shard]) for shard in shards)

    # The shards.

    def missing_shards(self) -> list[int]:
        """The shard numbers that have no file yet."""
        return [shard for shard in range(len(self.shard_ranges)) if not self.shard_path(shard).is_file()]

    def to_embed(self) -> tuple[list[int], dict[int, str]]:
        """The shards a run must (re)write: those without a file, and those whose file fails
        `shard_problem` (or whose patch shard is wrong); all their numbers and, for the damaged
        ones, what is wrong. Cheap: footers and row ids, not the descriptors."""
        pending, damaged = [], {}
        for shard, rows in enumerate(self.shard_ranges):
            path = self.shard_path(shard)
            if not path.is_file():
                pending.append(shard)
                continue
            problem = shard_problem(path, rows, self.descriptor_dim)
            if problem is None and self.patch_features:
                problem = patch_shard_problem(self.patches_folder, shard, len(rows), self.patch_features["dims"])
            if problem is not None:
                pending.append(shard)
                damaged[shard] = problem
        return pending, damaged

    def missing_rows(self, known: dict[int, list[MissingRow]] | None = None) -> list[MissingRow]:
        """Every missing row of the written shards, in row order (three small columns a shard).

        Args:
            known: shard → its missing rows, where they are known already (the shards a
                `ShardWriter` just wrote): those shards are not read.
        """
        known = known or {}
        rows: list[MissingRow] = []
        for shard in range(len(self.shard_ranges)):
            if shard in known:
                rows += known[shard]
            elif self.shard_path(shard).is_file():
                rows += shard_missing_rows(self.shard_path(shard))
        return rows

    def read_shard(self, shard: int) -> DescriptorShard:
        """Shard number `shard`, checked against the plan rows it must hold.

        Raises:
            DescriptorFolderError: the file is missing, damaged or holds other rows (named).
        """
        path, expected = self.shard_path(shard), self.shard_ranges[shard]
        if not path.is_file():
            raise DescriptorFolderError(f"{path} is missing from a folder whose manifest says it is complete; "
                                        "rerun the `netvlad-tf embed` command that made it to embed it again.")
        rows = read_shard(path, self.descriptor_dim)
        held = np.sort(np.concatenate([rows.row_ids, rows.missing_row_ids]))
        if not np.array_equal(held, np.arange(expected.start, expected.stop)):
            raise DescriptorFolderError(f"{path} holds rows other than {expected.start}–{expected.stop - 1}; "
                                        "rerun the `netvlad-tf embed` command that made its folder to embed it again.")
        return rows

    def shards(self, first: int = 0) -> Iterator[DescriptorShard]:
        """The shards from number `first` on, in row order, one at a time (flat memory)."""
        for shard in range(first, len(self.shard_ranges)):
            yield self.read_shard(shard)

    def read(self, memmap_path=None) -> DescriptorTable:
        """Every embedded row in row-aligned arrays (`read_descriptors`), in one pass over the shards."""
        shape = (self.num_embedded, self.descriptor_dim)
        if memmap_path is None:
            descriptors = np.zeros(shape, np.float32)
        else:
            descriptors = np.lib.format.open_memmap(memmap_path, mode="w+", dtype=np.float32, shape=shape)
        image_paths: list[str] = []
        coordinates = np.zeros((shape[0], 2), np.float64)
        row_ids = np.zeros(shape[0], np.int64)
        filled = 0
        for rows in self.shards():
            end = filled + len(rows.row_ids)
            if end > shape[0]:
                raise DescriptorFolderError(f"{self.directory}: the shards hold more embedded rows than its "
                                            f"manifest's {shape[0]}; rerun the `netvlad-tf embed` command that made it.")
            descriptors[filled:end] = rows.descriptors
            coordinates[filled:end] = rows.coordinates
            row_ids[filled:end] = rows.row_ids
            image_paths.extend(rows.image_paths)
            filled = end
        if filled != shape[0]:
            raise DescriptorFolderError(f"{self.directory}: the shards hold {filled} embedded rows, its manifest "
                                        f"says {shape[0]}; rerun the `netvlad-tf embed` command that made it.")
        if memmap_path is not None:
            descriptors.flush()
            descriptors = np.load(memmap_path, mmap_mode="r")
        return DescriptorTable(image_paths, coordinates, descriptors, self, row_ids)

    def write_missing_list(self, missing: list[MissingRow]) -> None:
        """`missing.csv` (`row_id,image_path,reason`) when rows are missing; none otherwise."""
        path = self.directory / MISSING_FILE
        if not missing:
            path.unlink(missing_ok=True)
            return
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["row_id", "image_path", "reason"])
        table.writerows([row.row_id, row.image_path, row.reason] for row in missing)
        write_bytes_atomically(path, text.getvalue().encode(), overwrite=True)


@dataclass
class DescriptorTable:
    """A whole descriptor folder's embedded rows: image paths, `(M, 2)` coordinates, `(M, dim)`
    descriptors and `row_ids`, the plan rows they come from (M = N − `num_missing`: rows whose
    image could not be read are left out, never given a zero vector), and the folder."""

    image_paths: list[str]
    coordinates: np.ndarray
    descriptors: np.ndarray
    folder: DescriptorFolder
    row_ids: np.ndarray

    @property
    def num_missing(self) -> int:
        """Plan rows left out: their images could not be read (listed in `missing.csv`)."""
        return self.folder.num_rows - len(self.row_ids)


def read_descriptors(directory, memmap_path=None) -> DescriptorTable:
    """Reads a finished descriptor folder (`netvlad-tf embed`) into row-aligned arrays.

    Parquet pages are decoded, not mapped, so by default the descriptors are gathered into RAM
    (`N · dim · 4` bytes). Rows whose image could not be read are left out (`row_ids` says
    which plan row each descriptor is; `num_missing` how many are not there). With
    `memmap_path` they are streamed shard by shard into a `.npy` file there and returned
    memory-mapped, so a database larger than RAM can still be read; `iter_shards` gives one
    shard at a time.

    Args:
        directory: the descriptor folder.
        memmap_path: a new `.npy` file to hold the descriptors (None: in RAM).

    Returns:
        A `DescriptorTable`.

    Raises:
        DescriptorFolderError: not a descriptor folder, unfinished, or a damaged shard (named).

    Example:
    >>> import netvlad_tf
    >>> netvlad_tf.read_descriptors("/no/such/folder")
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: /no/such/folder is not a descriptor folder (no manifest.json; ...).
    """
    return DescriptorFolder.open(directory).read(memmap_path)


def iter_shards(directory) -> Iterator[DescriptorShard]:
    """The shards of a finished descriptor folder in row order, one at a time (flat memory).

    Example:
    >>> import tempfile, pathlib
    >>> next(iter_shards(pathlib.Path(tempfile.mkdtemp())))
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: ... is not a descriptor folder (no manifest.json; made by `netvlad-tf embed`).
    """
    yield from DescriptorFolder.open(directory).shards()


def _ranges(segments: list[dict], shard_size: int) -> list[range]:
    """The plan rows of every shard: each segment (the first plan, then each append) cut into
    `shard_size` rows, its last shard possibly short.

    Example:
    >>> _ranges([{"first_row": 0, "num_rows": 6}, {"first_row": 6, "num_rows": 6}], 4)
    [range(0, 4), range(4, 6), range(6, 10), range(10, 12)]
    """
    ranges = []
    for segment in segments:
        stop = segment["first_row"] + segment["num_rows"]
        ranges += [range(start, min(start + shard_size, stop)) for start in range(segment["first_row"], stop, shard_size)]
    return ranges


def _segment(first_row: int, num_rows: int) -> dict:
    """A manifest segment: rows `[first_row, first_row + num_rows)`, added now."""
    return {"first_row": first_row, "num_rows": num_rows,
            "added": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
