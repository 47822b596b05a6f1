"""Embedding one shard of a descriptor folder: the unit of work of every embedding worker."""

from __future__ import annotations

import numpy as np

from netvlad_tf.data.images import indexed_image_batches
from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.database.patch_shards import read_patch_shard, settings_of, write_patch_shard
from netvlad_tf.database.shards import MissingRow, read_shard, shard_name, write_shard
from netvlad_tf.inference.embedding import predict_batches
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.reranking.patch_descriptors import PatchDescriber

# What `embed` does with an image it cannot read: skip it (the row is kept, marked missing) or stop.
ON_UNREADABLE = ("skip", "stop")
# By default a shard is refused when more than this share of its images cannot be read: many
# failures at once are a lost mount or a wrong image root, not a few bad files.
DEFAULT_MAX_UNREADABLE = 0.1


class UnreadableImagesError(ValueError):
    """Too many images of one shard could not be read (a lost mount rather than bad files)."""


class ShardWriter:
    """Embeds shard number i of a descriptor folder and writes `shards/shard-i.parquet`: the
    one unit of work of both the in-process loop and the Ray actors. The model is loaded once.

    Args:
        folder: the descriptor folder.
        batch_size: images per forward pass.
        runner: what to embed with, when prepared already (None: the folder's, `ModelRunner.open`).
        on_unreadable: `"skip"` marks the row of an image that cannot be read as missing (its
            reason kept in the shard); `"stop"` stops at it, naming it.
        max_unreadable: with `"skip"`, the largest share of a shard's images that may be
            unreadable; above it nothing is written for that shard and the run stops.
    """

    def __init__(self, folder: DescriptorFolder, batch_size: int, runner: ModelRunner | None = None,
                 on_unreadable: str = "skip", max_unreadable: float = DEFAULT_MAX_UNREADABLE):
        if on_unreadable not in ON_UNREADABLE:
            raise ValueError(f"on_unreadable must be one of {ON_UNREADABLE}, got {on_unreadable!r}.")
        if not 0 <= max_unreadable <= 1:
            raise ValueError(f"max_unreadable is a share of a shard's images, 0 to 1, got {max_unreadable}.")
        self.folder = folder
        self.batch_size = batch_size
        self.on_unreadable = on_unreadable
        self.max_unreadable = max_unreadable
        self.runner = runner if runner is not None else folder.runner()
        self.rows = folder.plan()
        self.patches = folder.patch_features
        # Shard → its missing rows, for the shards written here (the folder need not read them back).
        self.written_missing: dict[int, list[MissingRow]] = {}
        self.describer = None
        if self.patches is not None:  # patches come from the float32 model, whatever the precision
            self.describer = PatchDescriber(self.runner.model, settings_of(self.patches))

    def write(self, shard: int) -> int:
        """Embeds and writes one shard; returns its number of rows.

        Raises:
            UnreadableImagesError: more than `max_unreadable` of its images cannot be read.
            ValueError: with `on_unreadable="stop"`, the first image that cannot be read.
        """
        rows = self.folder.shard_ranges[shard]
        plan = self.rows.slice(rows.start, len(rows))
        descriptors, missing, patches = self._embed(plan.column("image_path").to_pylist(), shard)
        if self.describer is not None:  # before the global shard: a finished shard has its patches
            write_patch_shard(self.folder.patches_folder, shard, patches, self.patches["dtype"])
        write_shard(self.folder.shard_path(shard), plan, descriptors, missing)
        self._record_missing(shard, plan, missing)
        return len(rows)

    def retry_missing(self, shard: int) -> int:
        """Reads the missing rows of a written shard again (their files were fixed) and rewrites
        it with those that now read; returns how many are still missing."""
        path = self.folder.shard_path(shard)
        written = read_shard(path, self.folder.descriptor_dim)
        rows = self.folder.shard_ranges[shard]
        plan = self.rows.slice(rows.start, len(rows))
        descriptors = np.zeros((len(rows), self.folder.descriptor_dim), np.float32)
        descriptors[written.row_ids - rows.start] = written.descriptors
        positions = written.missing_row_ids - rows.start
        paths = plan.column("image_path").to_pylist()
        retried, still_missing, retried_patches = self._embed([paths[i] for i in positions], shard)
        descriptors[positions] = retried
        missing = {int(positions[i]): reason for i, reason in still_missing.items()}
        if self.describer is not None:
            patches = read_patch_shard(self.folder.patches_folder, shard)
            for position, features in zip(positions, retried_patches):
                patches[position] = features
            write_patch_shard(self.folder.patches_folder, shard, patches, self.patches["dtype"])
        write_shard(path, plan, descriptors, missing)
        self._record_missing(shard, plan, missing)
        return len(missing)

    def _record_missing(self, shard: int, plan, missing: dict[int, str]) -> None:
        """Keeps the missing rows of a shard just written (`written_missing`)."""
        paths = plan.column("image_path").to_pylist()
        start = self.folder.shard_ranges[shard].start
        self.written_missing[shard] = [MissingRow(start + position, paths[position], reason)
                                       for position, reason in sorted(missing.items())]

    def _embed(self, paths: list[str], shard: int) -> tuple[np.ndarray, dict[int, str], list]:
        """Descriptors of `paths` (zero rows for those that cannot be read), the unreadable
        ones' positions with their reasons, and with patch features each path's (None if unread)."""
        descriptors = np.zeros((len(paths), self.folder.descriptor_dim), np.float32)
        patches: list = [None] * len(paths)
        if not paths:
            return descriptors, {}, patches
        missing: dict[int, str] | None = None if self.on_unreadable == "stop" else {}
        batches = indexed_image_batches(paths, self.folder.image_size, self.folder.max_side, self.batch_size,
                                        unreadable=missing)
        if self.describer is not None:
            batches = self._with_patches(batches, patches)
        for indices, (output, *_) in predict_batches(self.runner.forward, batches, len(paths), verbose=False):
            descriptors[indices] = output
        missing = missing or {}
        if len(missing) > self.max_unreadable * len(paths):
            first = missing[min(missing)]
            raise UnreadableImagesError(
                f"{shard_name(shard)}: {len(missing)} of {len(paths)} images cannot be read (first: {first}), "
                f"more than --max_unreadable={self.max_unreadable:g} of a shard: is the image storage mounted? "
                "Nothing was written for this shard; fix it and rerun the same command to go on.")
        return descriptors, missing, patches

    def _with_patches(self, batches, patches: list):
        """The image batches as they come, each one's patch features recorded on the way (the
        images are read once; the backbone runs for the global descriptor and for the patches)."""
        for indices, images in batches:
            for position, features in zip(indices, self.describer.describe_arrays(images)):
                patches[int(position)] = features
            yield indices, images
