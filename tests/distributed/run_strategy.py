"""Run in its own process: `model.fit` of a tiny model on fixed tuples under a strategy; save weights.

`python -m tests.distributed.run_strategy MODE OUT.npz` with MODE `single` (one device),
`mirrored` (two logical CPUs in this process) or `worker` (MultiWorkerMirroredStrategy from
TF_CONFIG). `mirrored_mining` runs `model.fit` on mined tuples of bundled images with the
cache-refresh callback under MirroredStrategy and saves its loss.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from netvlad_tf import NetVLAD, PlaceRecognitionModel, RankingLoss
from netvlad_tf.data import GeoDataset, read_csv_dataset
from netvlad_tf.sample_data import nordland_csv
from netvlad_tf.training import CacheRefresh, multi_worker_strategy, tuple_dataset
from netvlad_tf.training.mining import HardNegativeMiner


def tiny_model():
    keras.utils.set_random_seed(0)
    images = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(8, 3, strides=4, name="conv")(keras.layers.Rescaling(1 / 255)(images))
    backbone = keras.Model(images, features, name="tiny")
    return PlaceRecognitionModel(backbone, NetVLAD(num_clusters=3, name="netvlad"))


def fixed_batches(steps=3, batch=4, negatives=3):
    rng = np.random.default_rng(42)
    for _ in range(steps):
        yield {
            "query": rng.uniform(0, 255, (batch, 16, 16, 3)).astype("float32"),
            "positives": rng.uniform(0, 255, (batch, 1, 16, 16, 3)).astype("float32"),
            "negatives": rng.uniform(0, 255, (batch, negatives, 16, 16, 3)).astype("float32"),
            "positive_mask": np.ones((batch, 1), "float32"),
            # Uneven: the first replica's tuples have one real negative, the second's all of
            # them, so a loss normalised per replica instead of per global batch differs.
            "negative_mask": np.where(np.arange(batch)[:, None] < batch // 2,
                                      np.arange(negatives) < 1, True).astype("float32"),
        }


class BatchLosses(keras.callbacks.Callback):
    """The `loss` log after each step (the epoch's running mean, as `fit` reports it)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def main(mode: str, output: str) -> None:
    if mode in ("mirrored", "mirrored_mining"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = {
        "single": lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
        "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "mirrored_mining": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "worker": multi_worker_strategy,
    }[mode]()
    with strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9),
                      loss=RankingLoss(margin=10.0, normalization="all"))
    if mode == "mirrored_mining":
        # Keras reads a batch before the callbacks start under a strategy: the first tuples
        # must be mined from a cache filled before fit.
        full = read_csv_dataset(nordland_csv("train"))
        stretch = GeoDataset("stretch", full.database_paths[:30], full.database_utm[:30],
                             full.query_paths[:30], full.query_utm[:30])
        miner = HardNegativeMiner(stretch, num_negatives=2, num_sampled_negatives=10, cache_encoding="float32")
        refresh = CacheRefresh(miner, (32, 64), refresh_every=4, verbose=False)
        refresh.set_model(model)
        refresh.refresh()
        history = model.fit(tuple_dataset(miner, (32, 64), batch_size=2), epochs=1, steps_per_epoch=3,
                            callbacks=[refresh], verbose=0)
        np.savez(output, losses=np.array(history.history["loss"]), replicas=strategy.num_replicas_in_sync,
                 refreshes=refresh.refreshes)
        print("done", mode, history.history["loss"])
        return
    batches = list(fixed_batches())
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature={k: tf.TensorSpec((None, *v.shape[1:]), tf.float32) for k, v in batches[0].items()})
    losses = BatchLosses()
    model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=[losses])
    initial = tiny_model()
    np.savez(output, losses=np.array(losses.losses), replicas=strategy.num_replicas_in_sync,
             **{f"initial{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(initial.trainable_weights)},
             **{f"w{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.trainable_weights)})
    print("done", mode, losses.losses)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
