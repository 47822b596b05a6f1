"""Run in its own process: `train()` of the tiny model on 30 bundled images under one strategy;
save the weights of the model passed to `train` (a strategy's run copies its weights back).

`python -m tests.distributed.run_train_strategy MODE OUT.npz RUN_DIR` with MODE `single` (the
default device), `mirrored` (two logical CPUs) or `worker` (MultiWorkerMirroredStrategy from
TF_CONFIG; every worker is given the same RUN_DIR, as on a shared file system).
`worker_resume`: as `worker`, but two epochs, killed after the first and resumed by a second
`train` call; it also saves which backup folders existed at the kill.
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf


def main(mode: str, output: str, run_dir: Path) -> None:
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from netvlad_tf.data import GeoDataset, read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.training import multi_worker_strategy, train
    from tests.distributed.run_strategy import tiny_model

    strategy = {"single": lambda: None, "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                "worker": multi_worker_strategy, "worker_resume": multi_worker_strategy}[mode]()
    full = read_csv_dataset(nordland_csv("train"))
    stretch = GeoDataset("stretch", full.database_paths[:30], full.database_utm[:30],
                         full.query_paths[:30], full.query_utm[:30])
    model = tiny_model()
    initial = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    settings = dict(steps_per_epoch=3, batch_size=4, learning_rate=0.5, num_negatives=2, num_sampled_negatives=10,
                    refresh_every=1000, margin=0.3, normalization="violating", cache_encoding="float32", seed=0,
                    verbose=0, strategy=strategy)
    if mode == "worker_resume":
        class KillAfterFirstEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    raise KeyboardInterrupt

        try:
            train(model, stretch, (32, 64), run_dir, epochs=2, extra_callbacks=[KillAfterFirstEpoch()], **settings)
        except KeyboardInterrupt:
            pass
        backups = sorted(str(path.relative_to(run_dir)) for path in run_dir.rglob("backup"))

        class EpochsRun(keras.callbacks.Callback):
            epochs = []

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs.append(epoch)

        resumed = tiny_model()
        run = train(resumed, stretch, (32, 64), run_dir, epochs=2, extra_callbacks=[EpochsRun()], **settings)
        np.savez(output, backups=np.array(backups), chief=run.chief, loss=run.history["loss"],
                 epochs_run=np.array(EpochsRun.epochs),
                 **{f"trained{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(resumed.trainable_weights)})
        return
    if mode == "worker" and not strategy.extended.should_checkpoint:
        # A worker whose own initial weights differ: training must start from the chief's.
        model.set_weights([w + 0.1 for w in model.get_weights()])
    run = train(model, stretch, (32, 64), run_dir, epochs=1, **settings)
    trained = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    np.savez(output, replicas=1 if strategy is None else strategy.num_replicas_in_sync, chief=run.chief,
             loss=run.history["loss"], **{f"initial{i}": w for i, w in enumerate(initial)},
             **{f"trained{i}": w for i, w in enumerate(trained)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
