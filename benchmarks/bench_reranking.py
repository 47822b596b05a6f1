"""Patch-NetVLAD re-ranking cost: `python benchmarks/bench_reranking.py [--candidates 10,50,100] [--queries 5]`.

Per query, for each of the authors' settings (performance, speed, storage) and number of
candidates, on VGG16's patch grid at 640×480 (conv5_3 30×40 cells):

1. re-ranking with stored patch features: matching (mutual nearest neighbours in one matrix
   product per 16 candidates) and the spatial check (RANSAC / rapid spatial scoring), with the
   candidates' features read from a patch shard on disk as `StoredPatches` reads them; the
   candidates hold the query's patches shifted and noised, so matches are as plentiful as on real
   revisits and RANSAC has real work; the global search alone is the baseline each row is
   measured against;
2. the disk each setting's stored features take per image (float16);
3. extracting the query's own patch features (backbone + patch head) with a random VGG16 + NetVLAD
   K=64 with whitening, the cost paid once per query whatever the candidates.

Peak memory is Python's (tracemalloc) during the re-ranking of one query. Every figure is
printed beside the CPU's int8/bfloat16 capabilities.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

GRID = (30, 40)  # VGG16 conv5_3 at 480×640
IMAGE_SIZE = (480, 640)


def related_patches(rng, query: np.ndarray, rows: int, columns: int, count: int) -> list[np.ndarray]:
    """Candidates holding the query's patch grid shifted by a few cells and noised."""
    grid = query.reshape(rows, columns, -1)
    candidates = []
    for number in range(count):
        moved = np.roll(grid, shift=(number % 3, number % 5), axis=(0, 1)).reshape(len(query), -1)
        noisy = moved + 0.6 * rng.normal(size=moved.shape) / np.sqrt(moved.shape[1])
        candidates.append((noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32))
    return candidates


def stored_candidates(settings, reranker, count: int, folder: Path, rng):
    """A query's patch features and `count` candidates' written to (and read back from) a patch shard."""
    from netvlad_tf.database.patch_shards import StoredPatches, write_patch_shard
    from netvlad_tf.reranking.patch_descriptors import PatchFeatures

    query, candidates = [], [[] for _ in range(count)]
    for number in range(len(settings.patch_sizes)):
        _, grid = reranker.describer.keypoints(IMAGE_SIZE, number)
        rows, columns = grid[:, 1].max() + 1, grid[:, 0].max() + 1
        patches = rng.normal(size=(rows * columns, settings.dims))
        patches = (patches / np.linalg.norm(patches, axis=1, keepdims=True)).astype(np.float32)
        query.append(patches)
        for candidate, related in zip(candidates, related_patches(rng, patches, rows, columns, count)):
            candidate.append(related)
    write_patch_shard(folder, 0, [PatchFeatures(IMAGE_SIZE, arrays) for arrays in candidates], "float16")
    return PatchFeatures(IMAGE_SIZE, query), StoredPatches(folder, range(count), [0])


def timed_reranking(reranker, query, store, count: int, repeats: int) -> tuple[float, float]:
    """Median seconds and peak MB of re-ranking one query's `count` stored candidates."""
    seconds = []
    for _ in range(repeats):
        tracemalloc.start()
        start = time.perf_counter()
        reranker.rerank_stored(query, store, list(range(count)))
        seconds.append(time.perf_counter() - start)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return float(np.median(seconds)), peak / 1e6


def global_search_seconds(count: int, dims: int = 4096, database: int = 10_000) -> float:
    """The baseline: one query's global search of a 10 000-image flat index for `count` neighbours."""
    from netvlad_tf.retrieval import create_index

    rng = np.random.default_rng(0)
    index = create_index("flat", dims)
    index.add(rng.normal(size=(database, dims)).astype(np.float32))
    query = rng.normal(size=(1, dims)).astype(np.float32)
    index.search(query, count)
    start = time.perf_counter()
    for _ in range(5):
        index.search(query, count)
    return (time.perf_counter() - start) / 5


def query_extraction_seconds(settings_name: str) -> float:
    """Backbone + patch head for one 640×480 query (random VGG16 + NetVLAD K=64, 4096-D whitening)."""
    from netvlad_tf import PlaceRecognitionModel, build_netvlad_model
    from netvlad_tf.models.model import WHITENING_LAYER
    from netvlad_tf.reranking.patch_descriptors import PatchDescriber

    base = build_netvlad_model(weights=None, num_clusters=64)
    model = PlaceRecognitionModel(base.backbone, base.pooling, whitening_dim=4096)
    rng = np.random.default_rng(0)
    model.get_layer(WHITENING_LAYER).set_weights([rng.normal(size=(32768, 4096)).astype(np.float32) / 181,
                                                   np.zeros(4096, np.float32)])
    describer = PatchDescriber(model, settings_name)
    image = rng.uniform(0, 255, (1, *IMAGE_SIZE, 3)).astype(np.float32)
    describer.describe_arrays(image)  # traces the backbone
    start = time.perf_counter()
    describer.describe_arrays(image)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default="10,50,100", help="Candidates per query, comma-separated.")
    parser.add_argument("--repeats", type=int, default=5, help="Queries timed per row (the median is printed).")
    parser.add_argument("--settings", default="storage,speed,performance")
    parser.add_argument("--skip_extraction", action="store_true", help="Leave out section 2 (VGG16 at 640×480).")
    args = parser.parse_args()

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.inference.hardware import describe_cpu
    from netvlad_tf.reranking.reranker import Reranker
    from netvlad_tf.reranking.settings import PATCH_SETTINGS

    print(f"CPU: {describe_cpu()}")
    counts = [int(value) for value in args.candidates.split(",")]
    model = build_netvlad_model(weights=None, num_clusters=64)  # the patch grid of VGG16; features are synthetic
    print("\n1. Re-ranking one query with stored patch features (640×480, VGG16's 30×40 grid), median of "
          f"{args.repeats}; × the global search of 10 000 images")
    print(f"{'setting':<12} {'candidates':>10} {'s/query':>9} {'× search':>9} {'peak MB':>8}")
    rng = np.random.default_rng(0)
    for name in args.settings.split(","):
        settings = PATCH_SETTINGS[name]
        reranker = Reranker(model, name)  # its keypoints; the features are synthetic, of the setting's dims
        for count in counts:
            with tempfile.TemporaryDirectory() as folder:
                query, store = stored_candidates(settings, reranker, count, Path(folder), rng)
                seconds, peak = timed_reranking(reranker, query, store, count, args.repeats)
            baseline = global_search_seconds(count)
            print(f"{name:<12} {count:>10} {seconds:>9.3f} {seconds / baseline:>9.0f} {peak:>8.0f}")
    print("\n2. Stored patch features per image (float16, 640×480)")
    for name in args.settings.split(","):
        settings = PATCH_SETTINGS[name]
        patches = sum(((GRID[0] - size) // stride + 1) * ((GRID[1] - size) // stride + 1)
                      for size, stride in zip(settings.patch_sizes, settings.strides))
        print(f"{name:<12} {patches * settings.dims * 2 / 1e6:6.2f} MB ({patches} patches of {settings.dims} dims)")
    if not args.skip_extraction:
        print("\n3. Extracting one query's patch features (VGG16 + NetVLAD K=64 + 4096-D whitening, 640×480)")
        for name in args.settings.split(","):
            print(f"{name:<12} {query_extraction_seconds(name):6.2f} s")


if __name__ == "__main__":
    main()
