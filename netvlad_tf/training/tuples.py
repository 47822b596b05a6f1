"""Batches of mined training tuples as a `tf.data.Dataset` for `model.fit`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from netvlad_tf.data.images import load_image
from netvlad_tf.mining import HardNegativeMiner, MinedTuple


def tuple_dataset(
    miner: HardNegativeMiner, image_size: tuple[int, int], batch_size: int = 4, seed: int = 0
) -> tf.data.Dataset:
    """An endless stream of tuples: the training queries in a new random order on each pass,
    mined with the miner's current cache; queries without a violating negative are skipped.
    Give `model.fit` `steps_per_epoch=tuple_steps_per_epoch(miner, batch_size)`.

    Each element is a dict: `query` `(B, H, W, 3)`, `positives` `(B, 1, H, W, 3)`,
    `negatives` `(B, N, H, W, 3)` (zero-padded), `positive_mask` `(B, 1)`,
    `negative_mask` `(B, N)`. Nothing is read ahead, so tuples are mined with the cache as
    it is when the step starts.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> miner = HardNegativeMiner(read_csv_dataset(nordland_csv("test")), num_negatives=2)
    >>> tuple_dataset(miner, (32, 64)).element_spec["negatives"].shape
    TensorShape([None, 2, 32, 64, 3])
    """
    height, width = image_size
    num_negatives = miner.num_negatives
    rng = np.random.default_rng(seed)

    def batches():
        pending: list[MinedTuple] = []
        while True:
            for query in rng.permutation(miner.training_queries):
                mined = miner.mine(int(query))
                if mined is None:
                    continue
                pending.append(mined)
                if len(pending) == batch_size:
                    yield _load_batch(miner, pending, image_size, num_negatives)
                    pending = []

    image = (height, width, 3)
    signature = {
        "query": tf.TensorSpec((None, *image), tf.float32),
        "positives": tf.TensorSpec((None, 1, *image), tf.float32),
        "negatives": tf.TensorSpec((None, num_negatives, *image), tf.float32),
        "positive_mask": tf.TensorSpec((None, 1), tf.float32),
        "negative_mask": tf.TensorSpec((None, num_negatives), tf.float32),
    }
    return tf.data.Dataset.from_generator(batches, output_signature=signature)


def tuple_steps_per_epoch(miner: HardNegativeMiner, batch_size: int = 4) -> int:
    """Steps of one epoch: one batch per `batch_size` training queries, as in the paper.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> tuple_steps_per_epoch(HardNegativeMiner(read_csv_dataset(nordland_csv("test"))), 4)
    87
    """
    return -(-len(miner.training_queries) // batch_size)


def _load_batch(miner, tuples: list[MinedTuple], image_size, num_negatives: int) -> dict:
    dataset = miner.dataset

    def read(path):
        return load_image(path, image_size).numpy()

    batch = len(tuples)
    negatives = np.zeros((batch, num_negatives, *image_size, 3), dtype=np.float32)
    negative_mask = np.zeros((batch, num_negatives), dtype=np.float32)
    for row, mined in enumerate(tuples):
        for column, index in enumerate(mined.negatives):
            negatives[row, column] = read(dataset.database_paths[index])
            negative_mask[row, column] = 1.0
    return {
        "query": np.stack([read(dataset.query_paths[t.query]) for t in tuples]),
        "positives": np.stack([read(dataset.database_paths[t.positive]) for t in tuples])[:, None],
        "negatives": negatives,
        "positive_mask": np.ones((batch, 1), dtype=np.float32),
        "negative_mask": negative_mask,
    }
