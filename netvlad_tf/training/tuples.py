"""Batches of mined training tuples as a `tf.data.Dataset` for `model.fit`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from netvlad_tf.training.mining import HardNegativeMiner, MinedTuple
from netvlad_tf.training.tuple_sources import TupleSource, as_tuple_source


def tuple_dataset(
    miner: HardNegativeMiner,
    source: TupleSource | tuple[int, int] | None = None,
    batch_size: int = 4,
    placeholder_first_iterator: bool = False,
) -> tf.data.Dataset:
    """An endless stream of tuples: the training queries in the miner's order
    (`HardNegativeMiner.next_query`), mined with its current cache; queries without a
    violating negative are skipped.
    Give `model.fit` `steps_per_epoch=tuple_steps_per_epoch(miner, batch_size)`.

    From images (`source` an image size), each element is a dict: `query` `(B, H, W, 3)`,
    `positives` `(B, 1, H, W, 3)`, `negatives` `(B, N, H, W, 3)` (zero-padded),
    `positive_mask` `(B, 1)`, `negative_mask` `(B, N)`. The stream itself reads nothing ahead;
    `fit` takes the next batch while a step runs, so a batch is mined with the cache of the
    step before it.

    From a feature store (a `FrozenFeatureStore` of the miner's dataset, or with a mining pool
    a `PoolFeatureStore` that `CacheRefresh` fills at each refresh) the images are replaced by
    their stored trunk features: `query_features` `(B, h, w, C)`, `positive_features`
    `(B, 1, h, w, C)`, `negative_features` `(B, N, h, w, C)`, which the model's `train_step`
    sends through its trainable head only.

    Args:
        miner: the `HardNegativeMiner` whose cache picks positives and negatives.
        source: what the tuples hold: an image size `(H, W)` (the images, resized) or a
            `TupleSource`; give `CacheRefresh` the same.
        batch_size: tuples per element.
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
    source = as_tuple_source(source, miner.dataset)
    if source.dataset_size != (miner.dataset.num_database, miner.dataset.num_queries):
        raise ValueError(
            f"{source} does not hold the miner's dataset {miner.dataset} "
            f"({source.dataset_size[0]} database and {source.dataset_size[1]} query images stored)."
        )
    keys, num_negatives = source.keys, miner.num_negatives

    def read(mined: MinedTuple) -> tuple:
        """`(query, positive, [negatives])` inputs of a mined tuple."""
        return (source.query_input(mined.query), source.database_input(mined.positive),
                [source.database_input(index) for index in mined.negatives])

    iterators_opened = 0

    def batches():
        nonlocal iterators_opened
        iterators_opened += 1
        if placeholder_first_iterator and iterators_opened == 1:
            placeholder = _empty_batch(keys, source.input_shape, batch_size, num_negatives)
            while True:
                yield placeholder
        pending: list[tuple] = []
        while True:
            read_tuple = miner.next_tuple(read)
            if read_tuple is None:
                continue
            pending.append(read_tuple)
            if len(pending) == batch_size:
                yield _load_batch(pending, keys, source.input_shape, num_negatives)
                pending = []

    signature = {
        keys[0]: tf.TensorSpec((None, *source.input_shape), tf.float32),
        keys[1]: tf.TensorSpec((None, 1, *source.input_shape), tf.float32),
        keys[2]: tf.TensorSpec((None, num_negatives, *source.input_shape), tf.float32),
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
