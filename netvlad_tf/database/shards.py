"""The descriptor folder: Parquet shards of database descriptors, the row plan and a manifest.

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
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netvlad_tf.database.patch_shards import PATCHES_FOLDER, patch_shard_problem
from netvlad_tf.io.atomic_writes import atomic_file, write_bytes_atomically

MANIFEST_FILE = "manifest.json"
MISSING_FILE = "missing.csv"
ROWS_FILE = "rows.parquet"
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


def shard_ranges(manifest: dict) -> list[range]:
    """The plan rows of every shard of a folder, shard i holding `shard_ranges(manifest)[i]`:
    each segment (the first plan, then each append) cut into `shard_size` rows, its last
    shard possibly short.

    Example:
    >>> shard_ranges({"shard_size": 4, "num_rows": 10})
    [range(0, 4), range(4, 8), range(8, 10)]
    >>> shard_ranges({"shard_size": 4, "num_rows": 12, "segments": [
    ...     {"first_row": 0, "num_rows": 6}, {"first_row": 6, "num_rows": 6}]})
    [range(0, 4), range(4, 6), range(6, 10), range(10, 12)]
    """
    size = manifest["shard_size"]
    ranges = []
    for segment in segments(manifest):
        stop = segment["first_row"] + segment["num_rows"]
        ranges += [range(start, min(start + size, stop)) for start in range(segment["first_row"], stop, size)]
    return ranges


def segments(manifest: dict) -> list[dict]:
    """The folder's segments (`first_row`, `num_rows`): the first plan, then each append; a
    folder written before appends existed is one segment."""
    return manifest.get("segments") or [{"first_row": 0, "num_rows": manifest["num_rows"]}]


def rows_in_shards(shards, manifest: dict) -> int:
    """How many plan rows the listed shards of a folder hold."""
    ranges = shard_ranges(manifest)
    return sum(len(ranges[shard]) for shard in shards)


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
    """A descriptor folder's image paths and `(N, 2)` coordinates, from its plan alone (every
    row, missing ones included)."""
    rows = pq.read_table(Path(directory) / ROWS_FILE)
    return rows.column("image_path").to_pylist(), table_coordinates(rows)


def rows_prefix_checksum(directory, num_rows: int) -> str:
    """`rows_checksum` of the first `num_rows` rows of a folder's plan (what an index built
    before an append covered)."""
    return rows_checksum(pq.read_table(Path(directory) / ROWS_FILE).slice(0, num_rows))


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


def missing_rows(directory) -> list[MissingRow]:
    """Every missing row of a folder's written shards, in row order."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return []
    rows: list[MissingRow] = []
    for shard in range(len(shard_ranges(manifest))):
        path = directory / SHARDS_FOLDER / shard_name(shard)
        if path.is_file():
            rows += shard_missing_rows(path)
    return rows


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
    return [shard for shard in range(len(shard_ranges(manifest))) if not (shards / shard_name(shard)).is_file()]


def shards_to_embed(directory, manifest: dict) -> tuple[list[int], dict[int, str]]:
    """The shards a run must (re)write: those without a file, and those whose file fails
    `shard_problem`; returns all their numbers and, for the damaged ones, what is wrong."""
    shards = Path(directory) / SHARDS_FOLDER
    pending, damaged = [], {}
    for shard, rows in enumerate(shard_ranges(manifest)):
        path = shards / shard_name(shard)
        if not path.is_file():
            pending.append(shard)
            continue
        problem = shard_problem(path, rows, manifest["descriptor_dim"])
        if problem is None and manifest.get("patch_features"):
            problem = patch_shard_problem(Path(directory) / PATCHES_FOLDER, shard, len(rows),
                                          manifest["patch_features"]["dims"])
        if problem is not None:
            pending.append(shard)
            damaged[shard] = problem
    return pending, damaged


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
    for shard, expected in enumerate(shard_ranges(manifest)):
        path = directory / SHARDS_FOLDER / shard_name(shard)
        if not path.is_file():
            raise DescriptorFolderError(f"{path} is missing from a folder whose manifest says it is complete; "
                                        "rerun the `netvlad-tf embed` command that made it to embed it again.")
        rows = read_shard(path, manifest["descriptor_dim"])
        held = np.sort(np.concatenate([rows.row_ids, rows.missing_row_ids]))
        if not np.array_equal(held, np.arange(expected.start, expected.stop)):
            raise DescriptorFolderError(f"{path} holds rows other than {expected.start}–{expected.stop - 1}; "
                                        "rerun the `netvlad-tf embed` command that made its folder to embed it again.")
        expected_start = expected.stop
        yield rows
    if expected_start != manifest["num_rows"]:
        raise DescriptorFolderError(f"{directory}: the shards hold {expected_start} rows, the manifest "
                                    f"says {manifest['num_rows']}.")


@dataclass
class DescriptorTable:
    """A whole descriptor folder's embedded rows: image paths, `(M, 2)` coordinates, `(M, dim)`
    descriptors and `row_ids`, the plan rows they come from (M = N − `num_missing`: rows whose
    image could not be read are left out, never given a zero vector), and the manifest."""

    image_paths: list[str]
    coordinates: np.ndarray
    descriptors: np.ndarray
    manifest: dict
    row_ids: np.ndarray

    @property
    def num_missing(self) -> int:
        """Plan rows left out: their images could not be read (listed in `missing.csv`)."""
        return self.manifest["num_rows"] - len(self.row_ids)


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
    manifest = complete_manifest(directory)
    shape = (manifest["num_rows"] - manifest.get("num_missing", 0), manifest["descriptor_dim"])
    if memmap_path is None:
        descriptors = np.zeros(shape, np.float32)
    else:
        descriptors = np.lib.format.open_memmap(memmap_path, mode="w+", dtype=np.float32, shape=shape)
    image_paths: list[str] = []
    coordinates = np.zeros((shape[0], 2), np.float64)
    row_ids = np.zeros(shape[0], np.int64)
    filled = 0
    for rows in iter_shards(directory):
        end = filled + len(rows.row_ids)
        if end > shape[0]:
            raise DescriptorFolderError(f"{directory}: the shards hold more embedded rows than its manifest's "
                                        f"{shape[0]}; rerun the `netvlad-tf embed` command that made it.")
        descriptors[filled:end] = rows.descriptors
        coordinates[filled:end] = rows.coordinates
        row_ids[filled:end] = rows.row_ids
        image_paths.extend(rows.image_paths)
        filled = end
    if filled != shape[0]:
        raise DescriptorFolderError(f"{directory}: the shards hold {filled} embedded rows, its manifest says "
                                    f"{shape[0]}; rerun the `netvlad-tf embed` command that made it.")
    if memmap_path is not None:
        descriptors.flush()
        descriptors = np.load(memmap_path, mmap_mode="r")
    return DescriptorTable(image_paths, coordinates, descriptors, manifest, row_ids)
