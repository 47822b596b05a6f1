"""Running a model over image files in batches, with a progress bar."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from netvlad_tf.data.images import image_batches


def embed_images(
    model: keras.Model,
    paths: Sequence[str],
    image_size: tuple[int, int] | None = None,
    max_side: int | None = None,
    batch_size: int = 8,
    verbose: bool = True,
):
    """Descriptors of the images at `paths`, in order: `(N, dim)` float32.

    A model with several outputs gives a list of arrays, one per output. Images are resized
    by the policy of `netvlad_tf.data.load_image`. A corrupt image raises `ValueError`
    naming the file.

    Example:
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).query_paths[:4]
    >>> model = build_netvlad_model(weights=None, pooling="mac")
    >>> embed_images(model, paths, (64, 128), verbose=False).shape
    (4, 512)
    """
    if len(paths) == 0:
        raise ValueError("No images to embed.")
    progress = keras.utils.Progbar(len(paths), unit_name="image", verbose=1 if verbose else 0)
    outputs: list[list[np.ndarray]] = []
    done = 0
    for batch in image_batches(list(paths), image_size, max_side, batch_size):
        result = model(batch, training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        outputs.append([keras.ops.convert_to_numpy(r).astype(np.float32) for r in result])
        done += len(batch)
        progress.update(done)
    stacked = [np.concatenate(parts) for parts in zip(*outputs)]
    return stacked if len(stacked) > 1 else stacked[0]
