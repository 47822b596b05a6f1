"""Training throughput and the descriptor cache: `python benchmarks/bench_training.py`.

1. Tuples/s of the paper's training step (1 query, 1 positive, 10 negatives at 240×320,
   VGG16 + NetVLAD K=64, conv5 upwards trainable), each in its own process:
   - the baseline: the same step written in PyTorch the way the PyTorch ports do it (VGG16
     features cut at conv5_3, conv5 trainable, NetVLAD, triplet hinge, SGD) — needs `torch`
     installed, otherwise the ratios are against our own step from images;
   - ours from images, float32 and mixed bfloat16 (the policy is global, hence processes);
   - ours from stored frozen features (conv1–conv4 computed once, see
     `netvlad_tf.training.FrozenFeatureStore`): the step `train` runs by default.
2. The descriptor cache on the bundled Nordland images: refresh time and bytes per image,
   float32 vs the 8-bit cache and how the mined tuples differ between them; the frozen-feature
   store's build time, bytes per image, refresh time over it, and how far its float16
   features move the descriptors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

TUPLE_NEGATIVES = 10
IMAGE_SIZE = (240, 320)


def measure_training(mode: str, steps: int) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(mode if mode.startswith("mixed_") else "float32")
    keras.utils.set_random_seed(0)
    from netvlad_tf import RankingLoss, build_netvlad_model
    from netvlad_tf.models.tuple_batch import FEATURE_KEYS, IMAGE_KEYS

    model = build_netvlad_model(weights=None, num_clusters=64)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=1e-3),
                  loss=RankingLoss())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1 + 1 + TUPLE_NEGATIVES, *IMAGE_SIZE, 3)).astype("float32")
    keys = IMAGE_KEYS
    if mode == "frozen_features":
        images = keras.ops.convert_to_numpy(model.frozen_split().trunk(images))
        keys = FEATURE_KEYS
    batch = {
        keys[0]: images[None, 0],
        keys[1]: images[None, 1:2],
        keys[2]: images[None, 2:],
        "positive_mask": np.ones((1, 1), "float32"),
        "negative_mask": np.ones((1, TUPLE_NEGATIVES), "float32"),
    }
    first_loss = float(model.evaluate(batch, verbose=0))
    model.train_on_batch(batch)  # builds and traces the step
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(batch)
    seconds = time.perf_counter() - start
    return {"tuples_per_s": steps / seconds, "loss": first_loss}


def measure_torch_baseline(steps: int) -> dict:
    """The PyTorch ports' step, written here: one batch of 12 images through VGG16 conv5_3
    (conv5 trainable) and NetVLAD, a triplet hinge per negative, SGD with momentum."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, channels = [], 3
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(convs):
            conv = nn.Conv2d(channels, width, 3, padding=1)
            conv.requires_grad_(block == 4)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    encoder = nn.Sequential(*layers[:-2])  # conv5_3 before its ReLU

    class NetVLADPool(nn.Module):
        def __init__(self, clusters=64, dim=512):
            super().__init__()
            self.assign = nn.Conv2d(dim, clusters, 1)
            self.centroids = nn.Parameter(torch.rand(clusters, dim))

        def forward(self, x):
            x = nn.functional.normalize(x, dim=1)
            soft = self.assign(x).flatten(2).softmax(1)  # (B, K, HW)
            flat = x.flatten(2)  # (B, D, HW)
            vlad = soft @ flat.transpose(1, 2) - soft.sum(2, keepdim=True) * self.centroids
            vlad = nn.functional.normalize(vlad, dim=2).flatten(1)
            return nn.functional.normalize(vlad, dim=1)

    pool = NetVLADPool()
    params = [p for p in (*encoder.parameters(), *pool.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-3)
    images = torch.rand(1 + 1 + TUPLE_NEGATIVES, 3, *IMAGE_SIZE) * 255

    def step():
        optimizer.zero_grad()
        descriptors = pool(encoder(images))
        query, positive, negatives = descriptors[:1], descriptors[1:2], descriptors[2:]
        positive_distance = ((query - positive) ** 2).sum()
        loss = torch.relu(positive_distance + 0.1 - ((query - negatives) ** 2).sum(1)).sum()
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {"tuples_per_s": steps / (time.perf_counter() - start), "threads": torch.get_num_threads()}


def measure_cache() -> dict:
    import numpy as np

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.sample_data import nordland_csv
    from netvlad_tf.training import CacheRefresh
    from netvlad_tf.training.mining import HardNegativeMiner

    dataset = read_csv_dataset(nordland_csv("train"))
    model = build_netvlad_model(weights=None, num_clusters=64)
    results = {}
    miners = {}
    for encoding in ("float32", "sq8"):
        miner = HardNegativeMiner(dataset, cache_encoding=encoding, num_sampled_negatives=1000, seed=0)
        start = time.perf_counter()
        refresh = CacheRefresh(miner, (64, 128), batch_size=16, verbose=False)
        refresh.set_model(model)
        refresh.refresh()
        results[encoding] = {"refresh_s": time.perf_counter() - start,
                              "bytes_per_image": miner.database_cache.bytes_per_vector}
        miners[encoding] = miner
    results["frozen"] = measure_frozen_store(model, dataset, miners["float32"])
    same_positive, negative_overlap, both_skip, queries = 0, [], 0, miners["sq8"].training_queries
    for query in queries:
        exact, compact = miners["float32"].mine(int(query)), miners["sq8"].mine(int(query))
        if exact is None or compact is None:
            both_skip += exact is None and compact is None
            continue
        same_positive += exact.positive == compact.positive
        negative_overlap.append(len(set(exact.negatives) & set(compact.negatives)) / len(exact.negatives))
    results["agreement"] = {
        "queries": int(len(queries)),
        "same_best_positive": same_positive / max(1, len(negative_overlap)),
        "mean_negative_overlap": float(np.mean(negative_overlap)) if negative_overlap else None,
        "skipped_by_both": both_skip,
    }
    return results


def measure_frozen_store(model, dataset, exact_miner) -> dict:
    import tempfile

    import numpy as np

    from netvlad_tf.training import CacheRefresh, FrozenFeatureStore
    from netvlad_tf.training.mining import HardNegativeMiner

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in ("float32", "float16"):
            start = time.perf_counter()
            store = FrozenFeatureStore.build(model, dataset, (64, 128), f"{scratch}/{precision}", precision,
                                             batch_size=16, verbose=False)
            build_s = time.perf_counter() - start
            miner = HardNegativeMiner(dataset, cache_encoding="float32", num_sampled_negatives=1000, seed=0)
            start = time.perf_counter()
            refresh = CacheRefresh(miner, store, verbose=False)
            refresh.set_model(model)
            refresh.refresh()
            refresh_s = time.perf_counter() - start
            exact = exact_miner.database_cache.get(np.arange(dataset.num_database))
            stored = miner.database_cache.get(np.arange(dataset.num_database))
            cosine = (exact * stored).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(stored, axis=1)
            results[precision] = {"build_s": build_s, "refresh_s": refresh_s,
                                  "bytes_per_image": store.bytes_per_image,
                                  "max_abs_diff": float(np.abs(exact - stored).max()),
                                  "min_cosine": float(cosine.min())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "cache":
        print(json.dumps(measure_cache()))
        return
    if args.child == "torch":
        print(json.dumps(measure_torch_baseline(args.steps)))
        return
    if args.child:
        print(json.dumps(measure_training(args.child, args.steps)))
        return

    def child(kind):
        run = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", kind],
                             capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(run.stderr[-3000:])
        return json.loads(run.stdout.strip().splitlines()[-1])

    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}")
    print(f"Training step: 1 query + 1 positive + {TUPLE_NEGATIVES} negatives at {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, VGG16 + NetVLAD K=64")
    try:
        import torch  # noqa: F401

        base, base_name = child("torch"), "the PyTorch ports' step"
        print(f"  {'PyTorch baseline':<32} {base['tuples_per_s']:.3f} tuples/s (1.00x), {base['threads']} threads")
    except ImportError:
        base, base_name = None, "our step from images (torch is not installed)"
    rows = {"from images, float32": child("float32"),
            "from images, mixed bfloat16": child("mixed_bfloat16"),
            "from stored frozen features": child("frozen_features")}
    base = base or rows["from images, float32"]
    for name, result in rows.items():
        print(f"  {name:<32} {result['tuples_per_s']:.3f} tuples/s ({result['tuples_per_s'] / base['tuples_per_s']:.2f}x), "
              f"loss on the fixed tuple {result['loss']:.5f}")
    print(f"  (ratios against {base_name})")
    cache = child("cache")
    print("Descriptor cache on the bundled Nordland training stretch (1558 images, 64×128, 32 768-D):")
    for encoding in ("float32", "sq8"):
        row = cache[encoding]
        print(f"  {encoding:<8} refresh {row['refresh_s']:.1f} s, {row['bytes_per_image']} bytes/image "
              f"({row['bytes_per_image'] / cache['float32']['bytes_per_image']:.2f}x)")
    for precision, row in cache["frozen"].items():
        print(f"  frozen-feature store, {precision}: built in {row['build_s']:.1f} s, "
              f"{row['bytes_per_image']} bytes/image; refresh over it {row['refresh_s']:.1f} s "
              f"({row['refresh_s'] / cache['float32']['refresh_s']:.2f}x); descriptors vs the full model: "
              f"max |diff| {row['max_abs_diff']:.1e}, min cosine {row['min_cosine']:.6f}")
    agreement = cache["agreement"]
    print(f"  int8 vs float32 mining over {agreement['queries']} queries: same best positive "
          f"{100 * agreement['same_best_positive']:.1f}%, hard-negative overlap "
          f"{100 * (agreement['mean_negative_overlap'] or 0):.1f}%, skipped by both {agreement['skipped_by_both']}")


if __name__ == "__main__":
    main()
