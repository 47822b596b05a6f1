"""Weakly supervised training: tuples from hard-negative mining, callbacks, the recipe."""

from netvlad_tf.training.callbacks import CacheRefresh, EpochHistory, RecallEvaluation
from netvlad_tf.training.frozen_features import FrozenFeatureStore, PoolFeatureStore
from netvlad_tf.training.mining import HardNegativeMiner
from netvlad_tf.training.multi_worker import multi_worker_strategy
from netvlad_tf.training.train import TrainingRun, new_run_dir, train
from netvlad_tf.training.tuple_sources import ImageSource, TupleSource
from netvlad_tf.training.tuples import tuple_dataset, tuple_steps_per_epoch

__all__ = ["CacheRefresh", "EpochHistory", "FrozenFeatureStore", "HardNegativeMiner", "ImageSource",
           "PoolFeatureStore", "RecallEvaluation", "TrainingRun", "TupleSource", "multi_worker_strategy",
           "new_run_dir", "train", "tuple_dataset", "tuple_steps_per_epoch"]
