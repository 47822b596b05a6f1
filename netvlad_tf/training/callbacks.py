"""Callbacks of the paper's training: cache refresh and validation Recall@N.

Reference: arXiv 1511.07247, Sec. 4 and Appendix A (the cached descriptors are recomputed every
1000 training queries) and Sec. 5.1 (Recall@N).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import keras

from netvlad_tf.data.geo_dataset import EVAL_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.evaluation.evaluate import evaluate
from netvlad_tf.evaluation.recall import DEFAULT_NS
from netvlad_tf.io.atomic_writes import write_bytes_atomically
from netvlad_tf.training.mining import HardNegativeMiner
from netvlad_tf.training.tuple_sources import as_tuple_source


class CacheRefresh(keras.callbacks.Callback):
    """Recomputes the miner's descriptor cache before training and every `refresh_every`
    training queries; the interval doubles each time the learning rate halves, as in the
    authors' code.

    Args:
        miner: the `HardNegativeMiner` feeding the tuple dataset.
        source: what the tuples are made of, the same as `tuple_dataset`'s: an image size
            `(H, W)` (the images, resized; the whole model runs at a refresh) or a
            `TupleSource` (`FrozenFeatureStore` of the miner's dataset, or with a mining pool a
            `PoolFeatureStore`: a refresh then runs only the model's trainable head).
        refresh_every: training queries between refreshes (the paper: 1000).
        batch_size: images per forward pass while caching from images.
        verbose: show progress.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> miner = HardNegativeMiner(read_csv_dataset(nordland_csv("test")))
    >>> CacheRefresh(miner, (32, 64), refresh_every=1000).interval()
    1000
    """

    def __init__(self, miner: HardNegativeMiner, source=None, refresh_every: int = 1000,
                 batch_size: int = 8, verbose: bool = True):
        super().__init__()
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}.")
        self.miner = miner
        self.source = as_tuple_source(source, miner.dataset, batch_size)
        self.refresh_every = refresh_every
        self.verbose = verbose
        self.refreshes = 0
        self._initial_learning_rate = None
        self._visited_at_refresh = 0
        self._step_at_refresh = None

    def interval(self) -> int:
        """The current refresh interval in training queries."""
        if self._initial_learning_rate is None:  # before fit starts
            return self.refresh_every
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        halvings = max(0, round(math.log2(self._initial_learning_rate / learning_rate)))
        return self.refresh_every * 2**halvings

    def on_train_begin(self, logs=None):
        self._initial_learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self._step_at_refresh is None or self._step_at_refresh != self._optimizer_step():
            self.refresh()  # unless `refresh()` ran just before `fit`, with these very weights

    def on_train_batch_begin(self, batch, logs=None):
        if self.miner.queries_visited - self._visited_at_refresh >= self.interval():
            self.refresh()

    def refresh(self) -> None:
        """Recomputes the miner's cache with the model's current descriptors (`set_model` first
        when calling it outside `fit`).

        Under a `tf.distribute` strategy Keras reads the first batch before any callback runs,
        so call it once before `fit` there (`train` always does); `fit` then does not refresh
        again unless the weights changed in between (a restored backup)."""
        self.miner.refresh_from(self.source, self.model, self.interval(), verbose=self.verbose)
        self._visited_at_refresh = self.miner.queries_visited
        self._step_at_refresh = self._optimizer_step()
        self.refreshes += 1

    def _optimizer_step(self) -> int | None:
        optimizer = getattr(self.model, "optimizer", None)
        return None if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))


class RecallEvaluation(keras.callbacks.Callback):
    """Adds `val_recall@N` (fractions) to the epoch logs; place it before checkpoints that
    monitor them.

    Args:
        dataset: validation database and queries.
        image_size: resize policy of the images.
        ns: the cut-offs N.
        radius_m: a retrieval within this distance is correct (the paper: 25 m).
    """

    def __init__(self, dataset: GeoDataset, image_size=None, ns: Sequence[int] = DEFAULT_NS,
                 radius_m: float = EVAL_POSITIVE_RADIUS_M, batch_size: int = 8, verbose: bool = True):
        super().__init__()
        if len(dataset.queries_with_positives(radius_m)) == 0:
            raise ValueError(f"{dataset.name}: no validation query has a positive {dataset.positive_rule(radius_m)}.")
        self.dataset = dataset
        self.image_size = image_size
        self.ns = tuple(ns)
        self.radius_m = radius_m
        self.batch_size = batch_size
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        recalls = self.evaluate(self.model)
        if logs is not None:
            logs.update({f"val_recall@{n}": value for n, value in recalls.items()})
        if self.verbose:
            print(" ".join(f"val R@{n}={100 * v:.1f}" for n, v in recalls.items()), flush=True)

    def evaluate(self, model) -> dict[int, float]:
        """Recall@N of `model` on the validation set: the same embed → search → Recall@N path as
        `netvlad_tf.evaluate` (exact search)."""
        return evaluate(model, self.dataset, ns=self.ns, radius_m=self.radius_m, image_size=self.image_size,
                        batch_size=self.batch_size, verbose=False).recall


class EpochHistory(keras.callbacks.Callback):
    """Keeps every finished epoch's logs in a JSON file in the run folder, so that the history
    of a run resumed after a kill holds all its epochs, not only those after the resume.

    Args:
        path: the JSON file (read if it exists; rewritten atomically after each epoch).
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.epochs: dict[str, dict[str, float]] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[str(epoch)] = {key: float(value) for key, value in (logs or {}).items()}
        write_bytes_atomically(self.path, json.dumps(self.epochs, indent=2).encode(), overwrite=True)

    def history(self) -> dict[str, list[float]]:
        """`{metric: [value of epoch 0, 1, …]}` over every finished epoch of the run."""
        ordered = [self.epochs[key] for key in sorted(self.epochs, key=int)]
        return {name: [logs[name] for logs in ordered if name in logs]
                for name in dict.fromkeys(name for logs in ordered for name in logs)}
