"""Streaming, resumable embedding of an image database into a descriptor folder (`shards.py`).

Descriptors are written a shard at a time, so memory stays that of one shard however large the
database; rerunning the same call after a kill embeds only the shards that are missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.database.shard_writer import ShardWriter
from netvlad_tf.database.shards import (
    FORMAT,
    FORMAT_VERSION,
    IDENTITY_KEYS,
    MODEL_FILE,
    ROWS_FILE,
    SHARDS_FOLDER,
    DescriptorFolderError,
    file_sha256,
    missing_shards,
    read_manifest,
    rows_checksum,
    rows_in_shards,
    rows_table,
    shard_name,
    write_manifest,
)
from netvlad_tf.io.atomic_writes import atomic_file
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.models.model_files import load_model_file

DEFAULT_SHARD_SIZE = 1000


def embed_database(
    model,
    image_paths: Sequence[str],
    coordinates,
    output,
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
) -> Path:
    """Embeds images into a descriptor folder of Parquet shards, resuming an unfinished one.

    The folder (`netvlad_tf.database.shards`) is written shard by shard; a run that is killed
    keeps every finished shard, and the same call again embeds only the missing ones (with
    another model or other settings it stops with one line saying which differs). Retrieval
    needs the database's descriptors (paper Sec. 5.1); at city scale they outgrow RAM, so they
    are streamed to disk instead of gathered.

    Args:
        model: the `.keras` model file (copied into the folder), or a Keras model (saved
            into it; such a folder cannot be resumed: use a file for long runs).
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

    Returns:
        The folder, complete.

    Raises:
        DescriptorFolderError: `output` holds another plan, model or settings (resume refused).
        ValueError: an unreadable image (named) or bad arguments.

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
    ...                         dataset.database_utm[:5], root / "db", (32, 64), shard_size=2,
    ...                         verbose=False)
    >>> read_descriptors(folder).descriptors.shape
    (5, 512)
    """
    output = Path(output)
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be at least 1, got {shard_size} and {batch_size}.")
    if len(image_paths) == 0:
        raise ValueError("No images to embed.")
    loaded, manifest = _prepare_folder(output, model, list(image_paths), coordinates, image_size,
                                       max_side, shard_size, overwrite, dims)
    pending = missing_shards(output, manifest)
    if pending and num_workers:
        from netvlad_tf.database.ray_embed import embed_shards_on_ray

        embed_shards_on_ray(output, pending, manifest, num_workers, ray_address, cpus_per_worker,
                            gpus_per_worker, batch_size, verbose, on_shard_start)
    elif pending:
        writer = ShardWriter(output, manifest, batch_size, loaded)
        embed_shards_here(writer, pending, verbose, on_shard_start)
    left = missing_shards(output, manifest)
    if left:
        raise DescriptorFolderError(f"{output}: {len(left)} shards were not written (first: "
                                    f"{shard_name(left[0])}); rerun the same command to finish them.")
    write_manifest(output, {**manifest, "complete": True})
    return output


def embed_shards_here(writer: ShardWriter, shards: Sequence[int], verbose: bool = True,
                      on_shard_start: Callable[[int], None] | None = None) -> None:
    """Embeds the listed shards of a prepared folder in this process, one at a time.

    Args:
        writer: the folder's `ShardWriter`.
        shards: shard numbers to write.
        verbose: show a progress bar over the rows.
        on_shard_start: called with each shard number first.
    """
    progress = keras.utils.Progbar(rows_in_shards(shards, writer.manifest), unit_name="image", verbose=1 if verbose else 0)
    done = 0
    for shard in shards:
        if on_shard_start is not None:
            on_shard_start(shard)
        done += writer.write(shard)
        progress.update(done)


def _prepare_folder(output: Path, model, image_paths: list[str], coordinates, image_size,
                    max_side, shard_size: int, overwrite: bool, dims: int | None) -> tuple[keras.Model, dict]:
    """Creates the folder (model copy, plan, manifest) or checks that it can be resumed;
    returns the model and the manifest. With `dims` the folder's model is the compact one and
    the manifest keeps the source file's checksum (its `descriptor_dim` is `dims`)."""
    in_memory = isinstance(model, keras.Model)
    loaded = model if in_memory else load_model_file(model, place_model=dims is not None)
    if dims is not None:
        if not isinstance(loaded, PlaceRecognitionModel):
            raise ValueError(f"dims needs a netvlad_tf PlaceRecognitionModel with PCA whitening, not a Keras "
                             f"{type(loaded).__name__}.")
        loaded = loaded.with_dims(dims)
    if isinstance(loaded.output, (list, tuple)):
        raise ValueError(f"Model {loaded.name} has {len(loaded.output)} outputs; a descriptor model has one.")
    rows = rows_table(image_paths, coordinates)
    identity = {
        "model_sha256": None if in_memory else file_sha256(model),
        "descriptor_dim": int(loaded.output.shape[-1]),
        "image_size": list(image_size) if image_size else None,
        "max_side": max_side,
        "shard_size": int(shard_size),
        "num_rows": rows.num_rows,
        "rows_sha256": rows_checksum(rows),
    }
    if overwrite and output.exists():
        shutil.rmtree(output)
    existing = read_manifest(output) if output.is_dir() and not in_memory else None
    if existing is not None:
        different = [key for key in IDENTITY_KEYS if existing[key] != identity[key]]
        if different:
            raise DescriptorFolderError(
                f"{output} was embedded with another {', '.join(different)} ({existing[different[0]]!r} "
                f"there, {identity[different[0]]!r} now); rerun with the same model and settings to "
                "resume, or choose another --output (or --overwrite to start afresh)."
            )
        return loaded, existing
    if output.exists() and any(output.iterdir()):
        raise DescriptorFolderError(f"{output} exists and is not a descriptor folder to resume; choose "
                                    "another --output or pass --overwrite.")
    (output / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
    with atomic_file(output / MODEL_FILE, overwrite=True) as staging:
        if in_memory or dims is not None:
            loaded.save(staging)
        else:
            shutil.copyfile(model, staging)
    if in_memory:
        identity["model_sha256"] = file_sha256(output / MODEL_FILE)
    with atomic_file(output / ROWS_FILE, overwrite=True) as staging:
        pq.write_table(rows, staging)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "model_name": loaded.name,
                **identity, "complete": False}
    write_manifest(output, manifest)
    return loaded, manifest


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

