"""Every place netvlad_tf relies on a private name of Keras or TensorFlow, in one module.

Checked on keras 3.15.1 and tensorflow 2.21.0 (the range `pyproject.toml` pins); the fast test
`tests/models/test_keras_compat.py` fails the moment a hooked name is missing or its signature
changes (`missing_hooks`), instead of a workaround switching itself off silently:

- `keras.src.backend.tensorflow.trainer.TensorFlowTrainer._maybe_symbolic_build(iterator,
  data_batch)` (found on `keras.Model`'s bases, `keras_trainer_with`): overridden
  by `MultiWorkerFit` (keras-team/keras#20585, below). The tuple stream's placeholder first
  iterator (`training.tuples.tuple_dataset(placeholder_first_iterator=True)`) answers the same
  method's habit of opening one iterator on the dataset first under a strategy, reading one
  batch and dropping the iterator.
- `keras.Model._distribute_strategy`: the strategy a model was built under (`model_strategy`).
- `tf.distribute.MultiWorkerMirroredStrategy.extended._in_multi_worker_mode()`: whether a
  strategy spans several workers (`in_multi_worker_mode`).
- `tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2`: folds
  weights into a graph for the SavedModel and TFLite exports (re-exported here).

`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` across several processes:
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
is Keras' and TensorFlow's own. The mixin is inert on one device and under other strategies:
it only acts when `in_multi_worker_mode` holds.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf
from keras import tree
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

__all__ = ["MultiWorkerFit", "convert_variables_to_constants_v2", "in_multi_worker_mode", "keras_trainer_with", "missing_hooks",
           "model_strategy"]


def missing_hooks() -> list[str]:
    """What is wrong with the private names this module relies on (empty when all hold).

    Example:
    >>> missing_hooks()
    []
    """
    problems = []
    trainer = keras_trainer_with("_maybe_symbolic_build")
    if trainer is None:
        problems.append("keras Model._maybe_symbolic_build is gone")
    elif list(inspect.signature(trainer._maybe_symbolic_build).parameters) != ["self", "iterator", "data_batch"]:
        problems.append(f"keras {trainer.__name__}._maybe_symbolic_build"
                        f"{inspect.signature(trainer._maybe_symbolic_build)} changed its arguments")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    if not hasattr(model, "_distribute_strategy"):
        problems.append("keras.Model._distribute_strategy is gone")
    # The strategy's `extended` class, looked up without creating a strategy (that would start
    # TensorFlow's collective runtime).
    from tensorflow.python.distribute.collective_all_reduce_strategy import CollectiveAllReduceExtended

    if not callable(getattr(CollectiveAllReduceExtended, "_in_multi_worker_mode", None)):
        problems.append("tf MultiWorkerMirroredStrategy.extended._in_multi_worker_mode is gone")
    return problems


def keras_trainer_with(name: str) -> type | None:
    """The base class of `keras.Model` that defines `name` (Keras' backend trainer), or None.

    Example:
    >>> keras_trainer_with("_maybe_symbolic_build").__name__
    'TensorFlowTrainer'
    """
    return next((base for base in keras.Model.__mro__ if name in vars(base)), None)


def model_strategy(model: keras.Model):
    """The `tf.distribute` strategy `model` was built under, None without one.

    Example:
    >>> model_strategy(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])) is None
    True
    """
    return getattr(model, "_distribute_strategy", None)


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
        strategy = model_strategy(self)
        if iterator is not None and strategy is not None and in_multi_worker_mode(strategy):
            for _, _, distributed_iterator in iterator:
                data_batch = tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(distributed_iterator))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def multi_worker_logs(self, logs: dict) -> dict:
        """`logs` of a step as Keras' trainer can average them over the workers' replicas."""
        strategy = model_strategy(self)
        if strategy is None or not in_multi_worker_mode(strategy):
            return logs
        return tree.map_structure(_with_replica_axis, logs)


def _with_replica_axis(value):
    value = tf.convert_to_tensor(value)
    return tf.reshape(value, (1,)) if value.shape.rank == 0 else value
