"""Decisions on the bundled Nordland route: `python benchmarks/bench_decisions.py --model
demo_output/model_whitened.keras`.

Three tables on the test stretch (places 1250–1599: 348 winter queries against 348 summer
images, positives within 25 m), all through the package's own `evaluate`:

1. Sequence matching: R@1/5/10 and the precision–recall area for sequences of L = 1, 3, 5, 10
   frames, for the model and for raw pixels (SeqSLAM's classic input), each beside L = 1.
2. Compact descriptors: R@1/5/10 and the precision–recall area of `model.with_dims(D)` for
   D = 64 … 1024 beside the full model, with the size of each `.keras` file and of its float32
   TFLite export (the whitening matrix is cut to D columns).
3. Loop closure: the route as one stream (summer, then winter), `LoopDetector` at the
   threshold of 99 % precision (or the best precision reached) of sequences of 5, for each
   `--min-frame-gaps`: loops closed, the share within 25 m.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

DIMENSIONS = (64, 128, 256, 512, 1024)
SEQUENCE_LENGTHS = (3, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a whitened .keras model (the demo's model_whitened.keras)")
    parser.add_argument("--image-size", default="128,256", help="HEIGHT,WIDTH (the demo's Lite0 size: 128,256)")
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMENSIONS))
    parser.add_argument("--min-frame-gaps", type=int, nargs="+", default=[100, 348])
    args = parser.parse_args()
    image_size = tuple(int(side) for side in args.image_size.split(","))

    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}")
    from netvlad_tf import LoopDetector, evaluate
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.export import export_tflite
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.models.model_files import open_model
    from netvlad_tf.sample_data import nordland_csv

    model = open_model(args.model, netvlad=True)
    route = read_csv_dataset(nordland_csv("test"))

    print("\n1. Sequence matching (R@1 / R@5 / R@10, precision-recall AUC, R@100%P)")
    print(f"{'method':<10}{'L':>4}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'AUC':>7}{'R@100%P':>9}")
    results = {}
    for name, (subject, baseline) in {"model": (model, None), "pixels": (None, "pixels")}.items():
        results[name] = evaluate(subject, route, ns=(1, 5, 10), baseline=baseline, image_size=image_size,
                                 batch_size=16, sequence_lengths=SEQUENCE_LENGTHS, verbose=False)
        rankings = {1: results[name].single, **results[name].sequences}
        for length, ranking in rankings.items():
            recall, curve = ranking.recall, ranking.precision_recall
            print(f"{name:<10}{length:>4}{100 * recall[1]:7.1f}{100 * recall[5]:7.1f}{100 * recall[10]:7.1f}"
                  f"{curve.auc:7.3f}{100 * curve.recall_at_precision(1.0):9.1f}")

    print("\n2. Compact descriptors (first D whitened dimensions, L2 again)")
    print(f"{'D':>6}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'AUC':>7}{'.keras MB':>11}{'.tflite MB':>12}")
    with tempfile.TemporaryDirectory() as work:
        for dims in sorted({*args.dims, model.whitening_dim}):
            if dims > model.whitening_dim:
                continue
            compact = model.with_dims(dims)
            result = evaluate(compact, route, ns=(1, 5, 10), image_size=image_size, batch_size=16, verbose=False)
            keras_file = Path(work) / f"d{dims}.keras"
            compact.save(keras_file)
            tflite_file = export_tflite(compact, Path(work) / f"d{dims}.tflite", "none", image_size)
            print(f"{dims:>6}{100 * result.recall[1]:7.1f}{100 * result.recall[5]:7.1f}{100 * result.recall[10]:7.1f}"
                  f"{result.precision_recall.auc:7.3f}{keras_file.stat().st_size / 1e6:11.2f}"
                  f"{tflite_file.stat().st_size / 1e6:12.2f}")

    print("\n3. Loop closure: the stretch as one stream (348 summer, then 348 winter frames), sequences of 5")
    curve = results["model"].sequences[5].precision_recall
    threshold = curve.threshold_at_precision(0.99)
    target = 0.99
    if threshold is None:
        target = float(curve.precision[curve.recall > 0].max())
        threshold = curve.threshold_at_precision(target)
    frames = route.database_paths + route.query_paths
    positions = np.concatenate([route.database_utm[:, 0], route.query_utm[:, 0]])
    descriptors = embed_images(model, frames, image_size, batch_size=16, verbose=False)
    print(f"threshold {threshold:.4f}: the evaluation's {100 * target:.1f} % precision point")
    for gap in args.min_frame_gaps:
        detector = LoopDetector(None, threshold, gap, sequence_length=5)
        loops = [loop for loop in detector.add_descriptors(descriptors) if loop is not None]
        correct = sum(abs(positions[loop.frame] - positions[loop.matched_frame]) <= 25 for loop in loops)
        closest = min((loop.frame - loop.matched_frame for loop in loops), default=None)
        into_summer = sum(loop.matched_frame < route.num_database <= loop.frame for loop in loops)
        print(f"min_frame_gap {gap}: {len(loops)} loops in {len(frames)} frames ({into_summer} winter → summer), "
              f"{correct} within 25 m ({100 * correct / max(1, len(loops)):.1f} %); smallest frame distance matched: "
              f"{closest}")


if __name__ == "__main__":
    main()
