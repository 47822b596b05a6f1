"""Embedding throughput under the image policy: `python benchmarks/bench_embedding.py`.

Two sets, one model (EfficientNet-Lite0 ImageNet, bundled, + NetVLAD K=16):
- uniform: the bundled Nordland test images at one size (the demo's 128×256). Baseline, in the
  same run: the pipeline before the image policy (a plain `tf.data` map of decode + resize,
  batched in order: no header reading, no EXIF, no shape grouping).
- mixed: generated JPEG/PNG photos of 12 sizes (±1–2 pixels and both orientations, as real
  collections are) at native size. Baseline: batch size 1, the only way through before.
Both baselines call the model eagerly, as the package did before; the rows after them show the
image policy with the eager call (`model.run_eagerly = True`) and with the default, the compiled
forward pass. Each row: images/s and its ratio to the baseline. The CPU's capability
is printed first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

MIXED_SIZES = [(240, 320), (241, 320), (240, 322), (320, 240), (480, 640), (478, 640),
               (360, 480), (480, 360), (300, 400), (301, 401), (256, 256), (200, 300)]


def legacy_batches(paths, image_size, batch_size):
    """The old reader: decode + resize in a `tf.data` map, batched in order."""
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), image_size)

    dataset = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def set_eager(model, eager: bool) -> None:
    """Switches `embed_images` between the eager call and the compiled forward pass."""
    model.run_eagerly = eager


def images_per_second(function, count: int, repeats: int = 3) -> float:
    function()  # warm-up: tracing, file cache
    best = min(_timed(function) for _ in range(repeats))
    return count / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from cpu_info import int8_capability
    from PIL import Image

    from netvlad_tf import build_netvlad_model
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.sample_data import nordland_csv

    print(f"CPU: {int8_capability()}")
    model = build_netvlad_model("efficientnet_lite0", weights="imagenet", num_clusters=16)
    uniform = read_csv_dataset(nordland_csv("test")).query_paths
    size = (128, 256)

    def legacy():
        for batch in legacy_batches(uniform, size, args.batch_size):
            model(batch, training=False)

    def policy():
        embed_images(model, uniform, size, batch_size=args.batch_size, verbose=False)

    baseline = images_per_second(legacy, len(uniform))
    set_eager(model, True)
    policy_eager = images_per_second(policy, len(uniform))
    set_eager(model, False)
    current = images_per_second(policy, len(uniform))
    print(f"\nuniform: {len(uniform)} images resized to {size[0]}×{size[1]}, batch {args.batch_size}")
    print(f"  before the image policy (plain tf.data, eager)   {baseline:7.1f} images/s   1.00")
    print(f"  image policy, eager model call                   {policy_eager:7.1f} images/s   "
          f"{policy_eager / baseline:4.2f}")
    print(f"  image policy, compiled forward (default)         {current:7.1f} images/s   "
          f"{current / baseline:4.2f}")

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(args.mixed_images):
            height, width = MIXED_SIZES[index % len(MIXED_SIZES)]
            picture = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            path = Path(folder) / f"photo{index}.{'jpg' if index % 2 else 'png'}"
            Image.fromarray(picture).save(path)
            paths.append(str(path))
        set_eager(model, True)
        one_by_one = images_per_second(
            lambda: embed_images(model, paths, batch_size=1, verbose=False), len(paths))
        grouped_eager = images_per_second(
            lambda: embed_images(model, paths, batch_size=args.batch_size, verbose=False), len(paths))
        set_eager(model, False)
        grouped = images_per_second(
            lambda: embed_images(model, paths, batch_size=args.batch_size, verbose=False), len(paths))
    print(f"\nmixed: {len(paths)} photos of {len(MIXED_SIZES)} sizes, native size (longer side ≤ 640)")
    print(f"  batch size 1, eager (the only way before)        {one_by_one:7.1f} images/s   1.00")
    print(f"  batch size {args.batch_size}, grouped by shape, eager           {grouped_eager:7.1f} images/s   "
          f"{grouped_eager / one_by_one:4.2f}")
    print(f"  batch size {args.batch_size}, grouped, compiled (default)       {grouped:7.1f} images/s   "
          f"{grouped / one_by_one:4.2f}")


if __name__ == "__main__":
    main()
