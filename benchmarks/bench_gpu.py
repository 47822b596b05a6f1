"""VGG16-NetVLAD on a GPU, in one run: `python benchmarks/bench_gpu.py` (24 XLA compilations and
two training processes: expect several minutes; `--sections 12` and `--sections 3` split it, and
`--smoke` runs the same code at toy sizes on any machine, a CPU included: 2½ minutes on 2 cores).

Prints the devices first, then:

1. Embedding images/s of VGG16 + NetVLAD (K = 64) at 480×640, random weights and images made
   on the device, per precision (float32, bfloat16, float16: `low_precision_model`, the head
   in float32), with and without XLA (`jit_compile`), at batch sizes 8–64; each row also as a
   ratio to float32 without XLA at the same batch size.
2. Descriptors: the device's, per precision and XLA, against float32 on the CPU (the reference)
   on the same images: least cosine. float32 on a GPU may use TF32 for its convolutions.
3. The training step (1 query + 1 positive + 10 negatives at 240×320, conv5 upwards trainable),
   tuples/s in float32 and mixed float16 (Keras wraps the optimizer in loss scaling), each in its
   own process through `bench_training.py`.

Options: `--sizes 480,640`, `--batches 8,16,32,64`, `--repeats 5`, `--sections 123`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PRECISIONS = ("float32", "bfloat16", "float16")


def describe_devices() -> str:
    """The GPUs TensorFlow sees (name and compute capability), or that there are none."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "no GPU: TensorFlow runs on the CPU"
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    return "; ".join(f"{detail.get('device_name', gpu.name)} (compute capability {detail.get('compute_capability')})"
                     for gpu, detail in zip(gpus, details))


def forward(model, jit: bool):
    """The model's inference pass as a compiled function, with or without XLA."""
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=False), jit_compile=jit)


def images_per_second(run, images, repeats: int) -> float:
    """Images/s of `run` over one batch, after two warm-up calls (tracing, autotuning); the
    result is fetched each time so the device's queue is waited for."""
    for _ in range(2):
        np.asarray(run(images))
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(run(images))
    return repeats * int(images.shape[0]) / (time.perf_counter() - start)


def short_error(error: Exception) -> str:
    """The first line of an error, for a row that failed (out of memory, XLA)."""
    return f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"


def embedding_section(model, size: tuple[int, int], batches: list[int], repeats: int) -> None:
    import tensorflow as tf

    from netvlad_tf.inference.precision import low_precision_model

    print(f"\n1. embedding images/s at {size[0]}×{size[1]} (× float32 without XLA at the same batch)")
    print(f"  {'precision':<10} {'XLA':<4} " + " ".join(f"{'batch ' + str(batch):>18}" for batch in batches))
    baseline = {}
    for precision in PRECISIONS:
        low = low_precision_model(model, precision)
        for jit in (False, True):
            run, cells, failures = forward(low, jit), [], []
            for batch in batches:
                images = tf.random.uniform((batch, *size, 3), 0, 255, seed=batch)
                try:
                    rate = images_per_second(run, images, repeats)
                except (tf.errors.OpError, ValueError, RuntimeError) as error:
                    cells.append(f"{'failed (below)':>18}")
                    failures.append(f"    batch {batch}: {short_error(error)}")
                    continue
                if precision == "float32" and not jit:
                    baseline[batch] = rate
                ratio = rate / baseline[batch] if batch in baseline else float("nan")
                cells.append(f"{rate:9.1f} ({ratio:4.2f}×)")
            print("\n".join([f"  {precision:<10} {'yes' if jit else 'no':<4} " + " ".join(cells), *failures]), flush=True)


def parity_section(model, size: tuple[int, int]) -> None:
    import tensorflow as tf

    from netvlad_tf.inference.precision import low_precision_model

    images = np.random.default_rng(0).uniform(0, 255, (4, *size, 3)).astype(np.float32)
    with tf.device("/CPU:0"):
        reference = np.asarray(model(images, training=False))
    print(f"\n2. descriptors against float32 on the CPU ({len(images)} images at {size[0]}×{size[1]}): least cosine")
    for precision in PRECISIONS:
        low = low_precision_model(model, precision)
        found = [f"{'XLA' if jit else 'no XLA'} {np.min(np.sum(reference * np.asarray(forward(low, jit)(images)), axis=1)):.6f}"
                 for jit in (False, True)]
        print(f"  {precision:<10} " + "   ".join(found), flush=True)


def training_section(steps: int) -> None:
    print("\n3. training step, tuples/s (each in its own process)")
    rows = {}
    for mode in ("float32", "mixed_float16"):
        run = subprocess.run([sys.executable, str(HERE / "bench_training.py"), "--steps", str(steps), "--child", mode],
                             capture_output=True, text=True)
        if run.returncode:
            print(f"  {mode:<14} failed: {(run.stderr.strip().splitlines() or ['no output'])[-1][:200]}")
            continue
        rows[mode] = json.loads(run.stdout.strip().splitlines()[-1])
        ratio = rows[mode]["tuples_per_s"] / rows["float32"]["tuples_per_s"] if "float32" in rows else float("nan")
        print(f"  {mode:<14} {rows[mode]['tuples_per_s']:8.2f} tuples/s ({ratio:4.2f}×), "
              f"loss on the fixed tuple {rows[mode]['loss']:.5f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="480,640", help="HEIGHT,WIDTH of the embedded images.")
    parser.add_argument("--batches", default="8,16,32,64", help="Batch sizes.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per row.")
    parser.add_argument("--steps", type=int, default=10, help="Timed training steps per precision.")
    parser.add_argument("--sections", default="123", help="Which sections to run.")
    parser.add_argument("--smoke", action="store_true", help="Toy sizes: checks the script on any machine.")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batches, args.repeats, args.steps = "32,48", "1,2", 1, 1
    sys.path.insert(0, str(HERE))
    from cpu_info import int8_capability

    from netvlad_tf import build_netvlad_model

    print(f"CPU: {int8_capability()}, {os.cpu_count()} logical CPUs")
    print(f"Devices: {describe_devices()}")
    size = tuple(int(side) for side in args.size.split(","))
    model = build_netvlad_model("vgg16", weights=None, num_clusters=64)
    if "1" in args.sections:
        embedding_section(model, size, [int(batch) for batch in args.batches.split(",")], args.repeats)
    if "2" in args.sections:
        parity_section(model, size)
    if "3" in args.sections:
        training_section(args.steps)


if __name__ == "__main__":
    main()
