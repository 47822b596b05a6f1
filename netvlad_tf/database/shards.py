"""The descriptor folder: Parquet shards of database descriptors, the row plan and a manifest.

A folder written by `netvlad-tf embed` (one process or Ray workers) holds

- `model.keras`: a copy of the model that made the descriptors (the folder is self-contained);
- `rows.parquet`: the plan, one row per image (`row_id`, `image_path`, `easting`, `northing`);
- `shards/shard-000000.parquet`, …: rows `[i·S, (i+1)·S)` of the plan with their `descriptor`
  (fixed-size float32 lists), each written under a staging name and renamed when complete;
- `manifest.json`: what the rows were embedded with (model checksum, image policy, shard size,
  the plan's checksum) and, once every shard exists, `"complete": true`.

A shard's name is fixed by its rows, so a shard that is written twice (a worker restarted by
Ray, a resumed run) replaces itself with the same rows: no row is ever duplicated or dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netvlad_tf.io.atomic_writes import atomic_file, write_bytes_atomically

MANIFEST_FILE = "manifest.json"
ROWS_FILE = "rows.parquet"
MODEL_FILE = "model.keras"
SHARDS_FOLDER = "shards"
FORMAT = "netvlad_tf.descriptors"
FORMAT_VERSION = 1
# The settings that decide the descriptors; a resumed run must repeat them exactly.
IDENTITY_KEYS = ("model_sha256", "descriptor_dim", "image_size", "max_side", "shard_size",
                 "num_rows", "rows_sha256")


class DescriptorFolderError(ValueError):
    """A descriptor folder that is incomplete, edited, or was made with other settings."""


@dataclass
class DescriptorShard:
    """One shard's rows: ids, image paths, `(n, 2)` coordinates and `(n, dim)` descriptors."""

    row_ids: np.ndarray
    image_paths: list[str]
    coordinates: np.ndarray
    descriptors: np.ndarray


def shard_name(shard: int) -> str:
    """The fixed file name of shard number `shard`.

    Example:
    >>> shard_name(12)
    'shard-000012.parquet'
    """
    return f"shard-{shard:06d}.parquet"


def shard_rows(shard: int, shard_size: int, num_rows: int) -> range:
    """The plan rows that shard number `shard` holds.

    Example:
    >>> shard_rows(2, 4, 10)
    range(8, 10)
    """
    return range(shard * shard_size, min((shard + 1) * shard_size, num_rows))


def rows_in_shards(shards, manifest: dict) -> int:
    """How many plan rows the listed shards of a folder hold."""
    return sum(len(shard_rows(shard, manifest["shard_size"], manifest["num_rows"])) for shard in shards)


