"""Mining at scale: `python benchmarks/bench_mining.py [--sizes 10000,100000,1000000] [--pool 1000]`.

1. One descriptor-cache refresh (`CacheRefresh.refresh`, over a frozen-feature store) against
   the database size, the paper's full mining vs a mining pool (`mining_pool=`): seconds,
   cache bytes and the peak memory the refresh adds (anonymous resident memory, sampled;
   the store's mapped pages are the page cache's), each in its own process. The store holds
   synthetic trunk features `(4, 4, 64)` float16 per image and the head is a 1×1 convolution
   + NetVLAD K=64 (4096-D descriptors, 8-bit cache), so the refresh costs what a real one does
   per image after the frozen layers. 2000 queries; the refresh plans for 1000 of them.
2. Tuples/s of `train` on the bundled Nordland images (a small convolutional backbone at
   64×128, frozen features, 4 tuples a step) on one device vs `MirroredStrategy` over two
   logical CPU devices, each in its own process.

3. `train` with a mining pool on the bundled Nordland images with VGG16 (random weights,
   conv1–conv4 frozen, 64×128, NetVLAD K=16): the frozen layers' output kept for each
   refresh's images (`PoolFeatureStore`) vs recomputed from the images at every step; whole
   run seconds, tuples/s of the steps and the most disk the store held.

Prints the CPU's int8/bf16 capability beside the figures and the ratios against the full
mining (1), the single device (2) and the run without a store (3) of the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FEATURE_SHAPE = (4, 4, 64)
NUM_CLUSTERS = 64
NUM_QUERIES = 2000
REFRESH_EVERY = 1000


def small_model():
    """A backbone with a frozen stride-4 convolution and a trainable 1×1 one, NetVLAD K=64."""
    import keras

    from netvlad_tf import NetVLAD, PlaceRecognitionModel
    from netvlad_tf.backbones.freezing import freeze_before

    keras.utils.set_random_seed(0)
    images = keras.Input((None, None, 3))
    features = keras.layers.Rescaling(1 / 255)(images)
    features = keras.layers.Conv2D(FEATURE_SHAPE[-1], 4, strides=4, activation="relu", name="trunk")(features)
    features = keras.layers.Conv2D(FEATURE_SHAPE[-1], 1, name="head_conv")(features)
    backbone = keras.Model(images, features, name="small")
    freeze_before(backbone, "head_conv", "a layer of the benchmark backbone")
    return PlaceRecognitionModel(backbone, NetVLAD(num_clusters=NUM_CLUSTERS))


def anonymous_rss_bytes() -> int:
    """Resident memory the process allocated itself (not the store's mapped file pages)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """The highest `anonymous_rss_bytes` while the `with` block runs, sampled every 5 ms."""

    def __enter__(self):
        self.peak = anonymous_rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, anonymous_rss_bytes())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous_rss_bytes())


def measure_refresh(num_database: int, pool: int | None) -> dict:
    import numpy as np

    from netvlad_tf.data import GeoDataset
    from netvlad_tf.training import CacheRefresh, FrozenFeatureStore
    from netvlad_tf.training.mining import HardNegativeMiner

    rng = np.random.default_rng(0)
    # A street with an image every 4 m (5 potential positives within 10 m); queries along it.
    database_utm = np.stack([4.0 * np.arange(num_database), np.zeros(num_database)], axis=1)
    query_utm = np.stack([rng.uniform(0, 4.0 * num_database, NUM_QUERIES), np.zeros(NUM_QUERIES)], axis=1)
    dataset = GeoDataset("street", [f"d{i}.jpg" for i in range(num_database)], database_utm,
                         [f"q{i}.jpg" for i in range(NUM_QUERIES)], query_utm)
    with tempfile.TemporaryDirectory() as folder:
        for part, count in (("database", num_database), ("queries", NUM_QUERIES)):
            array = np.lib.format.open_memmap(Path(folder) / f"{part}.npy", mode="w+", dtype="float16",
                                              shape=(count, *FEATURE_SHAPE))
            for start in range(0, count, 10_000):
                stop = min(start + 10_000, count)
                array[start:stop] = rng.uniform(0, 1, (stop - start, *FEATURE_SHAPE))
            array.flush()
            del array
        (Path(folder) / "metadata.json").write_text("{}")
        store = FrozenFeatureStore(folder)
        model = small_model()
        miner = HardNegativeMiner(dataset, num_sampled_negatives=1000, mining_pool=pool, seed=0)
        refresh = CacheRefresh(miner, store, refresh_every=REFRESH_EVERY, verbose=False)
        refresh.set_model(model)
        refresh._descriptors("queries", np.arange(8))  # traces the head once, outside the timing
        before = anonymous_rss_bytes()
        with PeakMemory() as memory:
            start = time.perf_counter()
            refresh.refresh()
            seconds = time.perf_counter() - start
        added = max(0, memory.peak - before)
        cache_bytes = (len(miner.database_cache) * miner.database_cache.bytes_per_vector
                       + len(miner.query_cache) * miner.query_cache.bytes_per_vector)
        return {"seconds": seconds, "images": miner.plan.num_images, "cache_bytes": cache_bytes,
                "added_peak_rss": added}


