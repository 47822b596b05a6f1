"""Running a model over image files in batches, with a progress bar."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.data.images import DEFAULT_MAX_SIDE, indexed_image_batches
from netvlad_tf.tf_errors import short_tf_message


def embed_images(
    model: keras.Model,
    paths: Sequence[str],
    image_size: tuple[int, int] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
    verbose: bool = True,
):
    """Descriptors of the images at `paths`, in order: `(N, dim)` float32.

    Images are read by the package's image policy (`netvlad_tf.data.images`): upright by their
    EXIF orientation, resized to `image_size` or capped at `max_side`, batched with images of
    the same shape, so a folder of mixed sizes works at any `batch_size`.

    Args:
        model: maps `(B, H, W, 3)` RGB images in 0–255 to descriptors (several outputs give a
            list of arrays, one per output).
        paths: image files.
        image_size: `(H, W)` to resize every image to, or None to keep native sizes.
        max_side: longest side allowed when `image_size` is None (None: uncapped).
        batch_size: images per forward pass.
        verbose: show a progress bar.

    Returns:
        `(N, dim)` float32, row i for `paths[i]`.

    Raises:
        ValueError: an image that is missing, damaged or too large (named), or a batch that
            does not fit in memory (with what to lower).

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
    outputs: list[np.ndarray] | None = None
    done = 0
    for indices, batch in indexed_image_batches(list(paths), image_size, max_side, batch_size):
        try:
            result = model(batch, training=False)
        except tf.errors.ResourceExhaustedError as error:
            raise ValueError(
                f"Out of memory embedding {len(batch)} images of {batch.shape[1]}×{batch.shape[2]} "
                f"pixels; lower --batch_size or --max_side ({short_tf_message(error)})."
            ) from None
        result = result if isinstance(result, (list, tuple)) else [result]
        arrays = [keras.ops.convert_to_numpy(r).astype(np.float32) for r in result]
        if outputs is None:
            outputs = [np.zeros((len(paths), *array.shape[1:]), np.float32) for array in arrays]
        for output, array in zip(outputs, arrays):
            output[indices] = array
        done += len(batch)
        progress.update(done)
    return outputs if len(outputs) > 1 else outputs[0]
