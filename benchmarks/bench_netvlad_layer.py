"""NetVLAD layer speed and memory: `python benchmarks/bench_netvlad_layer.py`.

Feature maps of (8, 30, 40, 512) — what a 480×640 image gives at conv5_3 — and K = 64.
Each variant runs in its own process so that its peak RSS is its own. The baselines use the
strategy of the most used PyTorch port: a Python loop over the clusters, each building the full
(B, D, N) residual tensor. `torch_cluster_loop` runs it in PyTorch (when torch is installed;
`pip install torch`), `cluster_loop` in TensorFlow. The CPU's practical limit is a large float32
matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

BATCH, HEIGHT, WIDTH, CHANNELS, CLUSTERS = 8, 30, 40, 512, 64
# Assignment (2·N·D·K) + aggregation (2·N·D·K) + residual and normalisations (~3·D·K),
# per map: ≈ 160 MFLOP.
FLOP_PER_MAP = 4 * HEIGHT * WIDTH * CHANNELS * CLUSTERS
VARIANTS = ("netvlad_tf", "cluster_loop", "torch_cluster_loop")


def _layer_and_inputs():
    import numpy as np
    import tensorflow as tf

    from netvlad_tf import NetVLAD

    rng = np.random.default_rng(0)
    layer = NetVLAD(num_clusters=CLUSTERS)
    layer.build((None, None, None, CHANNELS))
    layer.set_clusters(rng.normal(size=(CLUSTERS, CHANNELS)), alpha=10.0)
    inputs = tf.constant(rng.normal(size=(BATCH, HEIGHT, WIDTH, CHANNELS)).astype("float32"))
    return layer, inputs


def _cluster_loop_forward(layer, inputs):
    import tensorflow as tf

    x = tf.math.l2_normalize(inputs, axis=-1)
    x = tf.reshape(x, (BATCH, -1, CHANNELS))
    assignment = tf.nn.softmax(x @ layer.assignment_kernel + layer.assignment_bias, axis=-1)
    residuals = []
    for k in range(CLUSTERS):
        residual = x - layer.centroids[k][None, None, :]
        residuals.append(tf.reduce_sum(residual * assignment[:, :, k : k + 1], axis=1))
    vlad = tf.math.l2_normalize(tf.stack(residuals, axis=1), axis=-1)
    return tf.math.l2_normalize(tf.reshape(vlad, (BATCH, -1)), axis=-1)


def measure_torch(backward: bool, repeats: int) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    inputs = torch.tensor(rng.normal(size=(BATCH, CHANNELS, HEIGHT, WIDTH)).astype("float32"))
    assignment = torch.nn.Conv2d(CHANNELS, CLUSTERS, kernel_size=1)
    centroids = torch.nn.Parameter(torch.rand(CLUSTERS, CHANNELS))

    def forward(x):
        x = torch.nn.functional.normalize(x, p=2, dim=1)
        weights = torch.softmax(assignment(x).view(BATCH, CLUSTERS, -1), dim=1)
        flat = x.view(BATCH, CHANNELS, -1)
        vlad = torch.zeros(BATCH, CLUSTERS, CHANNELS)
        for k in range(CLUSTERS):
            residual = flat - centroids[k].view(1, CHANNELS, 1)
            vlad[:, k] = (residual * weights[:, k : k + 1]).sum(dim=-1)
        vlad = torch.nn.functional.normalize(vlad, p=2, dim=2).view(BATCH, -1)
        return torch.nn.functional.normalize(vlad, p=2, dim=1)

    def step():
        if backward:
            x = inputs.clone().requires_grad_(True)
            forward(x).sum().backward()
        else:
            with torch.no_grad():
                forward(inputs)

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"maps_per_s": BATCH * repeats / seconds, "peak_rss_mb": peak_rss_mb}


def measure(variant: str, backward: bool, repeats: int) -> dict:
    if variant == "torch_cluster_loop":
        return measure_torch(backward, repeats)
    import tensorflow as tf

    layer, inputs = _layer_and_inputs()
    forward = layer if variant == "netvlad_tf" else (lambda x: _cluster_loop_forward(layer, x))

    def step(x):
        if not backward:
            return forward(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(forward(x))
        return tape.gradient(loss, [x, *layer.trainable_weights])

    step = tf.function(step) if variant == "netvlad_tf" else step
    step(inputs)  # trace / warm up
    start = time.perf_counter()
    for _ in range(repeats):
        step(inputs)
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"maps_per_s": BATCH * repeats / seconds, "peak_rss_mb": peak_rss_mb}


def matmul_gflops() -> float:
    import tensorflow as tf

    a = tf.random.normal((2048, 2048))
    matmul = tf.function(lambda m: m @ m)
    matmul(a)
    start = time.perf_counter()
    for _ in range(10):
        matmul(a).numpy()
    return 10 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, mode = args.child
        if mode == "matmul":
            print(json.dumps({"gflops": matmul_gflops()}))
        else:
            print(json.dumps(measure(variant, mode == "backward", args.repeats)))
        return

    def child(variant, mode):
        run = subprocess.run(
            [sys.executable, __file__, "--repeats", str(args.repeats), "--child", variant, mode],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            if variant == "torch_cluster_loop" and "No module named 'torch'" in run.stderr:
                return None
            raise RuntimeError(f"{variant} {mode} failed:\n{run.stderr[-2000:]}")
        return json.loads(run.stdout.strip().splitlines()[-1])

    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}")
    peak_gflops = child("-", "matmul")["gflops"]
    print(f"NetVLAD K={CLUSTERS} on ({BATCH}, {HEIGHT}, {WIDTH}, {CHANNELS}); "
          f"≈{FLOP_PER_MAP / 1e6:.0f} MFLOP per map forward; CPU matmul limit {peak_gflops:.0f} GFLOP/s")
    print("Ratios are against torch_cluster_loop, or cluster_loop without torch.")
    print(f"{'mode':<18}{'variant':<20}{'maps/s':>9}{'peak RSS MB':>13}{'speed-up':>10}{'RSS ratio':>11}{'% of CPU':>10}")
    for mode in ("forward", "backward"):
        results = {variant: child(variant, mode) for variant in VARIANTS}
        base = results["torch_cluster_loop"] or results["cluster_loop"]
        for variant, result in results.items():
            if result is None:
                print(f"{'':<18}{variant:<20} skipped: torch is not installed")
                continue
            flop = FLOP_PER_MAP * (1 if mode == "forward" else 3)
            share = 100 * result["maps_per_s"] * flop / (peak_gflops * 1e9)
            print(
                f"{mode if mode == 'forward' else 'forward+backward':<18}{variant:<20}"
                f"{result['maps_per_s']:9.1f}{result['peak_rss_mb']:13.0f}"
                f"{result['maps_per_s'] / base['maps_per_s']:10.2f}x"
                f"{result['peak_rss_mb'] / base['peak_rss_mb']:10.2f}x{share:9.1f}%"
            )


if __name__ == "__main__":
    main()
