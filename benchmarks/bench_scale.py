"""The database side at scale: `python benchmarks/bench_scale.py [--images 348] [--skip_ray]`.

Each measurement runs in a fresh process (its peak memory is the process's own):

1. images/s of `embed_database` in one process (TensorFlow's default threads; the baseline)
   vs one process with one thread vs 2 Ray Data actors of one thread each;
2. peak memory at N and 10·N images: streaming shards vs gathering every descriptor in RAM
   (`embed_images`, what `netvlad-tf index` did before), VGG16 + NetVLAD K=64 (32 768-D);
3. the cost of a resume: a run killed after half its shards plus the rerun, against one
   uninterrupted run, and a rerun of a finished folder;
4. index build time from 100 000 random 256-D descriptors vs shard count: IVF-SQ8 added shard
   by shard, and merged from per-shard parts into on-disk inverted lists;
5. upkeep of a growing database, 100 000 random 256-D descriptors in 100 shards: checking every
   shard on resume against reading the folder, and adding 10 % appended rows to an index
   against rebuilding it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = [64, 128]  # --image_size sets it (the paper's size: 480,640)


def child(mode: str, count: int, model_path: str, output: str, threads: int) -> None:
    """One measured run (in its own process): prints its seconds as JSON."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from netvlad_tf import embed_database
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.models.model_files import open_model
    from netvlad_tf.sample_data import nordland_csv

    dataset = read_csv_dataset(nordland_csv("test"))
    repeats = -(-count // dataset.num_database)
    paths = (dataset.database_paths * repeats)[:count]
    coordinates = [list(row) for row in dataset.database_utm] * repeats
    coordinates = coordinates[:count]
    start = time.perf_counter()
    if mode == "in_ram":
        descriptors = embed_images(open_model(model_path), paths, tuple(IMAGE_SIZE), verbose=False)
        assert descriptors.shape[0] == count
    else:
        stop_after = -(-count // 100) // 2 if mode == "half" else None  # shards of 100: half of them

        def stop(shard):
            if stop_after is not None and shard == stop_after:  # a kill: no cleanup, no commit
                print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
                os._exit(3)

        embed_database(model_path, paths, coordinates, output, image_size=tuple(IMAGE_SIZE), shard_size=100,
                       num_workers=2 if mode == "ray" else 0, cpus_per_worker=1, verbose=False,
                       on_shard_start=stop)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(mode: str, count: int, model_path: Path, output: Path, threads: int = 0) -> tuple[float, float]:
    """`(seconds, peak resident GB)` of one child run (seconds as the child measured them)."""
    process = subprocess.Popen([sys.executable, __file__, "--child", mode, str(count), str(model_path),
                                str(output), str(threads), ",".join(map(str, IMAGE_SIZE))],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    _, _, usage = os.wait4(process.pid, 0)
    output_text = process.stdout.read()
    lines = output_text.strip().splitlines()
    seconds = json.loads(lines[-1])["seconds"] if lines else float("nan")
    return seconds, usage.ru_maxrss / 1e6


def bench_embedding(root: Path, count: int, skip_ray: bool, sections: str) -> None:
    from netvlad_tf import build_netvlad_model

    model_path = root / "vgg16_netvlad.keras"
    build_netvlad_model(weights=None, num_clusters=64).save(model_path)
    if "1" in sections:
        embedding_speed(root, model_path, count, skip_ray)
    if "2" in sections:
        peak_memory(root, model_path, count)
    if "3" in sections:
        resume_cost(root, model_path, count)


def embedding_speed(root: Path, model_path: Path, count: int, skip_ray: bool) -> None:
    print(f"\n1. embedding {count} images at {IMAGE_SIZE[0]}×{IMAGE_SIZE[1]}, VGG16 + NetVLAD K=64 "
          "(random weights; 32 768-D), shards of 100")
    baseline, _ = measure("stream", count, model_path, root / "one")
    print(f"  {'one process, default threads (baseline)':<46} {count / baseline:7.1f} images/s   1.00")
    single, _ = measure("stream", count, model_path, root / "one_thread", threads=1)
    print(f"  {'one process, 1 thread':<46} {count / single:7.1f} images/s   {baseline / single:4.2f}")
    if not skip_ray:
        ray_seconds, _ = measure("ray", count, model_path, root / "ray")
        print(f"  {'2 Ray Data actors of 1 thread (with start-up)':<46} {count / ray_seconds:7.1f} images/s   "
              f"{baseline / ray_seconds:4.2f}")


def peak_memory(root: Path, model_path: Path, count: int) -> None:
    print("\n2. peak memory (resident, whole process incl. TensorFlow) at N and 10·N images")
    for mode, label in (("stream", "streaming shards"), ("in_ram", "all descriptors in RAM")):
        _, small = measure(mode, count, model_path, root / f"mem_{mode}_1")
        _, large = measure(mode, 10 * count, model_path, root / f"mem_{mode}_10")
        print(f"  {label:<24} N={count}: {small:5.2f} GB   10·N={10 * count}: {large:5.2f} GB   "
              f"growth {large / small:4.2f}×")



def resume_cost(root: Path, model_path: Path, count: int) -> None:
    print("\n3. cost of a resume")
    whole, _ = measure("stream", count, model_path, root / "whole")
    half, _ = measure("half", count, model_path, root / "resumed")
    rest, _ = measure("stream", count, model_path, root / "resumed")
    noop, _ = measure("stream", count, model_path, root / "resumed")
    print(f"  uninterrupted run                 {whole:6.1f} s   1.00")
    print(f"  killed at half + rerun            {half + rest:6.1f} s   {(half + rest) / whole:4.2f}"
          )
    print(f"  the rerun alone                   {rest:6.1f} s   {rest / whole:4.2f}")
    print(f"  rerun of a finished folder        {noop:6.1f} s   {noop / whole:4.2f}   (checks only)")


def bench_index(root: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    from netvlad_tf.database.index_build import build_index_from_shards
    from tests.support.descriptor_folders import random_descriptor_folder

    print("\n4. IVF-SQ8 (1024 lists) from 100 000 random 256-D descriptors, by shard count")
    print(f"  {'shards':>6} {'add in RAM s':>13} {'ratio':>6} {'parts + on-disk merge s':>24} {'ratio':>6}")
    baseline = None
    for shards in (1, 10, 100):
        folder = root / f"random_{shards}"
        random_descriptor_folder(folder, 100_000, 256, 100_000 // shards)
        start = time.perf_counter()
        build_index_from_shards(folder, "ivfsq8", verbose=False, num_lists=1024)
        added = time.perf_counter() - start
        work = root / f"work_{shards}"
        work.mkdir()
        start = time.perf_counter()
        build_index_from_shards(folder, "ivfsq8", work, on_disk=True, verbose=False, num_lists=1024)
        merged = time.perf_counter() - start
        baseline = baseline or added
        print(f"  {shards:>6} {added:>13.1f} {added / baseline:>6.2f} {merged:>24.1f} {merged / baseline:>6.2f}")


def bench_upkeep(root: Path) -> None:
    sys.path.insert(0, str(HERE.parent))
    import numpy as np

    from netvlad_tf import read_descriptors
    from netvlad_tf.database.descriptor_folder import DescriptorFolder
    from netvlad_tf.database.index_build import add_shards, build_index_from_shards
    from netvlad_tf.retrieval import create_index
    from tests.support.descriptor_folders import random_descriptor_folder

    print("\n5. upkeep: 100 000 random 256-D descriptors in 100 shards of 1000")
    folder = root / "upkeep"
    random_descriptor_folder(folder, 100_000, 256, 1000)
    start = time.perf_counter()
    read_descriptors(folder)
    read_all = time.perf_counter() - start
    start = time.perf_counter()
    pending, damaged = DescriptorFolder.open(folder).to_embed()
    checked = time.perf_counter() - start
    assert not pending and not damaged
    print(f"  read every descriptor (baseline)   {read_all:6.2f} s   1.00")
    print(f"  check every shard on resume        {checked:6.2f} s   {checked / read_all:4.2f}")
    first = root / "upkeep_first"  # the same rows before the last 10 % were appended
    first.mkdir()
    (first / "shards").symlink_to(folder / "shards", target_is_directory=True)
    (first / "rows.parquet").symlink_to(folder / "rows.parquet")
    manifest = json.loads((folder / "manifest.json").read_text())
    (first / "manifest.json").write_text(json.dumps({**manifest, "num_rows": 90_000,
                                                     "segments": [{"first_row": 0, "num_rows": 90_000}]}))
    table = read_descriptors(folder)
    queries = table.descriptors[::500] + 0.05 * np.random.default_rng(1).normal(size=(200, 256)).astype(np.float32)
    exact = create_index("flat", 256)
    exact.add(table.descriptors)
    truth = exact.search(queries, 10)[1]
    print("  recall: share of the exact top 10 found in the top 10")
    for kind, options in (("flat", {}), ("ivfsq8", {"num_lists": 1024})):
        start = time.perf_counter()
        rebuilt = build_index_from_shards(folder, kind, verbose=False, **options)
        rebuild = time.perf_counter() - start
        grown = build_index_from_shards(first, kind, verbose=False, **options)
        start = time.perf_counter()
        add_shards(grown, DescriptorFolder.open(folder).shards(first=90))
        update = time.perf_counter() - start

        def recall(index):
            found = index.search(queries, 10)[1]
            return 100 * np.mean([len(set(row) & set(best)) / 10 for row, best in zip(found, truth)])

        print(f"  {kind:<7} rebuild {rebuild:6.2f} s (baseline), recall {recall(rebuilt):5.1f} %   "
              f"--update {update:6.2f} s  {update / rebuild:4.2f}, recall {recall(grown):5.1f} %")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        IMAGE_SIZE[:] = [int(side) for side in sys.argv[7].split(",")]
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=348, help="N (the bundled query-side database: 348).")
    parser.add_argument("--skip_ray", action="store_true", help="Without Ray installed.")
    parser.add_argument("--image_size", default="64,128", help="HEIGHT,WIDTH of every image.")
    parser.add_argument("--sections", default="12345", help="Which sections to run, e.g. 1 or 34.")
    args = parser.parse_args()
    IMAGE_SIZE[:] = [int(side) for side in args.image_size.split(",")]
    sys.path.insert(0, str(HERE))
    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}, {os.cpu_count()} logical CPUs")
    with tempfile.TemporaryDirectory() as folder:
        bench_embedding(Path(folder), args.images, args.skip_ray, args.sections)
        if "4" in args.sections:
            bench_index(Path(folder))
        if "5" in args.sections:
            bench_upkeep(Path(folder))


if __name__ == "__main__":
    main()
