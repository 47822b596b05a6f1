"""Search backends at scale: `python benchmarks/bench_search.py [--sizes 100000 1000000]`.

For each database size and dimension: build time, queries/s, bytes per vector and recall
against exact search (1-recall@10: the exact nearest neighbour is among the top 10), for
faiss Flat (exact, the baseline of the ratios), IVF-PQ and HNSW at their package defaults.
The vectors are unit-normalised points around 1000 cluster centres, like real descriptors.
Sizes that do not fit in memory next to each other are skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from netvlad_tf.retrieval import create_index

QUERIES = 1000


def descriptors(rng, count, dim, centres):
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 50_000):
        stop = min(count, start + 50_000)
        block = centres[rng.integers(0, len(centres), stop - start)] + 0.5 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def bytes_per_vector(index, count) -> float:
    with tempfile.TemporaryDirectory() as folder:
        index.save_into(folder)
        return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--memory_gb", type=float, default=20.0, help="Skip runs needing more.")
    parser.add_argument("--backends", nargs="+", default=["ivfpq", "hnsw"], choices=["ivfpq", "ivfsq8", "hnsw"],
                        help="Approximate backends to compare with exact search (always run first).")
    args = parser.parse_args()
    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}")
    print(f"{'size':>9} {'dim':>5} {'backend':<6} {'build s':>8} {'queries/s':>10} {'bytes/vec':>10} {'recall':>7} "
          f"{'qps ratio':>10} {'size ratio':>10}")
    for dim in args.dims:
        for size in args.sizes:
            needed_gb = size * dim * 4 * 2.2 / 1e9  # raw vectors + the flat index + HNSW copy
            if needed_gb > args.memory_gb:
                print(f"{size:>9} {dim:>5} skipped: needs about {needed_gb:.0f} GB (> --memory_gb {args.memory_gb:.0f})")
                continue
            rng = np.random.default_rng(0)
            centres = rng.standard_normal((1000, dim), dtype=np.float32)
            database = descriptors(rng, size, dim, centres)
            queries = descriptors(rng, QUERIES, dim, centres)
            flat = None
            for kind in ("flat", *args.backends):
                index = create_index(kind, dim)
                start = time.perf_counter()
                index.add(database)
                build = time.perf_counter() - start
                start = time.perf_counter()
                _, found = index.search(queries, 10)
                qps = QUERIES / (time.perf_counter() - start)
                per_vector = bytes_per_vector(index, size)
                del index
                if flat is None:
                    flat = (qps, per_vector, found[:, 0])
                recall = np.mean([t in row for t, row in zip(flat[2], found)])
                # Each row as soon as it is measured: large builds take minutes.
                print(f"{size:>9} {dim:>5} {kind:<6} {build:8.1f} {qps:10.0f} {per_vector:10.0f} {recall:7.3f} "
                      f"{qps / flat[0]:9.1f}x {per_vector / flat[1]:9.3f}x", flush=True)


if __name__ == "__main__":
    main()
