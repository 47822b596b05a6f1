"""Running a model over image files (or any batches) with a progress bar: one inference loop."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf.common.tf_errors import short_tf_message
from netvlad_tf.data.images import DEFAULT_MAX_SIDE, indexed_image_batches
from netvlad_tf.io.progress import Progress

_COMPILED_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    batches = indexed_image_batches(list(paths), image_size, max_side, batch_size)
    return predict_all(model, batches, len(paths), verbose)


def predict_batches(model: keras.Model, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                    num_items: int, verbose: bool = True) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Runs `model` over `(indices, inputs)` batches with a progress bar: the package's one
    batched-inference loop (images, stored feature maps, anything the model takes), every
    batch through the model's compiled forward pass (`Embedder`).

    Args:
        model: called as `model(inputs, training=False)`; one output or a list of outputs.
        batches: `(indices, inputs)` pairs, `indices` the rows the batch's items belong to.
        num_items: how many items the batches hold in all (the progress bar's end).
        verbose: show a progress bar.

    Yields:
        `(indices, outputs)`: the batch's indices and a list of float32 arrays, one per output.

    Raises:
        ValueError: a batch that does not fit in memory, with what to lower.

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    >>> batches = [(np.array([0, 1]), np.ones((2, 2))), (np.array([2]), np.ones((1, 2)))]
    >>> [indices.tolist() for indices, _ in predict_batches(model, batches, 3, verbose=False)]
    [[0, 1], [2]]
    """
    progress = Progress(num_items, "image", verbose, "embedding")
    embedder = Embedder(model)
    done = 0
    for indices, inputs in batches:
        yield indices, embedder(inputs)
        done += len(inputs)
        progress.update(done)


class Embedder:
    """A model's compiled forward pass: `embedder(inputs)` runs `model(inputs, training=False)`
    as a `tf.function` (traced once per model and shape family, about 3× the throughput of an
    eager call on a 2-core CPU; eager when `model.run_eagerly`) and returns float32 NumPy arrays.
    Every batch is compiled, a single query photo too: the trace is made once per model and kept
    while the model lives, so only the first call of a shape pays for it.

    Not Keras' `predict_on_batch`: under a `tf.distribute` strategy that one gives every replica
    the whole batch and concatenates their outputs, so each row would come back once per replica.

    Args:
        model: maps a batch to one output or a list of outputs: a Keras model, or a runtime
            that is compiled already (`netvlad_tf.inference.int8.OnnxRuntimeModel`), called as it is.

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    >>> [output.shape for output in Embedder(model)(np.ones((3, 2), np.float32))]
    [(3, 1)]
    """

    def __init__(self, model: keras.Model):
        self.model = model
        if not isinstance(model, keras.Model):  # a compiled runtime already (int8 on ONNX Runtime)
            self._forward = model
        else:
            self._forward = None if model.run_eagerly else _compiled_forward(model)

    def __call__(self, inputs) -> list[np.ndarray]:
        """The model's outputs for one batch, a list of float32 arrays (one per output).

        Raises:
            ValueError: the batch does not fit in memory, with what to lower.
        """
        try:
            result = self._forward(inputs) if self._forward else self.model(inputs, training=False)
        except tf.errors.ResourceExhaustedError as error:
            raise ValueError(
                f"Out of memory running {self.model.name} on {len(inputs)} inputs of shape "
                f"{'×'.join(str(side) for side in inputs.shape[1:])}; lower --batch_size or the "
                f"image size (--max_side, --image_size) ({short_tf_message(error)})."
            ) from None
        result = result if isinstance(result, (list, tuple)) else [result]
        return [keras.ops.convert_to_numpy(output).astype(np.float32) for output in result]


def _compiled_forward(model: keras.Model):
    """`model(inputs, training=False)` as a `tf.function`, made once per model and dropped with it."""
    forward = _COMPILED_FORWARDS.get(model)
    if forward is None:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive
        forward = tf.function(lambda inputs: model_ref()(inputs, training=False), reduce_retracing=True)
        _COMPILED_FORWARDS[model] = forward
    return forward


def predict_all(model: keras.Model, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                num_items: int, verbose: bool = True) -> np.ndarray | list[np.ndarray]:
    """`predict_batches` gathered into `(num_items, …)` float32 arrays, row i from index i.

    Args:
        model: called as `model(inputs, training=False)`.
        batches: `(indices, inputs)` pairs covering the indices `0 … num_items − 1`.
        num_items: rows of the result.
        verbose: show a progress bar.

    Returns:
        One array, or a list of arrays when the model has several outputs.

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    >>> batches = [(np.array([2, 0]), np.ones((2, 2))), (np.array([1]), np.zeros((1, 2)))]
    >>> predict_all(model, batches, 3, verbose=False)[1].tolist()
    [0.0]
    """
    gathered: list[np.ndarray] | None = None
    for indices, outputs in predict_batches(model, batches, num_items, verbose):
        if gathered is None:
            gathered = [np.zeros((num_items, *output.shape[1:]), np.float32) for output in outputs]
        for array, output in zip(gathered, outputs):
            array[indices] = output
    if gathered is None:
        raise ValueError("No inputs to run the model on.")
    return gathered if len(gathered) > 1 else gathered[0]


def array_batches(array: np.ndarray, batch_size: int,
                  rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(indices, float32 rows)` batches of an array (e.g. a memory-mapped `.npy`), in order.

    Args:
        array: the rows to read, e.g. a memory-mapped `.npy`.
        batch_size: rows per batch.
        rows: read only these rows (positions in `rows` are the yielded indices); None: all.

    Example:
    >>> [indices.tolist() for indices, _ in array_batches(np.zeros((5, 3)), 2)]
    [[0, 1], [2, 3], [4]]
    >>> [batch[:, 0].tolist() for _, batch in array_batches(np.arange(5.0)[:, None], 2, rows=np.array([4, 1]))]
    [[4.0, 1.0]]
    """
    count = len(array) if rows is None else len(rows)
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        chunk = array[start:stop] if rows is None else array[rows[start:stop]]
        yield np.arange(start, stop), np.asarray(chunk, dtype=np.float32)
