"""Training throughput and the descriptor cache: `python benchmarks/bench_training.py`.

1. Tuples/s of the paper's training step (1 query, 1 positive, 10 negatives at 240×320,
   VGG16 + NetVLAD K=64, conv5 upwards trainable), float32 vs mixed bfloat16, each in its own
   process (the precision policy is global), with the loss each computes on the same batch.
2. The descriptor cache: refresh time and bytes per image, float32 vs the 8-bit cache, and
   how the mined tuples differ between them on the bundled Nordland images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

TUPLE_NEGATIVES = 10
IMAGE_SIZE = (240, 320)


def measure_training(policy: str, steps: int) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    from netvlad_tf import RankingLoss, build_netvlad_model

    model = build_netvlad_model(weights=None, num_clusters=64)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=1e-3),
                  loss=RankingLoss())
    rng = np.random.default_rng(0)
    height, width = IMAGE_SIZE
    batch = {
        "query": rng.uniform(0, 255, (1, height, width, 3)).astype("float32"),
        "positives": rng.uniform(0, 255, (1, 1, height, width, 3)).astype("float32"),
        "negatives": rng.uniform(0, 255, (1, TUPLE_NEGATIVES, height, width, 3)).astype("float32"),
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


def measure_cache() -> dict:
    import numpy as np

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.mining import HardNegativeMiner
    from netvlad_tf.sample_data import nordland_csv

    dataset = read_csv_dataset(nordland_csv("train"))
    model = build_netvlad_model(weights=None, num_clusters=64)
    results = {}
    miners = {}
    for precision in ("float32", "int8"):
        miner = HardNegativeMiner(dataset, cache_precision=precision, num_sampled_negatives=1000, seed=0)
        start = time.perf_counter()
        miner.refresh(model, (64, 128), batch_size=16, verbose=False)
        results[precision] = {"refresh_s": time.perf_counter() - start,
                              "bytes_per_image": miner.database_cache.bytes_per_vector}
        miners[precision] = miner
    same_positive, negative_overlap, both_skip, queries = 0, [], 0, miners["int8"].training_queries
    for query in queries:
        exact, compact = miners["float32"].mine(int(query)), miners["int8"].mine(int(query))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "cache":
        print(json.dumps(measure_cache()))
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

    print(f"Training step: 1 query + 1 positive + {TUPLE_NEGATIVES} negatives at {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, VGG16 + NetVLAD K=64")
    base = child("float32")
    for policy, result in (("float32", base), ("mixed_bfloat16", child("mixed_bfloat16"))):
        print(f"  {policy:<15} {result['tuples_per_s']:.3f} tuples/s ({result['tuples_per_s'] / base['tuples_per_s']:.2f}x), "
              f"loss on the fixed tuple {result['loss']:.5f}")
    cache = child("cache")
    print("Descriptor cache on the bundled Nordland training stretch (1558 images, 64×128, 32 768-D):")
    for precision in ("float32", "int8"):
        row = cache[precision]
        print(f"  {precision:<8} refresh {row['refresh_s']:.1f} s, {row['bytes_per_image']} bytes/image "
              f"({row['bytes_per_image'] / cache['float32']['bytes_per_image']:.2f}x)")
    agreement = cache["agreement"]
    print(f"  int8 vs float32 mining over {agreement['queries']} queries: same best positive "
          f"{100 * agreement['same_best_positive']:.1f}%, hard-negative overlap "
          f"{100 * (agreement['mean_negative_overlap'] or 0):.1f}%, skipped by both {agreement['skipped_by_both']}")


if __name__ == "__main__":
    main()
