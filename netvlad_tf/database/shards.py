"""The files of a descriptor folder: Parquet shards of database descriptors and the row plan
(the folder itself, with its manifest, is `descriptor_folder.DescriptorFolder`).

A folder written by `netvlad-tf embed` (one process or Ray workers) holds

- `model.keras`: a copy of the model that made the descriptors (the folder is self-contained),
  and with `precision` int8 in the manifest, `model_int8.onnx`, its calibrated int8 form;
- `rows.parquet`: the plan, one row per image (`row_id`, `image_path`, `easting`, `northing`);
- `shards/shard-000000.parquet`, …: consecutive rows of the plan with their `descriptor`
  (fixed-size float32 lists), each written under a staging name and renamed when complete. A
  row whose image could not be read has a null `descriptor` and its reason in `missing_reason`
  (null for the others): it stays in the plan, and readers leave it out;
- `manifest.json`: what the rows were embedded with (model checksum, image policy, shard size,
  the plan's checksum), its `segments` (the first plan, then each append of rows: shards never
  straddle two) and, once every shard exists, `"complete": true` with `num_missing`;
- `missing.csv`: the missing rows (`row_id`, `image_path`, `reason`), written at completion.

A shard's name is fixed by its rows, so a shard that is written twice (a worker restarted by
Ray, a resumed run) replaces itself with the same rows: no row is ever duplicated or dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netvlad_tf.io.atomic_writes import atomic_file

MANIFEST_FILE = "manifest.json"
MISSING_FILE = "missing.csv"
ROWS_FILE = "rows.parquet"
SHARDS_FOLDER = "shards"


class DescriptorFolderError(ValueError):
    """A descriptor folder that is incomplete, edited, or was made with other settings."""


@dataclass
class DescriptorShard:
    """One shard's embedded rows: ids, image paths, `(n, 2)` coordinates and `(n, dim)`
    descriptors; the ids of its missing rows (unreadable images) in `missing_row_ids`."""

    row_ids: np.ndarray
    image_paths: list[str]
    coordinates: np.ndarray
    descriptors: np.ndarray
    missing_row_ids: np.ndarray


@dataclass
class MissingRow:
    """A plan row without a descriptor: its image could not be read."""

    row_id: int
    image_path: str
    reason: str


def shard_name(shard: int) -> str:
    """The fixed file name of shard number `shard`.

    Example:
    >>> shard_name(12)
    'shard-000012.parquet'
    """
    return f"shard-{shard:06d}.parquet"


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


def rows_checksum(rows: pa.Table) -> str:
    """SHA-256 over the plan's paths and coordinates: two plans agree iff their rows do."""
    digest = hashlib.sha256()
    for path, easting, northing in zip(rows["image_path"].to_pylist(), rows["easting"].to_pylist(),
                                       rows["northing"].to_pylist()):
        digest.update(f"{path}\t{easting!r}\t{northing!r}\n".encode())
    return digest.hexdigest()


def write_shard(path, rows: pa.Table, descriptors: np.ndarray, missing: dict[int, str] | None = None) -> None:
    """Writes one shard atomically: the plan rows with a `descriptor` column (null for the
    missing ones) and `missing_reason`, replacing a shard of the same name (a retried task
    writes the same rows again).

    Args:
        path: the shard file.
        rows: its slice of the plan.
        descriptors: `(len(rows), dim)` float32 (the rows of missing images are ignored).
        missing: position in `rows` → why its image could not be read.
    """
    descriptors = np.ascontiguousarray(descriptors, np.float32)
    if descriptors.shape[0] != rows.num_rows:
        raise ValueError(f"{path}: {descriptors.shape[0]} descriptors for {rows.num_rows} rows.")
    missing = missing or {}
    is_missing = np.zeros(rows.num_rows, bool)
    is_missing[list(missing)] = True
    column = pa.FixedSizeListArray.from_arrays(pa.array(descriptors.reshape(-1)), descriptors.shape[1],
                                               mask=pa.array(is_missing))
    reasons = pa.array([missing.get(position) for position in range(rows.num_rows)], pa.string())
    table = rows.select(["row_id", "image_path", "easting", "northing"])
    with atomic_file(path, overwrite=True) as staging:
        pq.write_table(table.append_column("descriptor", column).append_column("missing_reason", reasons),
                       staging, compression="none", use_dictionary=["image_path"])


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
        present = column.is_valid().to_numpy(zero_copy_only=False)
        descriptors = column.flatten().to_numpy().reshape(-1, width)
        coordinates = table_coordinates(table)[present]
        all_row_ids = table.column("row_id").to_numpy()
        image_paths = [path for path, kept in zip(table.column("image_path").to_pylist(), present) if kept]
    except (OSError, KeyError, AttributeError, pa.ArrowException) as error:
        raise DescriptorFolderError(f"Shard {path} is damaged or not a descriptor shard ({error}); rerun "
                                    "the `netvlad-tf embed` command that made its folder to embed it again.") from None
    if dim is not None and width != dim:
        raise DescriptorFolderError(f"Shard {path} holds {width}-D descriptors, its manifest says {dim}-D.")
    return DescriptorShard(all_row_ids[present], image_paths, coordinates, descriptors, all_row_ids[~present])


def shard_problem(path, rows: range, dim: int) -> str | None:
    """Why the shard at `path` cannot stand for plan rows `rows` of `dim`-D descriptors (its
    Parquet footer unreadable, another row count, other row ids, another width), or None.
    Cheap: the footer and the `row_id` column only, not the descriptors.

    Example:
    >>> shard_problem("/no/such/shard.parquet", range(0, 4), 8)
    'is missing'
    """
    if not Path(path).is_file():
        return "is missing"
    try:
        file = pq.ParquetFile(path)
        count = file.metadata.num_rows
        width = file.schema_arrow.field("descriptor").type.list_size
        row_ids = file.read(columns=["row_id"]).column(0).to_numpy()
    except (OSError, KeyError, AttributeError, pa.ArrowException) as error:
        return f"is damaged ({str(error).splitlines()[0]})"
    if count != len(rows) or not np.array_equal(row_ids, np.arange(rows.start, rows.stop)):
        return f"holds {count} rows other than plan rows {rows.start}–{rows.stop - 1}"
    if width != dim:
        return f"holds {width}-D descriptors, not {dim}-D"
    return None


def shard_missing_rows(path) -> list[MissingRow]:
    """The missing rows of one shard (reading three small columns, not the descriptors)."""
    file = pq.ParquetFile(path)
    if "missing_reason" not in file.schema_arrow.names:  # written before missing rows existed
        return []
    table = file.read(columns=["row_id", "image_path", "missing_reason"])
    return [MissingRow(int(row_id), image_path, reason)
            for row_id, image_path, reason in zip(table.column("row_id").to_pylist(),
                                                  table.column("image_path").to_pylist(),
                                                  table.column("missing_reason").to_pylist())
            if reason is not None]
