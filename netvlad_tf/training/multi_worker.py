"""Multi-worker training with `MultiWorkerMirroredStrategy` and a custom loop.

Keras 3's `model.fit` does not run under `MultiWorkerMirroredStrategy` today
(keras-team/keras#20585, #20329), so this loop calls the model's own `train_step` — the step
`fit` uses — through `strategy.run`. Each worker is a separate process started with the
`TF_CONFIG` environment variable describing the cluster, e.g. for two workers on one machine:

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]},
                "task": {"type": "worker", "index": 0}}'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import tensorflow as tf

from netvlad_tf.models.losses import RankingLoss


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy for this process, configured from `TF_CONFIG` (ring all-reduce)."""
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def train_distributed(
    strategy: tf.distribute.Strategy,
    build_model: Callable[[], keras.Model],
    global_batches: Iterable[dict],
    optimizer_factory: Callable[[], keras.optimizers.Optimizer],
    loss: RankingLoss,
) -> tuple[keras.Model, list[float]]:
    """Builds the model in `strategy.scope()` and runs the model's `train_step` on each
    global batch; the strategy splits every batch across the replicas of all workers.

    Args:
        strategy: e.g. `multi_worker_strategy()` or `tf.distribute.MirroredStrategy()`.
        build_model: returns a fresh `PlaceRecognitionModel` (called inside the scope).
        global_batches: tuple batches (dicts from `tuple_dataset`); every worker must see the
            same sequence.
        optimizer_factory: returns the optimizer (called inside the scope).
        loss: the ranking loss.

    Returns:
        The trained model and the loss of each step.
    """
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=optimizer_factory(), loss=loss)
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def distributed_step(batch):
        per_replica = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica["loss"], axis=None)

    losses = []
    for batch in global_batches:
        model.ranking_loss_tracker.reset_state()
        sharded = strategy.experimental_distribute_values_from_function(
            lambda context, batch=batch: _shard(batch, context)
        )
        losses.append(float(distributed_step(sharded)))
    return model, losses


def _shard(batch: dict, context: tf.distribute.InputContext) -> dict:
    replica = context.replica_id_in_sync_group
    replicas = context.num_replicas_in_sync
    size = int(next(iter(batch.values())).shape[0])
    if size % replicas:
        raise ValueError(f"A global batch of {size} tuples does not split over {replicas} replicas.")
    share = size // replicas
    return {key: value[replica * share : (replica + 1) * share] for key, value in batch.items()}
