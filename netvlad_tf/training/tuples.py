"""Batches of mined training tuples as a `tf.data.Dataset` for `model.fit`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from netvlad_tf.data.images import load_image
from netvlad_tf.models.tuple_batch import FEATURE_KEYS, IMAGE_KEYS
from netvlad_tf.training.frozen_features import FrozenFeatureStore, PoolFeatureStore
from netvlad_tf.training.mining import HardNegativeMiner, MinedTuple


def tuple_dataset(
    miner: HardNegativeMiner,
    image_size: tuple[int, int],
    batch_size: int = 4,
    frozen_features: FrozenFeatureStore | PoolFeatureStore | None = None,
    placeholder_first_iterator: bool = False,
) -> tf.data.Dataset:
    """An endless stream of tuples: the training queries in the miner's order
    (`HardNegativeMiner.next_query`), mined with its current cache; queries without a
    violating negative are skipped.
    Give `model.fit` `steps_per_epoch=tuple_steps_per_epoch(miner, batch_size)`.

    Each element is a dict: `query` `(B, H, W, 3)`, `positives` `(B, 1, H, W, 3)`,
    `negatives` `(B, N, H, W, 3)` (zero-padded), `positive_mask` `(B, 1)`,
    `negative_mask` `(B, N)`. The stream itself reads nothing ahead; `fit` takes the next batch
    while a step runs, so a batch is mined with the cache of the step before it.

    With `frozen_features` (a `FrozenFeatureStore` of the miner's dataset at `image_size`, or
    with a mining pool a `PoolFeatureStore` that `CacheRefresh` fills at each refresh) the
    images are replaced by their stored trunk features: `query_features` `(B, h, w, C)`,
    `positive_features` `(B, 1, h, w, C)`, `negative_features` `(B, N, h, w, C)`, which the
    model's `train_step` sends through its trainable head only.

    Args:
        miner: the `HardNegativeMiner` whose cache picks positives and negatives.
        image_size: `(H, W)` of every image.
        batch_size: tuples per element.
        frozen_features: a store to read trunk features from instead of images.
        placeholder_first_iterator: the first iterator opened on the dataset yields
            placeholder batches (zero images, every mask 0) and mines nothing. Under a
            `tf.distribute` strategy Keras 3's `fit` opens one iterator to build the model
            symbolically and drops it (`_maybe_symbolic_build`, then `reset()`; listed in
            `netvlad_tf.models.keras_compat`); with this the
            mining, and so the tuples of every step, are those of one device (`train` sets it
            when given a strategy).

    Returns:
        A `tf.data.Dataset` of tuple dicts (see above).

    Reference: arXiv 1511.07247, Sec. 4 (training tuples, Eq. 7).

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> miner = HardNegativeMiner(read_csv_dataset(nordland_csv("test")), num_negatives=2)
    >>> tuple_dataset(miner, (32, 64)).element_spec["negatives"].shape
    TensorShape([None, 2, 32, 64, 3])
    """
    height, width = image_size
    num_negatives = miner.num_negatives

    iterators_opened = 0

    def batches():
        nonlocal iterators_opened
        iterators_opened += 1
        if placeholder_first_iterator and iterators_opened == 1:
            placeholder = _empty_batch(keys, item_shape, batch_size, num_negatives)
            while True:
                yield placeholder
        pending: list[tuple] = []
        while True:
            with miner.lock:  # read under the plan the tuple was mined with
                mined = miner.mine(miner.next_query())
                if mined is None:
                    continue
                pending.append(_read_tuple(mined, *readers))
            if len(pending) == batch_size:
                yield _load_batch(pending, keys, item_shape, num_negatives)
                pending = []

    if frozen_features is None:
        keys, item_shape = IMAGE_KEYS, (height, width, 3)
        readers = (_image_reader(miner.dataset.query_paths, image_size),
                   _image_reader(miner.dataset.database_paths, image_size))
    else:
        stored = frozen_features.dataset_size
        if stored != (miner.dataset.num_database, miner.dataset.num_queries):
            raise ValueError(
                f"{frozen_features} does not hold the miner's dataset {miner.dataset} "
                f"({stored[0]} database and {stored[1]} query images stored)."
            )
        keys, item_shape = FEATURE_KEYS, frozen_features.feature_shape
        readers = (frozen_features.query_features, frozen_features.database_features)

    signature = {
        keys[0]: tf.TensorSpec((None, *item_shape), tf.float32),
        keys[1]: tf.TensorSpec((None, 1, *item_shape), tf.float32),
        keys[2]: tf.TensorSpec((None, num_negatives, *item_shape), tf.float32),
        "positive_mask": tf.TensorSpec((None, 1), tf.float32),
        "negative_mask": tf.TensorSpec((None, num_negatives), tf.float32),
    }
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # Under a multi-worker strategy every worker streams these same batches and keeps its
    # replicas' share of each (said here: a generator has no files to shard by).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def tuple_steps_per_epoch(miner: HardNegativeMiner, batch_size: int = 4) -> int:
    """Steps of one epoch: one batch per `batch_size` training queries, as in the paper.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> tuple_steps_per_epoch(HardNegativeMiner(read_csv_dataset(nordland_csv("test"))), 4)
    87
    """
    return -(-len(miner.training_queries) // batch_size)


def _image_reader(paths, image_size):
    """Index → the resized image at `paths[index]`."""
    return lambda index: load_image(paths[index], image_size).numpy()


def _read_tuple(mined: MinedTuple, read_query, read_database) -> tuple:
    """`(query, positive, [negatives])` arrays of a mined tuple."""
    return (read_query(mined.query), read_database(mined.positive),
            [read_database(index) for index in mined.negatives])


def _load_batch(tuples: list[tuple], keys, item_shape, num_negatives: int) -> dict:
    batch = _empty_batch(keys, item_shape, len(tuples), num_negatives)
    for row, (query, positive, negatives) in enumerate(tuples):
        batch[keys[0]][row] = query
        batch[keys[1]][row, 0] = positive
        batch["positive_mask"][row] = 1.0
        for column, negative in enumerate(negatives):
            batch[keys[2]][row, column] = negative
            batch["negative_mask"][row, column] = 1.0
    return batch


def _empty_batch(keys, item_shape, batch_size: int, num_negatives: int) -> dict:
    """A batch of the tuple signature holding nothing yet: zeros, every mask 0 (also the
    placeholder batch)."""
    return {
        keys[0]: np.zeros((batch_size, *item_shape), dtype=np.float32),
        keys[1]: np.zeros((batch_size, 1, *item_shape), dtype=np.float32),
        keys[2]: np.zeros((batch_size, num_negatives, *item_shape), dtype=np.float32),
        "positive_mask": np.zeros((batch_size, 1), dtype=np.float32),
        "negative_mask": np.zeros((batch_size, num_negatives), dtype=np.float32),
    }