def measure_training(replicas: int, steps: int) -> dict:
    import tensorflow as tf

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras

    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.initialization.clustering import initialize_clusters
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.training import train

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.starts = []

        def on_train_batch_begin(self, batch, logs=None):
            self.starts.append(time.perf_counter())

    dataset = read_csv_dataset(nordland_csv("train"))
    model = small_model()
    initialize_clusters(model, dataset.database_paths, num_images=50, image_size=(64, 128), num_descriptors=2000)
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)]) if replicas > 1 else None)
    times = StepTimes()
    with tempfile.TemporaryDirectory() as run_dir:
        train(model, dataset, (64, 128), run_dir, epochs=1, steps_per_epoch=steps, batch_size=4, num_negatives=5,
              num_sampled_negatives=100, refresh_every=10_000, verbose=0, strategy=strategy,
              extra_callbacks=[times])
    # From the third step on: the first ones trace the step function.
    seconds = times.starts[-1] - times.starts[2]
    return {"tuples_per_s": 4 * (len(times.starts) - 3) / seconds}


def measure_pool_store(stored: bool, steps: int, pool: int) -> dict:
    import keras
    import numpy as np

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.initialization.clustering import initialize_clusters
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.training import train
    from netvlad_tf.training.train import POOL_FEATURES_DIR

    class StepTimesAndDisk(keras.callbacks.Callback):
        def __init__(self, store_dir: Path):
            super().__init__()
            self.store_dir = store_dir
            self.starts = []
            self.most_bytes = 0

        def on_train_batch_begin(self, batch, logs=None):
            self.starts.append(time.perf_counter())
            if self.store_dir.exists():
                held = sum(path.stat().st_size for path in self.store_dir.rglob("*.npy"))
                self.most_bytes = max(self.most_bytes, held)

    keras.utils.set_random_seed(0)
    dataset = read_csv_dataset(nordland_csv("train"))
    model = build_netvlad_model(weights=None, num_clusters=16)
    initialize_clusters(model, dataset.database_paths, num_images=50, image_size=(64, 128), num_descriptors=2000)
    with tempfile.TemporaryDirectory() as run_dir:
        probe = StepTimesAndDisk(Path(run_dir) / POOL_FEATURES_DIR)
        began = time.perf_counter()
        train(model, dataset, (64, 128), run_dir, epochs=1, steps_per_epoch=steps, batch_size=4, num_negatives=5,
              num_sampled_negatives=50, refresh_every=40, mining_pool=pool, frozen_features=stored, verbose=0,
              extra_callbacks=[probe])
        seconds = time.perf_counter() - began
    steps_seconds = probe.starts[-1] - probe.starts[2]  # from the third step: the first ones trace
    trunk_output = model.frozen_split().trunk(np.zeros((1, 64, 128, 3), np.float32))
    images = dataset.num_database + dataset.num_queries
    return {"seconds": seconds, "tuples_per_s": 4 * (len(probe.starts) - 3) / steps_seconds,
            "store_bytes": probe.most_bytes, "images": images,
            "full_store_bytes": images * int(np.prod(trunk_output.shape[1:])) * 2}  # float16


