"""`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` across several processes.

Keras 3.15's TensorFlow trainer fails there in two places (keras-team/keras#20585, #20329):

1. Before training it reads one batch to build the model symbolically and averages it over the
   replicas with `strategy.reduce("MEAN", batch)`; across workers that eager all-reduce raises
   `ValueError: Attempt to convert a value (PerReplica:{...})`. Only the batch's shapes matter
   there, so `MultiWorkerFit` builds from this worker's first replica's share instead.
2. After each step it averages the step's logs with `strategy.reduce("MEAN", value, axis=0)`,
   which fails on a scalar (`Invalid reduction dimension 0 for input with 0 dimensions`).
   `multi_worker_logs` gives each scalar log one axis of length 1 in multi-worker mode; the
   reduction then averages over the replicas and returns a scalar, as on one device.

Everything else (the dataset's split over the workers, the gradient all-reduce, the callbacks)
is Keras' and TensorFlow's own.
"""

from __future__ import annotations

import tensorflow as tf
from keras import tree


def in_multi_worker_mode(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over more than one worker: the
    case Keras' trainer reduces across processes.

    Example:
    >>> in_multi_worker_mode(tf.distribute.get_strategy())
    False
    """
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


class MultiWorkerFit:
    """Mixin for a `keras.Model` whose `fit` must run under `MultiWorkerMirroredStrategy`
    (see the module's text); it changes nothing under any other strategy or none. A
    `train_step` that returns its own logs passes them through `multi_worker_logs`."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and in_multi_worker_mode(strategy):
            for _, _, distributed_iterator in iterator:
                data_batch = tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(distributed_iterator))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def multi_worker_logs(self, logs: dict) -> dict:
        """`logs` of a step as Keras' trainer can average them over the workers' replicas."""
        if self._distribute_strategy is None or not in_multi_worker_mode(self._distribute_strategy):
            return logs
        return tree.map_structure(_with_replica_axis, logs)


def _with_replica_axis(value):
    value = tf.convert_to_tensor(value)
    return tf.reshape(value, (1,)) if value.shape.rank == 0 else value
