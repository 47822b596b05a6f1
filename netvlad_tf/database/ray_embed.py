"""Embedding a descriptor folder's shards on Ray Data actors (`pip install 'netvlad_tf[ray]'`).

Ray Data schedules the shards over an actor pool; each actor loads the `.keras` model once
(from the folder, never pickled) and writes whole shards under their fixed names, so a task
that Ray retries after an actor died rewrites the same file and the output holds every row
exactly once. Ray's own `write_parquet` is not used: in parallel it can lose data
(ray-project/ray#55043), and its file names are not tied to rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.io.progress import Progress

# Driver-side work (the input blocks, the scheduler) needs CPUs of its own besides the actors;
# without them two 1-CPU actors on a 2-core machine starve the read task and Ray waits forever.
SPARE_LOGICAL_CPUS = 2


def import_ray():
    """`ray` and `ray.data`, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError("--num_workers runs on Ray Data, which is not installed: "
                         "pip install 'netvlad_tf[ray]'.") from None
    return ray


@contextlib.contextmanager
def ray_session(ray_address: str | None, local_cpus: float):
    """Yields `ray`, connected: to the cluster this process is on already, to `ray_address`, or
    to a local Ray started with `local_cpus` plus `SPARE_LOGICAL_CPUS` logical CPUs. What it
    started it stops at the end.

    Args:
        ray_address: `"auto"`, `"ray://host:port"` or None (local).
        local_cpus: CPUs the workers of a local Ray reserve.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here and ray_address is None:
        ray.init(num_cpus=math.ceil(local_cpus) + SPARE_LOGICAL_CPUS, include_dashboard=False,
                 log_to_driver=False)
    elif started_here:
        ray.init(address=ray_address, log_to_driver=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


class ShardActor:
    """A Ray Data callable class: loads the model once per actor, embeds whole shards.

    Args:
        directory: the descriptor folder (on storage every worker reaches; its manifest is read there).
        batch_size: images per forward pass.
        threads: TensorFlow's intra-op threads in this actor (its CPU share).
        on_shard_start: called with each shard number before it is embedded.
        writer_options: `ShardWriter`'s `on_unreadable` and `max_unreadable`.
    """

    def __init__(self, directory: str, batch_size: int, threads: int,
                 on_shard_start: Callable[[int], None] | None = None, writer_options: dict | None = None):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from netvlad_tf.database.shard_writer import ShardWriter

        folder = DescriptorFolder.open(directory, complete=False)
        self.writer = ShardWriter(folder, batch_size, **(writer_options or {}))
        self.on_shard_start = on_shard_start

    def __call__(self, batch: dict) -> dict:
        shards = [int(shard) for shard in batch["shard"]]
        rows = []
        for shard in shards:
            if self.on_shard_start is not None:
                self.on_shard_start(shard)
            rows.append(self.writer.write(shard))
        return {"shard": shards, "rows": rows}


def embed_shards_on_ray(folder: DescriptorFolder, shards: Sequence[int], num_workers: int,
                        ray_address: str | None, cpus_per_worker: float, gpus_per_worker: float,
                        batch_size: int, verbose: bool = True,
                        on_shard_start: Callable[[int], None] | None = None,
                        writer_options: dict | None = None) -> None:
    """Writes the listed shards of a prepared descriptor folder with `num_workers` Ray actors.

    Connects to `ray_address` (or the cluster this process is connected to already); without
    one, starts a local Ray with the actors' CPUs plus `SPARE_LOGICAL_CPUS`, and stops it after.

    Args:
        folder: the prepared `DescriptorFolder`.
        shards: shard numbers to write.
        num_workers: actors in the pool.
        ray_address: `"auto"`, `"ray://host:port"` or None.
        cpus_per_worker: logical CPUs per actor (also its TensorFlow thread count, rounded up).
        gpus_per_worker: GPUs per actor.
        batch_size: images per forward pass.
        verbose: show a progress bar over the rows.
        on_shard_start: called in the actor with each shard number first.
        writer_options: `ShardWriter`'s `on_unreadable` and `max_unreadable`.
    """
    with ray_session(ray_address, num_workers * cpus_per_worker) as ray:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        plan = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        written = plan.map_batches(
            ShardActor,
            fn_constructor_kwargs={
                "directory": str(folder.directory.resolve()),
                "batch_size": batch_size, "threads": max(1, math.ceil(cpus_per_worker)),
                "on_shard_start": on_shard_start, "writer_options": writer_options,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )
        progress = Progress(folder.rows_in(shards), "image", verbose, "embedding")
        done = 0
        for row in written.iter_rows():
            done += int(row["rows"])
            progress.update(done)
