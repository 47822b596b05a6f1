"""Search indices built from a descriptor folder, a shard at a time.

The IVF kinds train on a sample spread over the whole database, then either add shard by shard
in this process, or build one part per shard (in this process or as Ray tasks) and merge the
parts in RAM or into inverted lists on disk (faiss' `merge_ondisk`) for an index larger than RAM.
Flat, HNSW and NumPy indices add shard by shard. Memory is the index plus one shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.database.shards import DescriptorShard, read_shard, shard_missing_rows
from netvlad_tf.io.progress import Progress
from netvlad_tf.retrieval import DescriptorIndex, create_index
from netvlad_tf.retrieval.faiss_backends import ON_DISK_LISTS_FILE, write_ivf_part


def build_index_from_shards(
    folder,
    kind: str = "flat",
    work_dir=None,
    on_disk: bool = False,
    num_workers: int = 0,
    ray_address: str | None = None,
    verbose: bool = True,
    on_shard: Callable[[DescriptorShard], None] | None = None,
    **parameters,
) -> DescriptorIndex:
    """A search index over every descriptor of a finished descriptor folder: id i is the i-th
    embedded row (rows whose image could not be read are left out, so ids are consecutive).

    Args:
        folder: the finished descriptor folder (`netvlad-tf embed`), or its path.
        kind: an index kind of `create_index` (`"flat"`, `"ivfpq"`, `"ivfsq8"`, `"hnsw"`, …).
        work_dir: an existing folder for the parts and on-disk lists (needed with `on_disk`
            or `num_workers`; on the file system the index is saved to, so the lists move
            there without a copy).
        on_disk: IVF kinds only: keep the inverted lists in `work_dir/index.ivfdata` instead of
            RAM (saved by moving the file beside the index).
        num_workers: IVF kinds: build the parts as Ray tasks with this many in flight (0: here).
        ray_address: an existing Ray cluster for the tasks (None: a local one).
        verbose: show a progress bar over the shards.
        on_shard: called with each shard in row order as it is added, so a caller keeps its
            image paths and coordinates without reading the folder again. A flat (or HNSW,
            NumPy) index reads each shard once; an IVF index once more for its training sample.
        **parameters: the kind's options (e.g. `num_lists=1024`, `num_probes=32`).

    Returns:
        The filled `DescriptorIndex`.

    Example:
    >>> build_index_from_shards("/no/such/folder")
    Traceback (most recent call last):
    ...
    netvlad_tf.database.shards.DescriptorFolderError: /no/such/folder is not a descriptor folder (no manifest.json; ...).
    """
    folder = DescriptorFolder.of(folder)
    total = folder.num_embedded
    index = create_index(kind, folder.descriptor_dim, model_name=folder.model_name, **parameters)
    in_parts = index.builds_in_parts and (on_disk or num_workers > 0)
    if (on_disk or num_workers) and not index.builds_in_parts:
        raise ValueError(f"--on_disk and --num_workers build IVF indices (ivfpq, ivfsq8), not {kind!r}.")
    if in_parts and work_dir is None:
        raise ValueError("An index built in parts needs a work_dir for them.")
    if index.needs_training:
        index.train(training_sample(folder, index.training_sample_size(total)), database_size=total)
    num_shards = len(folder.shard_ranges)
    progress = Progress(num_shards, "shard", verbose, "indexing")
    if not in_parts:
        add_shards(index, _passed_on(folder.shards(), on_shard), progress)
        return index
    parts_dir = Path(work_dir) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    shard_files = [folder.shard_path(shard) for shard in range(num_shards)]
    part_files = [parts_dir / f"{path.stem}.index" for path in shard_files]
    # Each shard's first id: the embedded rows before it.
    embedded = [len(rows) - len(shard_missing_rows(path)) for rows, path in zip(folder.shard_ranges, shard_files)]
    first_ids = np.concatenate([[0], np.cumsum(embedded)[:-1]]).astype(np.int64)
    state = index.trained_state()
    if num_workers:
        _write_parts_on_ray(state, shard_files, first_ids, part_files, folder.descriptor_dim, num_workers,
                            ray_address, progress)
        if on_shard is not None:  # the parts were read where they were built
            for shard in folder.shards():
                on_shard(shard)
    else:
        for done, (shard_file, first_id, part_file) in enumerate(zip(shard_files, first_ids, part_files), 1):
            shard = write_part_from_shard(state, shard_file, int(first_id), folder.descriptor_dim, part_file)
            if on_shard is not None:
                on_shard(shard)
            progress.update(done)
    index.merge_parts(part_files, Path(work_dir) / ON_DISK_LISTS_FILE if on_disk else None)
    for part_file in part_files:
        part_file.unlink()
    return index


def _passed_on(shards: Iterable[DescriptorShard], on_shard) -> Iterator[DescriptorShard]:
    """The shards as they come, each given to `on_shard` first (when set)."""
    for shard in shards:
        if on_shard is not None:
            on_shard(shard)
        yield shard


def add_shards(index: DescriptorIndex, shards, progress: Progress | None = None) -> int:
    """Adds the embedded rows of `shards` (`DescriptorShard`s, in row order) to `index`, their
    ids continuing from its size; returns how many were added.

    Args:
        index: a trained (or untrained flat/HNSW/NumPy) index.
        shards: the shards to add.
        progress: advanced by one per shard.
    """
    added = 0
    for done, shard in enumerate(shards, 1):
        if len(shard.descriptors):
            index.add(shard.descriptors)
        added += len(shard.descriptors)
        if progress is not None:
            progress.update(done)
    return added


def training_sample(folder, count: int) -> np.ndarray:
    """`count` descriptors spread evenly over a folder's embedded rows, row `⌊i·M/count⌋` for
    i < count (a database is often ordered along a route; its first rows would show the index
    one neighbourhood only). Exactly `count` (at most M), so IVF training gets the 39 rows per
    list it asks for.

    Args:
        folder: a finished descriptor folder, or its path.
        count: how many rows (at most all).
    """
    folder = DescriptorFolder.of(folder)
    embedded = folder.num_embedded
    count = min(count, embedded)
    positions = np.arange(count, dtype=np.int64) * embedded // count
    sample = np.zeros((len(positions), folder.descriptor_dim), np.float32)
    start = 0
    for shard in folder.shards():
        stop = start + len(shard.descriptors)
        chosen = np.flatnonzero((positions >= start) & (positions < stop))
        sample[chosen] = shard.descriptors[positions[chosen] - start]
        start = stop
    return sample


def write_part_from_shard(trained_state: bytes, shard_file, first_id: int, dim: int, part_file) -> DescriptorShard:
    """Reads one shard and writes its IVF part (`write_ivf_part`), its embedded rows under the
    ids `first_id`, `first_id + 1`, …; returns the shard read.

    Args:
        trained_state: the trained empty index, serialised.
        shard_file: the shard.
        first_id: the id of its first embedded row (the embedded rows before this shard).
        dim: its descriptor length.
        part_file: the part to write.
    """
    shard = read_shard(shard_file, dim)
    ids = np.arange(first_id, first_id + len(shard.descriptors), dtype=np.int64)
    write_ivf_part(trained_state, shard.descriptors, ids, part_file)
    return shard


def _write_part_only(*arguments) -> None:
    """`write_part_from_shard` as a Ray task: the part is written there, nothing comes back."""
    write_part_from_shard(*arguments)


def _write_parts_on_ray(state: bytes, shard_files, first_ids, part_files, dim: int, num_workers: int,
                        ray_address: str | None, progress) -> None:
    from netvlad_tf.database.ray_embed import ray_session

    with ray_session(ray_address, num_workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=3)(_write_part_only)
        state_ref = ray.put(state)
        pending = [task.remote(state_ref, str(shard), int(first_id), dim, str(part))
                   for shard, first_id, part in zip(shard_files, first_ids, part_files)]
        done = 0
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            done += len(finished)
            progress.update(done)