def child(*arguments) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"{' '.join(arguments)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="database sizes, comma-separated")
    parser.add_argument("--full_up_to", type=int, default=200_000,
                        help="measure full mining only up to this size (1 M × 4096-D float32 is 16 GB)")
    parser.add_argument("--pool", type=int, default=1000, help="mining pool size")
    parser.add_argument("--steps", type=int, default=30, help="training steps per configuration")
    parser.add_argument("--sections", default="1,2,3", help="the sections to run, comma-separated")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *values = args.child
        if kind == "refresh":
            result = measure_refresh(int(values[0]), None if values[1] == "full" else int(values[1]))
        elif kind == "pool_store":
            result = measure_pool_store(values[0] == "stored", int(values[1]), int(values[2]))
        else:
            result = measure_training(int(values[0]), int(values[1]))
        print("\n" + json.dumps(result))  # on a line of its own, after any progress bar
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from cpu_info import int8_capability

    capability = int8_capability()
    print(f"CPU: {capability}")
    sections = set(args.sections.split(","))
    if "1" in sections:
        refresh_section(args)
    if "2" in sections:
        training_section(args, capability)
    if "3" in sections:
        pool_store_section(args, capability)


def refresh_section(args) -> None:
    print(f"\n1. One cache refresh over a frozen-feature store, 4096-D 8-bit cache, {NUM_QUERIES} queries")
    print(f"{'database':>9} {'mining':>10} {'images':>8} {'seconds':>8} {'cache MB':>9} {'+peak MB':>9} "
          f"{'time vs full':>12} {'cache vs full':>13}")
    sizes = [int(size) for size in args.sizes.split(",")]
    pooled = {}
    for size in sizes:
        full = child("refresh", str(size), "full") if size <= args.full_up_to else None
        pool = child("refresh", str(size), str(args.pool))
        pooled[size] = pool
        if full is None:
            print(f"{size:>9} {'full':>10} {size + NUM_QUERIES:>8}  (not run: above --full_up_to)")
        for name, result in (("full", full), (f"pool {args.pool}", pool)):
            if result is None:
                continue
            versus = (f"{result['seconds'] / full['seconds']:>12.3f} {result['cache_bytes'] / full['cache_bytes']:>13.3f}"
                      if full else "")
            print(f"{size:>9} {name:>10} {result['images']:>8} {result['seconds']:>8.2f} "
                  f"{result['cache_bytes'] / 1e6:>9.1f} {result['added_peak_rss'] / 1e6:>9.1f} {versus}")
    smallest, largest = pooled[sizes[0]], pooled[sizes[-1]]
    print(f"with the pool, database ×{sizes[-1] // sizes[0]}: refresh time ×{largest['seconds'] / smallest['seconds']:.2f}, "
          f"cache ×{largest['cache_bytes'] / smallest['cache_bytes']:.2f}, "
          f"added peak memory ×{largest['added_peak_rss'] / max(smallest['added_peak_rss'], 1):.2f}")


def training_section(args, capability: str) -> None:
    print(f"\n2. train on the bundled Nordland images, {args.steps} steps of 4 tuples at 64×128 (CPU: {capability})")
    one = child("train", "1", str(args.steps))
    two = child("train", "2", str(args.steps))
    print(f"one device:                 {one['tuples_per_s']:.1f} tuples/s")
    print(f"Mirrored, 2 logical CPUs:   {two['tuples_per_s']:.1f} tuples/s "
          f"(×{two['tuples_per_s'] / one['tuples_per_s']:.2f}; the two share this machine's cores)")


def pool_store_section(args, capability: str) -> None:
    pool = 100
    print(f"\n3. train with a mining pool of {pool}, VGG16 conv1–conv4 frozen, {args.steps} steps of 4 tuples at 64×128, "
          f"a refresh every 40 queries (CPU: {capability})")
    images = child("pool_store", "images", str(args.steps), str(pool))
    stored = child("pool_store", "stored", str(args.steps), str(pool))
    print(f"recomputed from the images:  {images['seconds']:6.1f} s in all, {images['tuples_per_s']:.2f} tuples/s")
    print(f"pool store:                  {stored['seconds']:6.1f} s in all, {stored['tuples_per_s']:.2f} tuples/s "
          f"(×{stored['tuples_per_s'] / images['tuples_per_s']:.2f} the steps, ×{stored['seconds'] / images['seconds']:.2f} "
          f"the run);\n  the store held at most {stored['store_bytes'] / 1e6:.1f} MB, a store of all "
          f"{stored['images']} training images would hold {stored['full_store_bytes'] / 1e6:.1f} MB "
          f"(×{stored['store_bytes'] / stored['full_store_bytes']:.2f})")


if __name__ == "__main__":
    main()
