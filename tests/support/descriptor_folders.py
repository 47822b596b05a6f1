"""A descriptor folder of random unit descriptors, written through the shard writer: for index
tests that need more rows than images are worth embedding."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from netvlad_tf.database.descriptor_folder import FORMAT, FORMAT_VERSION, DescriptorFolder
from netvlad_tf.database.shards import rows_table, shard_name, write_shard


def random_descriptor_folder(folder: Path, num_rows: int = 600, dim: int = 32, shard_size: int = 150,
                             seed: int = 3, missing_rows: tuple[int, ...] = ()) -> np.ndarray:
    """Writes the folder, the `missing_rows` marked as unreadable images; returns its
    `(num_rows, dim)` descriptors (those of the missing rows are not in the folder)."""
    descriptors = np.random.default_rng(seed).normal(size=(num_rows, dim)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    rows = rows_table([f"image-{i}.jpg" for i in range(num_rows)], np.zeros((num_rows, 2)))
    (folder / "shards").mkdir(parents=True)
    for shard, start in enumerate(range(0, num_rows, shard_size)):
        missing = {row - start: "unreadable" for row in missing_rows if start <= row < start + shard_size}
        write_shard(folder / "shards" / shard_name(shard), rows.slice(start, shard_size),
                    descriptors[start:start + shard_size], missing)
    pq.write_table(rows, folder / "rows.parquet")
    DescriptorFolder(folder, {"format": FORMAT, "version": FORMAT_VERSION, "model_name": "random",
                              "model_sha256": "-", "descriptor_dim": dim, "image_size": None,
                              "max_side": None, "shard_size": shard_size, "num_rows": num_rows,
                              "rows_sha256": "-", "precision": "float32",
                              "segments": [{"first_row": 0, "num_rows": num_rows}],
                              "complete": True, "num_missing": len(missing_rows)}).record()
    return descriptors
