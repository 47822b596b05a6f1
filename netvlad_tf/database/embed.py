"""Streaming, resumable embedding of an image database into a descriptor folder
(`descriptor_folder.DescriptorFolder`).

Descriptors are written a shard at a time, so memory stays that of one shard however large the
database; rerunning the same call after a kill embeds only the shards that are missing or
damaged, a plan with rows appended embeds only the new rows, and images that cannot be read
are recorded (and may be retried) instead of stopping the run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.database.descriptor_folder import IDENTITY_KEYS, DescriptorFolder
from netvlad_tf.database.patch_shards import patch_manifest
from netvlad_tf.database.shard_writer import DEFAULT_MAX_UNREADABLE, ShardWriter
from netvlad_tf.database.shards import (
    DescriptorFolderError,
    MissingRow,
    file_sha256,
    rows_checksum,
    rows_table,
)
from netvlad_tf.inference.precision import choose_precision
from netvlad_tf.inference.runner import INT8_MODEL_FILE, ModelRunner
from netvlad_tf.io.atomic_writes import write_bytes_atomically
from netvlad_tf.io.progress import Progress
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.models.model_files import open_model
from netvlad_tf.reranking.patch_descriptors import PatchDescriber
from netvlad_tf.reranking.settings import PatchSettings

DEFAULT_SHARD_SIZE = 1000


def embed_database(
    model,
    image_paths: Sequence[str],
    coordinates,
    output,
    *,
    image_size: tuple[int, int] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 0,
    ray_address: str | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    overwrite: bool = False,
    verbose: bool = True,
    on_shard_start: Callable[[int], None] | None = None,
    dims: int | None = None,
    on_unreadable: str = "skip",
    max_unreadable: float = DEFAULT_MAX_UNREADABLE,
    retry_missing: bool = False,
    precision: str = "float32",
    patch_features: str | PatchSettings | None = None,
    patch_dtype: str = "float16",
) -> Path:
    """Embeds images into a descriptor folder of Parquet shards, resuming an unfinished one.

    The folder (`netvlad_tf.database.descriptor_folder`) is written shard by shard; a run that is killed
    keeps every finished shard, and the same call again embeds only the missing ones and those
    that fail a cheap check (footer, row count and ids: a truncated shard is named and embedded
    again). With another model or other settings it stops with one line saying which differs;
    a plan whose first rows are the folder's (the same list with images appended) is an
    append: only the new rows are embedded, as new shards, and the manifest records it.
    An image that cannot be read is skipped: its row stays in the plan, marked missing with the
    reason, and is listed in `missing.csv`; readers leave such rows out. Retrieval needs the
    database's descriptors (paper Sec. 5.1); at city scale they outgrow RAM, so they are
    streamed to disk instead of gathered.

    Args:
        model: the `.keras` model file (copied into the folder), or a Keras model (saved
            into it; such a folder cannot be resumed: use a file for long runs), or a
            `ModelRunner` prepared already (its model saved, its precision and int8
            calibration used as they are).
        image_paths: the images, row i of the plan being `image_paths[i]`.
        coordinates: `(N, 2)` easting, northing (metres), stored beside each descriptor.
        output: the descriptor folder (created, or resumed when it holds the same plan).
        image_size: `(H, W)` every image is resized to; None keeps native sizes.
        max_side: without `image_size`, the longest side allowed (None: uncapped).
        batch_size: images per forward pass.
        shard_size: rows per shard (the unit of work, of resuming and of memory).
        num_workers: 0 embeds in this process; N ≥ 1 runs N Ray Data actors
            (`pip install 'netvlad_tf[ray]'`).
        ray_address: an existing Ray cluster (`"auto"` or `"ray://host:10001"`); None starts
            a local one when `num_workers` is set.
        cpus_per_worker: logical CPUs each Ray actor reserves.
        gpus_per_worker: GPUs each Ray actor reserves (0: CPU only).
        overwrite: start afresh, removing what `output` holds.
        verbose: show a progress bar.
        on_shard_start: called with the shard number before each shard is embedded (where
            it runs: in this process or in the Ray actor).
        dims: keep the first `dims` PCA-whitened dimensions (`PlaceRecognitionModel.with_dims`);
            the folder holds that compact model, and a resume must ask for the same `dims`.
        on_unreadable: `"skip"` (record the row as missing and go on) or `"stop"`.
        max_unreadable: with `"skip"`, the largest share of one shard's images that may be
            unreadable before the run stops (a lost mount, not a few bad files).
        retry_missing: read the folder's missing rows again (their files were fixed) and
            embed those that now read.
        precision: `"float32"`, `"bfloat16"`, `"float16"`, `"int8"` or `"auto"`
            (`netvlad_tf.inference.precision`); the manifest records it and a resume must
            repeat it. int8 is calibrated once on images spread over the plan and checked on
            others first (`model_int8.onnx` in the folder).
        patch_features: also store each image's Patch-NetVLAD patch descriptors
            (`"performance"`, `"speed"`, `"storage"` or a `PatchSettings`) in `patches/`, shard
            by shard beside the global ones (`netvlad_tf.database.patch_shards`), for re-ranking
            without recomputing them; they come from the float32 model whatever `precision`.
        patch_dtype: `"float16"` (half the disk) or `"float32"`.

    Returns:
        The folder, complete.

    Raises:
        DescriptorFolderError: `output` holds another plan, model or settings (resume refused).
        UnreadableImagesError: more than `max_unreadable` of a shard's images cannot be read.
        FileNotFoundError, ValueError: with `on_unreadable="stop"`, a missing or unreadable
            image (named); ValueError: bad arguments.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> from netvlad_tf.database import read_descriptors
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> build_netvlad_model(weights=None, pooling="mac").save(root / "mac.keras")
    >>> dataset = read_csv_dataset(nordland_csv("test"))
    >>> folder = embed_database(root / "mac.keras", dataset.database_paths[:5],
    ...                         dataset.database_utm[:5], root / "db", image_size=(32, 64), shard_size=2,
    ...                         verbose=False)
    >>> read_descriptors(folder).descriptors.shape
    (5, 512)
    """
    output = Path(output)
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be at least 1, got {shard_size} and {batch_size}.")
    if len(image_paths) == 0:
        raise ValueError("No images to embed.")
    prepared = model if isinstance(model, ModelRunner) else None
    if prepared is not None:
        if precision not in ("float32", prepared.precision) or dims is not None:
            raise ValueError(f"A prepared ModelRunner embeds in its own precision ({prepared.precision}) with its "
                             "own model: drop precision= and dims=.")
        model, precision = prepared.model, prepared.precision
    else:
        requested = precision
        precision, reason = choose_precision(requested)
        if requested != "float32":
            _say(verbose, reason)
    loaded, folder = _prepare_folder(output, model, list(image_paths), coordinates, image_size,
                                     max_side, shard_size, overwrite, dims, precision, verbose,
                                     (patch_features, patch_dtype))
    pending, damaged = folder.to_embed()
    for shard, problem in damaged.items():
        _say(verbose, f"{folder.shard_path(shard)} {problem}: embedding it again.")
    # Only a run with something to embed prepares the precision (int8: calibrates once, before
    # any Ray actor reads model_int8.onnx); a rerun of a finished folder checks and returns.
    runner = None
    if prepared is not None and (pending or retry_missing):
        runner = prepared
        if prepared.int8_model is not None:  # where resumes and Ray actors read the calibration
            write_bytes_atomically(output / INT8_MODEL_FILE, prepared.int8_model.onnx_bytes, overwrite=True)
    elif pending or retry_missing:
        runner = ModelRunner.prepare(loaded, precision, calibration_paths=image_paths, image_size=image_size,
                                     max_side=max_side, int8_path=output / INT8_MODEL_FILE, verbose=verbose)
    writer_options = {"on_unreadable": on_unreadable, "max_unreadable": max_unreadable}
    writer = None
    if pending and num_workers:
        from netvlad_tf.database.ray_embed import embed_shards_on_ray

        embed_shards_on_ray(folder, pending, num_workers, ray_address, cpus_per_worker,
                            gpus_per_worker, batch_size, verbose, on_shard_start, writer_options)
    elif pending:
        writer = ShardWriter(folder, batch_size, runner, **writer_options)
        embed_shards_here(writer, pending, verbose, on_shard_start)
    left = folder.missing_shards()
    if left:
        raise DescriptorFolderError(f"{output}: {len(left)} shards were not written (first: "
                                    f"{folder.shard_path(left[0]).name}); rerun the same command to finish them.")
    missing = folder.missing_rows(known=writer.written_missing if writer else None)
    if retry_missing and missing:
        folder = folder.record(complete=False)
        writer = writer or ShardWriter(folder, batch_size, runner, **writer_options)
        _retry_missing_rows(writer, missing, verbose)
        missing = folder.missing_rows(known=writer.written_missing)
    folder.write_missing_list(missing)
    folder = folder.record(complete=True, num_missing=len(missing))
    patches = folder.patch_features
    if patches and verbose:
        stored = sum(path.stat().st_size for path in folder.patches_folder.iterdir())
        print(f"Patch features ({patches['name'] or 'custom'}, {patches['dims']} dims, {patches['dtype']}): "
              f"{stored / max(folder.num_embedded, 1) / 1e6:.2f} MB per image, {stored / 1e6:.1f} MB in "
              f"{folder.patches_folder}", flush=True)
    return output


def _retry_missing_rows(writer: ShardWriter, missing: list[MissingRow], verbose: bool) -> None:
    """Re-reads the missing rows, shard by shard, with a progress line over them."""
    by_shard: dict[int, int] = {}
    for row in missing:
        shard = writer.folder.shard_of_row(row.row_id)
        by_shard[shard] = by_shard.get(shard, 0) + 1
    progress = Progress(len(missing), "image", verbose, "retrying missing")
    done = 0
    for shard, count in sorted(by_shard.items()):
        writer.retry_missing(shard)
        done += count
        progress.update(done)


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)


def embed_shards_here(writer: ShardWriter, shards: Sequence[int], verbose: bool = True,
                      on_shard_start: Callable[[int], None] | None = None) -> None:
    """Embeds the listed shards of a prepared folder in this process, one at a time.

    Args:
        writer: the folder's `ShardWriter`.
        shards: shard numbers to write.
        verbose: show a progress bar over the rows.
        on_shard_start: called with each shard number first.
    """
    progress = Progress(writer.folder.rows_in(shards), "image", verbose, "embedding")
    done = 0
    for shard in shards:
        if on_shard_start is not None:
            on_shard_start(shard)
        done += writer.write(shard)
        progress.update(done)


def _prepare_folder(output: Path, model, image_paths: list[str], coordinates, image_size, max_side, shard_size: int,
                    overwrite: bool, dims: int | None, precision: str, verbose: bool,
                    patches: tuple = (None, "float16")) -> tuple[keras.Model, DescriptorFolder]:
    """Creates the folder (model copy, plan, manifest) or checks that it can be resumed or
    appended to; returns the model and the folder. With `dims` the folder's model is the
    compact one and the manifest keeps the source file's checksum (its `descriptor_dim` is
    `dims`)."""
    in_memory = isinstance(model, keras.Model)
    loaded = model if in_memory else open_model(model, netvlad=dims is not None or precision != "float32")
    if dims is not None:
        if not isinstance(loaded, PlaceRecognitionModel):
            raise ValueError(f"dims needs a netvlad_tf PlaceRecognitionModel with PCA whitening, not a Keras "
                             f"{type(loaded).__name__}.")
        loaded = loaded.with_dims(dims)
    if isinstance(loaded.output, (list, tuple)):
        raise ValueError(f"Model {loaded.name} has {len(loaded.output)} outputs; a descriptor model has one.")
    patch_record = _patch_record(loaded, *patches)
    rows = rows_table(image_paths, coordinates)
    identity = {
        "model_sha256": None if in_memory else file_sha256(model),
        "descriptor_dim": int(loaded.output.shape[-1]),
        "image_size": list(image_size) if image_size else None,
        "max_side": max_side,
        "shard_size": int(shard_size),
        "num_rows": rows.num_rows,
        "rows_sha256": rows_checksum(rows),
        "precision": precision,
    }
    if overwrite and output.exists():
        shutil.rmtree(output)
    existing = DescriptorFolder.find(output) if output.is_dir() and not in_memory else None
    if existing is not None:
        different = [key for key in IDENTITY_KEYS if existing.identity[key] != identity[key]]
        if existing.patch_features != patch_record:
            raise DescriptorFolderError(
                f"{output} was embedded with other patch features ({_patch_words(existing.patch_features)} there, "
                f"{_patch_words(patch_record)} now); rerun with the same --patch_features and --patch_dtype to resume, "
                "or choose another --output (or --overwrite to start afresh).")
        if different and _appends(existing, rows, different):
            _say(verbose, f"Appending {rows.num_rows - existing.num_rows} images to {output} (its "
                          f"{existing.num_rows} rows are kept).")
            return loaded, existing.append(rows)
        if different:
            raise DescriptorFolderError(
                f"{output} was embedded with another {', '.join(different)} ({existing.identity[different[0]]!r} "
                f"there, {identity[different[0]]!r} now); rerun with the same model and settings to "
                "resume, or choose another --output (or --overwrite to start afresh)."
            )
        return loaded, existing
    if output.exists() and any(output.iterdir()):
        raise DescriptorFolderError(f"{output} exists and is not a descriptor folder to resume; choose "
                                    "another --output or pass --overwrite.")
    folder = DescriptorFolder.create(output, model=loaded, model_file=None if in_memory or dims is not None else model,
                                     rows=rows, identity=identity, patch_features=patch_record)
    return loaded, folder


def _patch_record(model, settings, dtype: str) -> dict | None:
    """The manifest's `patch_features` for these settings (None: no patches)."""
    if settings is None:
        return None
    describer = PatchDescriber(model, settings)
    return patch_manifest(describer.settings, settings if isinstance(settings, str) else None, describer.dims, dtype)


def _patch_words(record: dict | None) -> str:
    return "none" if not record else f"{record['name'] or record['patch_sizes']}, {record['dims']} dims, {record['dtype']}"


def _appends(existing: DescriptorFolder, rows, different: list[str]) -> bool:
    """Whether the new plan is the folder's with rows appended (all else equal)."""
    return (set(different) <= {"num_rows", "rows_sha256"} and rows.num_rows > existing.num_rows
            and rows_checksum(rows.slice(0, existing.num_rows)) == existing.identity["rows_sha256"])


def dataset_rows(dataset, part: str = "database") -> tuple[list[str], np.ndarray]:
    """`(image_paths, coordinates)` of a dataset's database or query images.

    Args:
        dataset: a `GeoDataset`.
        part: `"database"` or `"queries"`.
    """
    if part not in ("database", "queries"):
        raise ValueError(f"Unknown part {part!r}; use 'database' or 'queries'.")
    paths, coordinates = ((dataset.database_paths, dataset.database_utm) if part == "database"
                          else (dataset.query_paths, dataset.query_utm))
    if coordinates is None:  # place IDs only: the shards' coordinate columns hold NaN
        coordinates = np.full((len(paths), 2), np.nan)
    return paths, coordinates

