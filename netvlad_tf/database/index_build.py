"""Search indices built from a descriptor folder, a shard at a time.

The IVF kinds train on a sample spread over the whole database, then either add shard by shard
in this process, or build one part per shard (in this process or as Ray tasks) and merge the
parts in RAM or into inverted lists on disk (faiss' `merge_ondisk`) for an index larger than RAM.
Flat, HNSW and NumPy indices add shard by shard. Memory is the index plus one shard.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.database.shards import (
    SHARDS_FOLDER,
    complete_manifest,
    iter_shards,
    num_shards,
    read_shard,
    shard_name,
)
from netvlad_tf.retrieval import DescriptorIndex, create_index
from netvlad_tf.retrieval.faiss_backends import ON_DISK_LISTS_FILE, write_ivf_part


def build_index_from_shards(
    directory,
    kind: str = "flat",
    work_dir=None,
    on_disk: bool = False,
    num_workers: int = 0,
    ray_address: str | None = None,
    verbose: bool = True,
    **parameters,
) -> DescriptorIndex:
    """A search index over every descriptor of a finished descriptor folder, row i being id i.

    Args:
        directory: the descriptor folder (`netvlad-tf embed`).
        kind: an index kind of `create_index` (`"flat"`, `"ivfpq"`, `"ivfsq8"`, `"hnsw"`, …).
        work_dir: an existing folder for the parts and on-disk lists (needed with `on_disk`
            or `num_workers`; on the file system the index is saved to, so the lists move
            there without a copy).
        on_disk: IVF kinds only: keep the inverted lists in `work_dir/index.ivfdata` instead of
            RAM (saved by moving the file beside the index).
        num_workers: IVF kinds: build the parts as Ray tasks with this many in flight (0: here).
        ray_address: an existing Ray cluster for the tasks (None: a local one).
        verbose: show a progress bar over the shards.
        **parameters: the kind's options (e.g. `num_lists=1024`, `num_probes=32`).

    Returns:
        The filled `DescriptorIndex`.

    Example:
    >>> build_index_from_shards("/no/such/folder")
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: /no/such/folder is not a descriptor folder (no manifest.json; ...).
    """
    directory = Path(directory)
    manifest = complete_manifest(directory)
    total = manifest["num_rows"]
    index = create_index(kind, manifest["descriptor_dim"], model_name=manifest["model_name"], **parameters)
    in_parts = hasattr(index, "merge_parts") and (on_disk or num_workers > 0)
    if (on_disk or num_workers) and not hasattr(index, "merge_parts"):
        raise ValueError(f"--on_disk and --num_workers build IVF indices (ivfpq, ivfsq8), not {kind!r}.")
    if in_parts and work_dir is None:
        raise ValueError("An index built in parts needs a work_dir for them.")
    if hasattr(index, "training_sample_size"):
        index.train(training_sample(directory, index.training_sample_size(total)), database_size=total)
    progress = keras.utils.Progbar(num_shards(total, manifest["shard_size"]), unit_name="shard",
                                   verbose=1 if verbose else 0)
    if not in_parts:
        for done, shard in enumerate(iter_shards(directory), 1):
            index.add(shard.descriptors)
            progress.update(done)
        return index
    parts_dir = Path(work_dir) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    shard_files = [directory / SHARDS_FOLDER / shard_name(i)
                   for i in range(num_shards(total, manifest["shard_size"]))]
    part_files = [parts_dir / f"{path.stem}.index" for path in shard_files]
    state = index.trained_state()
    if num_workers:
        _write_parts_on_ray(state, shard_files, part_files, manifest["descriptor_dim"], num_workers,
                            ray_address, progress)
    else:
        for done, (shard_file, part_file) in enumerate(zip(shard_files, part_files), 1):
            write_part_from_shard(state, shard_file, manifest["descriptor_dim"], part_file)
            progress.update(done)
    index.merge_parts(part_files, Path(work_dir) / ON_DISK_LISTS_FILE if on_disk else None)
    for part_file in part_files:
        part_file.unlink()
    return index


def training_sample(directory, count: int) -> np.ndarray:
    """`count` descriptors spread evenly over a folder's rows (a database is often ordered
    along a route; its first rows would show the index one neighbourhood only).

    Args:
        directory: a finished descriptor folder.
        count: how many rows (at most all).
    """
    manifest = complete_manifest(directory)
    rows = np.array(evenly_spaced(range(manifest["num_rows"]), count), np.int64)
    sample = np.zeros((len(rows), manifest["descriptor_dim"]), np.float32)
    for shard in iter_shards(directory):
        start, stop = shard.row_ids[0], shard.row_ids[-1] + 1
        chosen = np.flatnonzero((rows >= start) & (rows < stop))
        sample[chosen] = shard.descriptors[rows[chosen] - start]
    return sample


def write_part_from_shard(trained_state: bytes, shard_file, dim: int, part_file) -> None:
    """Reads one shard and writes its IVF part (`write_ivf_part`) under its global row ids.

    Args:
        trained_state: the trained empty index, serialised.
        shard_file: the shard.
        dim: its descriptor length.
        part_file: the part to write.
    """
    shard = read_shard(shard_file, dim)
    write_ivf_part(trained_state, shard.descriptors, shard.row_ids, part_file)


def _write_parts_on_ray(state: bytes, shard_files, part_files, dim: int, num_workers: int,
                        ray_address: str | None, progress) -> None:
    from netvlad_tf.database.ray_embed import ray_session

    with ray_session(ray_address, num_workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=3)(write_part_from_shard)
        state_ref = ray.put(state)
        pending = [task.remote(state_ref, str(shard), dim, str(part))
                   for shard, part in zip(shard_files, part_files)]
        done = 0
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            done += len(finished)
            progress.update(done)
