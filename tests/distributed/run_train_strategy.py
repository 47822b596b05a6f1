"""Run in its own process: `train()` on one device and under MirroredStrategy over two logical
CPUs, from the same initial weights on the same bundled images; save the weights of the models
passed to `train` (the strategy's run copies its weights back into it).

`python -m tests.distributed.run_train_strategy OUT.npz RUN_ROOT`
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf


def main(output: str, run_root: Path) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from netvlad_tf.data import GeoDataset, read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.training import train
    from tests.distributed.run_strategy import tiny_model

    full = read_csv_dataset(nordland_csv("train"))
    stretch = GeoDataset("stretch", full.database_paths[:30], full.database_utm[:30],
                         full.query_paths[:30], full.query_utm[:30])
    results = {}
    for name, strategy in (("single", None), ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        model = tiny_model()
        results["initial"] = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        run = train(model, stretch, (32, 64), run_root / name, epochs=1, steps_per_epoch=3, batch_size=4,
                    learning_rate=0.5, num_negatives=2, num_sampled_negatives=10, refresh_every=1000, margin=0.3,
                    normalization="violating", cache_precision="float32", seed=0, verbose=0, strategy=strategy)
        results[name] = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        results[f"{name}_loss"] = run.history["loss"]
        results[f"{name}_saved"] = (run_root / name / "last.keras").is_file()
    np.savez(output, replicas=2, **{f"{key}{i}": value for key in ("initial", "single", "mirrored")
                                    for i, value in enumerate(results[key])},
             single_loss=results["single_loss"], mirrored_loss=results["mirrored_loss"],
             saved=results["single_saved"] and results["mirrored_saved"])


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