def num_shards(num_rows: int, shard_size: int) -> int:
    """How many shards `num_rows` rows make (the last one may be short)."""
    return -(-num_rows // shard_size)


def file_sha256(path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_table(image_paths: list[str], coordinates: np.ndarray) -> pa.Table:
    """The plan: `row_id`, `image_path`, `easting`, `northing`, one row per image."""
    coordinates = np.asarray(coordinates, np.float64).reshape(-1, 2)
    return pa.table({
        "row_id": pa.array(np.arange(len(image_paths), dtype=np.int64)),
        "image_path": pa.array([str(path) for path in image_paths], pa.string()),
        "easting": pa.array(coordinates[:, 0]),
        "northing": pa.array(coordinates[:, 1]),
    })


def table_coordinates(table: pa.Table) -> np.ndarray:
    """`(n, 2)` easting, northing of a plan or shard table."""
    return np.stack([table.column("easting").to_numpy(), table.column("northing").to_numpy()], 1)


def read_plan(directory) -> tuple[list[str], np.ndarray]:
    """A descriptor folder's image paths and `(N, 2)` coordinates, from its plan alone."""
    rows = pq.read_table(Path(directory) / ROWS_FILE)
    return rows.column("image_path").to_pylist(), table_coordinates(rows)


def rows_checksum(rows: pa.Table) -> str:
    """SHA-256 over the plan's paths and coordinates: two plans agree iff their rows do."""
    digest = hashlib.sha256()
    for path, easting, northing in zip(rows["image_path"].to_pylist(), rows["easting"].to_pylist(),
                                       rows["northing"].to_pylist()):
        digest.update(f"{path}\t{easting!r}\t{northing!r}\n".encode())
    return digest.hexdigest()


def write_shard(path, rows: pa.Table, descriptors: np.ndarray) -> None:
    """Writes one shard atomically: the plan rows with a `descriptor` column, replacing a
    shard of the same name (a retried task writes the same rows again).

    Args:
        path: the shard file.
        rows: its slice of the plan.
        descriptors: `(len(rows), dim)` float32.
    """
    descriptors = np.ascontiguousarray(descriptors, np.float32)
    if descriptors.shape[0] != rows.num_rows:
        raise ValueError(f"{path}: {descriptors.shape[0]} descriptors for {rows.num_rows} rows.")
    column = pa.FixedSizeListArray.from_arrays(pa.array(descriptors.reshape(-1)), descriptors.shape[1])
    with atomic_file(path, overwrite=True) as staging:
        pq.write_table(rows.append_column("descriptor", column), staging,
                       compression="none", use_dictionary=["image_path"])


def read_shard(path, dim: int | None = None) -> DescriptorShard:
    """Reads one shard; a damaged file or a wrong descriptor length is a `DescriptorFolderError`.

    Args:
        path: the shard file.
        dim: the descriptor length the manifest promises (None: do not check).
    """
    try:
        table = pq.read_table(path, memory_map=True)
        column = table.column("descriptor").combine_chunks()
        width = column.type.list_size
        descriptors = column.flatten().to_numpy().reshape(-1, width)
        coordinates = table_coordinates(table)
        row_ids = table.column("row_id").to_numpy()
        image_paths = table.column("image_path").to_pylist()
    except (OSError, KeyError, AttributeError, pa.ArrowException) as error:
        raise DescriptorFolderError(f"Shard {path} is damaged or not a descriptor shard ({error}).") from None
    if dim is not None and width != dim:
        raise DescriptorFolderError(f"Shard {path} holds {width}-D descriptors, its manifest says {dim}-D.")
    return DescriptorShard(row_ids, image_paths, coordinates, descriptors)


def read_manifest(directory) -> dict | None:
    """The folder's manifest, None when it has none; an unreadable one is an error."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT or any(key not in manifest for key in IDENTITY_KEYS):
            raise ValueError("missing keys")
    except (ValueError, AttributeError) as error:
        raise DescriptorFolderError(f"{path} is not a descriptor manifest ({error}).") from None
    return manifest


def write_manifest(directory, manifest: dict) -> None:
    """Writes `manifest.json` atomically (replacing the previous one)."""
    write_bytes_atomically(Path(directory) / MANIFEST_FILE,
                           json.dumps(manifest, indent=2).encode(), overwrite=True)


def missing_shards(directory, manifest: dict) -> list[int]:
    """The shard numbers of the manifest's plan that have no file yet."""
    shards = Path(directory) / SHARDS_FOLDER
    count = num_shards(manifest["num_rows"], manifest["shard_size"])
    return [shard for shard in range(count) if not (shards / shard_name(shard)).is_file()]


def complete_manifest(directory) -> dict:
    """The manifest of a finished folder; an unfinished or foreign folder is an error."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise DescriptorFolderError(f"{directory} is not a descriptor folder (no {MANIFEST_FILE}; "
                                    "made by `netvlad-tf embed`).")
    if not manifest.get("complete"):
        left = len(missing_shards(directory, manifest))
        raise DescriptorFolderError(f"{directory} is unfinished ({left} shards missing); rerun the same "
                                    "`netvlad-tf embed` command to complete it.")
    return manifest


def iter_shards(directory) -> Iterator[DescriptorShard]:
    """The shards of a finished descriptor folder in row order, one at a time (flat memory).

    Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> next(iter_shards(folder))
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: ... is not a descriptor folder (no manifest.json; made by `netvlad-tf embed`).
    """
    directory = Path(directory)
    manifest = complete_manifest(directory)
    expected_start = 0
    for shard in range(num_shards(manifest["num_rows"], manifest["shard_size"])):
        path = directory / SHARDS_FOLDER / shard_name(shard)
        if not path.is_file():
            raise DescriptorFolderError(f"{path} is missing from a folder whose manifest says it is complete.")
        rows = read_shard(path, manifest["descriptor_dim"])
        expected = shard_rows(shard, manifest["shard_size"], manifest["num_rows"])
        if not np.array_equal(rows.row_ids, np.arange(expected.start, expected.stop)):
            raise DescriptorFolderError(f"{path} holds rows other than {expected.start}–{expected.stop - 1}.")
        expected_start = expected.stop
        yield rows
    if expected_start != manifest["num_rows"]:
        raise DescriptorFolderError(f"{directory}: the shards hold {expected_start} rows, the manifest "
                                    f"says {manifest['num_rows']}.")


@dataclass
class DescriptorTable:
    """A whole descriptor folder: image paths, `(N, 2)` coordinates and `(N, dim)` descriptors,
    row i from plan row i, and the folder's manifest."""

    image_paths: list[str]
    coordinates: np.ndarray
    descriptors: np.ndarray
    manifest: dict


def read_descriptors(directory, memmap_path=None) -> DescriptorTable:
    """Reads a finished descriptor folder (`netvlad-tf embed`) into row-aligned arrays.

    Parquet pages are decoded, not mapped, so by default the descriptors are gathered into RAM
    (`N · dim · 4` bytes). With `memmap_path` they are streamed shard by shard into a `.npy`
    file there and returned memory-mapped, so a database larger than RAM can still be read;
    `iter_shards` gives one shard at a time.

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
    manifest = complete_manifest(directory)
    shape = (manifest["num_rows"], manifest["descriptor_dim"])
    if memmap_path is None:
        descriptors = np.zeros(shape, np.float32)
    else:
        descriptors = np.lib.format.open_memmap(memmap_path, mode="w+", dtype=np.float32, shape=shape)
    image_paths: list[str] = []
    coordinates = np.zeros((shape[0], 2), np.float64)
    for rows in iter_shards(directory):
        descriptors[rows.row_ids[0]:rows.row_ids[-1] + 1] = rows.descriptors
        coordinates[rows.row_ids[0]:rows.row_ids[-1] + 1] = rows.coordinates
        image_paths.extend(rows.image_paths)
    if memmap_path is not None:
        descriptors.flush()
        descriptors = np.load(memmap_path, mmap_mode="r")
    return DescriptorTable(image_paths, coordinates, descriptors, manifest)
