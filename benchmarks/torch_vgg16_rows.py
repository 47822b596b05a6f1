"""PyTorch's VGG16 to conv5_3 (torchvision, before its ReLU, as netvlad_tf cuts it) at float32
and under bfloat16 autocast: images/s one image at a time, printed as one JSON line.

Run by `bench_precision.py` in its own process (PyTorch and TensorFlow in one process crash
on some machines): `python benchmarks/torch_vgg16_rows.py --height 480 --width 640 --images 3`.
NetVLAD's head is left out (≈0.1 of 187 GFLOPs), favouring PyTorch slightly.
"""

from __future__ import annotations

import argparse
import json
import time


def images_per_second(run, images) -> float:
    """Images/s of `run` over `images` one at a time, after one warm-up call."""
    run(images[:1])
    start = time.perf_counter()
    for image in images:
        run(image[None])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--no_bfloat16", action="store_true",
                        help="Leave out bfloat16 autocast (emulated on a CPU without bfloat16 units: "
                             "60× slower than float32 on an AVX2-only one).")
    args = parser.parse_args()
    import torch
    import torchvision

    trunk = torchvision.models.vgg16().features[:29].eval()  # conv5_3 is features[28]
    images = torch.rand(args.images, 3, args.height, args.width) * 255
    rows = {}
    with torch.inference_mode():
        rows["PyTorch float32"] = images_per_second(trunk, images)
        if not args.no_bfloat16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rows["PyTorch bfloat16 autocast"] = images_per_second(trunk, images)
    print(json.dumps({"torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
