"""Embedding speed and fidelity per precision: `python benchmarks/bench_precision.py`.

Prints the CPU's capability first, then:

1. images/s of VGG16 + NetVLAD (K = 64) at 480×640 and 240×320 and of EfficientNet-Lite0 +
   NetVLAD at 480×640, per precision (float32 on TensorFlow: the baseline; bfloat16 and float16
   backbones; int8 on ONNX Runtime; ONNX Runtime's own float32 for reference), each as a ratio
   to float32 in the same run; and PyTorch float32 / bfloat16 autocast on the same shapes where
   torch is installed (what a user would pick instead; `torch_vgg16_rows.py` in its own
   process, by `--torch_python`). Random weights and images: speed does
   not depend on the values.
2. with `--model` (e.g. the demo's `demo_output/model_whitened.keras`): Recall@1/5/10 on the
   bundled test stretch at `--image_size` (the demo's 128×256) and the query descriptors'
   cosine to float32 (median, least) per precision.

Options: `--images N` per timing (default 4), `--sections 12`, `--skip int8,float16,torch_bfloat16`,
`--torch_python PATH`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from torch_vgg16_rows import images_per_second  # this folder: the script's own

HERE = Path(__file__).resolve().parent
SHAPES = (("vgg16", (480, 640)), ("vgg16", (240, 320)), ("efficientnet_lite0", (480, 640)))
PRECISIONS = ("float32", "bfloat16", "float16", "int8")


def speed_section(count: int, skip: set[str], torch_python: str) -> None:
    from netvlad_tf import build_netvlad_model
    from netvlad_tf.inference.embedding import Embedder
    from netvlad_tf.inference.int8 import OnnxRuntimeModel, quantize_int8
    from netvlad_tf.inference.onnx_files import write_onnx
    from netvlad_tf.inference.precision import low_precision_model

    print("\n1. images/s, one image at a time (× TensorFlow float32 in the same run)")
    rng = np.random.default_rng(0)
    for backbone, size in SHAPES:
        model = build_netvlad_model(backbone, weights=None, num_clusters=64)
        images = rng.uniform(0, 255, (count, *size, 3)).astype(np.float32)
        rows = {}
        for name in PRECISIONS:
            if name in skip:
                continue
            if name == "int8":
                with tempfile.TemporaryDirectory() as work:
                    calibration = [str(Path(work) / f"{i}.png") for i in range(4)]
                    _write_pngs(calibration, rng, size)
                    quantize_int8(model, calibration, Path(work) / "int8.onnx", size)
                    runner = OnnxRuntimeModel(Path(work) / "int8.onnx")
                    rows["int8 (ONNX Runtime)"] = images_per_second(runner, images)
                    write_onnx(model, Path(work) / "float32.onnx")
                    rows["float32 (ONNX Runtime)"] = images_per_second(OnnxRuntimeModel(Path(work) / "float32.onnx"), images)
                continue
            embedder = Embedder(low_precision_model(model, name))
            rows[name] = images_per_second(embedder, images)
        rows.update(_torch_rows(backbone, images, torch_python, "torch_bfloat16" not in skip))
        baseline = rows["float32"]
        print(f"  {backbone} + NetVLAD at {size[0]}×{size[1]}:")
        for label, rate in rows.items():
            print(f"    {label:<28} {rate:7.3f} images/s   {rate / baseline:5.2f}×")


def _write_pngs(paths, rng, size) -> None:
    import tensorflow as tf

    for path in paths:
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        tf.io.write_file(path, tf.io.encode_png(pixels))


def _torch_rows(backbone: str, images: np.ndarray, torch_python: str, bfloat16: bool) -> dict[str, float]:
    """PyTorch's rows from `torch_vgg16_rows.py`, run by `torch_python` in its own process
    (PyTorch beside TensorFlow in one process crashed here); none where torch is missing."""
    if backbone != "vgg16":
        return {}
    command = [torch_python, str(HERE / "torch_vgg16_rows.py"), "--height", str(images.shape[1]),
               "--width", str(images.shape[2]), "--images", str(len(images))] + ([] if bfloat16 else ["--no_bfloat16"])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"    (PyTorch rows skipped: {error})")
        return {}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"    (PyTorch rows skipped: {last})")
        return {}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {f"{label} ({result['torch']})": rate for label, rate in result["rows"].items()}


def fidelity_section(model_path: str, skip: set[str], image_size: tuple[int, int]) -> None:
    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.evaluation.evaluate import evaluate
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.inference.runner import ModelRunner
    from netvlad_tf.models.model_files import open_model
    from netvlad_tf.sample_data import nordland_csv

    model = open_model(model_path, netvlad=True)
    dataset = read_csv_dataset(nordland_csv("test"))
    print(f"\n2. {model.name} on {dataset.name} ({dataset.num_queries} queries) at {image_size[0]}×{image_size[1]}: "
          "recall and cosine to float32")
    reference = embed_images(model, dataset.query_paths, image_size, verbose=False)
    print(f"  {'precision':<10} {'R@1':>6} {'R@5':>6} {'R@10':>6}   {'cos median':>10} {'cos least':>10}")
    for name in PRECISIONS:
        if name in skip:
            continue
        result = evaluate(model, dataset, ns=(1, 5, 10), image_size=image_size, verbose=False, precision=name)
        runner = ModelRunner.prepare(model, name, calibration_paths=dataset.database_paths, image_size=image_size,
                                     verbose=False)
        found = np.sum(reference * runner.embed(dataset.query_paths, image_size, verbose=False), axis=1)
        recall = [100 * result.recall[n] for n in (1, 5, 10)]
        print(f"  {name:<10} {recall[0]:6.1f} {recall[1]:6.1f} {recall[2]:6.1f}   {np.median(found):10.5f} "
              f"{found.min():10.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="Images per timing.")
    parser.add_argument("--sections", default="12", help="Which sections to run.")
    parser.add_argument("--model", help="A trained .keras model for section 2 (e.g. the demo's).")
    parser.add_argument("--skip", default="", help="Precisions to leave out, e.g. float16,int8.")
    parser.add_argument("--torch_python", default=sys.executable,
                        help="The Python that has torch and torchvision (default: this one).")
    parser.add_argument("--image_size", default="128,256", help="Section 2's HEIGHT,WIDTH (the demo's: 128,256).")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}, {os.cpu_count()} logical CPUs")
    skip = {name for name in args.skip.split(",") if name}
    if "1" in args.sections:
        speed_section(args.images, skip, args.torch_python)
    if "2" in args.sections and args.model:
        fidelity_section(args.model, skip, tuple(int(side) for side in args.image_size.split(",")))


if __name__ == "__main__":
    main()
