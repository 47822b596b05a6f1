"""Training on several machines: `MultiWorkerMirroredStrategy` from the `TF_CONFIG` variable.

Each worker is a separate process started with `TF_CONFIG` describing the cluster and its own
place in it, e.g. for two workers on one machine:

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]},
                "task": {"type": "worker", "index": 0}}'

Every worker then calls `train(..., strategy=multi_worker_strategy())` (or
`netvlad-tf train --strategy=multi_worker`) with the same arguments.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

TF_CONFIG = "TF_CONFIG"


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy for this process, its cluster read from `TF_CONFIG` (ring all-reduce).

    Returns:
        A `MultiWorkerMirroredStrategy`; it waits until every worker of the cluster has started.

    Raises:
        ValueError: `TF_CONFIG` is unset, not JSON, or names no worker cluster and task.
    """
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise ValueError(f"Training on several machines reads the cluster from the {TF_CONFIG} environment "
                         'variable, which is not set (e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                         '"task": {"type": "worker", "index": 0}}).')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{TF_CONFIG} is not JSON ({error}): {text!r}") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError(f"{TF_CONFIG} must hold a \"cluster\" and a \"task\"; got {text!r}.")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def chief_weights(weights: list[np.ndarray], strategy: tf.distribute.Strategy) -> list[np.ndarray]:
    """The chief's `weights` on every worker: one all-reduce in which only the first replica
    (the chief's) contributes its values.

    Each worker builds its model on its own (a k-means initialisation, a preset); their
    weights may differ in the last bits, and a mirrored variable assigned on each worker keeps
    each worker's own value. Training starts from the chief's.

    Args:
        weights: this worker's weights (`model.get_weights()`).
        strategy: the multi-worker strategy (every worker calls this at the same point).

    Returns:
        The chief's weights, in the same order, shapes and dtypes.
    """

    def replica_values(values):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        return [context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, value, tf.zeros_like(value)))
                for value in values]

    summed = tf.function(lambda values: strategy.run(replica_values, args=(values,)))
    values = [tf.constant(weight) for weight in weights]
    return [np.asarray(strategy.experimental_local_results(value)[0]) for value in summed(values)]
