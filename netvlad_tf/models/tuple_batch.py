"""The batch format of the paper's training step (arXiv 1511.07247, Sec. 4): which keys a batch
of tuples holds, as images or as the frozen trunk's features of those images.

`PlaceRecognitionModel.train_step` reads it; `netvlad_tf.training.tuple_dataset` writes it.
"""

from __future__ import annotations

# Keys of a tuple batch holding images, or the frozen trunk's features of those images; each
# batch also holds `positive_mask` and `negative_mask`.
IMAGE_KEYS = ("query", "positives", "negatives")
FEATURE_KEYS = ("query_features", "positive_features", "negative_features")


def tuple_batch(data) -> dict | None:
    """The tuple dict of a batch, also when Keras wraps it as `(x,)` or `(x, None, None)`;
    None for any other batch (an ordinary supervised one).

    Example:
    >>> tuple_batch(({"query": 1, "positives": 2},)) is not None, tuple_batch((1, 2))
    (True, None)
    """
    if isinstance(data, (tuple, list)) and data and all(extra is None for extra in data[1:]):
        data = data[0]
    if isinstance(data, dict) and (IMAGE_KEYS[0] in data or FEATURE_KEYS[0] in data):
        return data
    return None
