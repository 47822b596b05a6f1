"""Embedding one shard of a descriptor folder: the unit of work of every embedding worker."""

from __future__ import annotations

from pathlib import Path

import keras
import pyarrow.parquet as pq

from netvlad_tf.data.images import indexed_image_batches
from netvlad_tf.database.shards import MODEL_FILE, ROWS_FILE, SHARDS_FOLDER, shard_name, shard_rows, write_shard
from netvlad_tf.inference.embedding import predict_all
from netvlad_tf.models.model_files import load_model_file


class ShardWriter:
    """Embeds shard number i of a descriptor folder and writes `shards/shard-i.parquet`: the
    one unit of work of both the in-process loop and the Ray actors. The model is loaded once.

    Args:
        directory: the descriptor folder.
        manifest: its manifest.
        batch_size: images per forward pass.
        model: the model, when loaded already (None: read the folder's `model.keras`).
    """

    def __init__(self, directory, manifest: dict, batch_size: int, model: keras.Model | None = None):
        self.directory = Path(directory)
        self.manifest = manifest
        self.batch_size = batch_size
        self.model = model if model is not None else load_model_file(self.directory / MODEL_FILE, place_model=False)
        self.rows = pq.read_table(self.directory / ROWS_FILE)
        size = manifest["image_size"]
        self.image_size = tuple(size) if size else None

    def write(self, shard: int) -> int:
        """Embeds and writes one shard; returns its number of rows."""
        rows = shard_rows(shard, self.manifest["shard_size"], self.manifest["num_rows"])
        plan = self.rows.slice(rows.start, len(rows))
        paths = plan.column("image_path").to_pylist()
        batches = indexed_image_batches(paths, self.image_size, self.manifest["max_side"], self.batch_size)
        descriptors = predict_all(self.model, batches, len(paths), verbose=False)
        write_shard(self.directory / SHARDS_FOLDER / shard_name(shard), plan, descriptors)
        return len(rows)
