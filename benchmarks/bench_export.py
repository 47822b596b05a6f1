"""TFLite size, latency, fidelity and Recall@1 per quantisation: `python benchmarks/bench_export.py`.

The model: EfficientNet-Lite0 (ImageNet, bundled) cut at stride 16 + NetVLAD K=64 initialised by
k-means on bundled Nordland images, or `--model M.keras` (its backbone and NetVLAD are kept), or
`--backbone vgg16`: the paper's VGG16 with random weights (no ImageNet file offline), for size and
latency only (`--skip-recall` is implied; its int8 fidelity means nothing without real weights).
Two whitenings on top: 256-D learned by PCA on the Nordland training stretch, and 4096-D, which
the bundled images cannot support (PCA needs more than 4096 images), so it is a random
orthonormal projection: size and latency do not depend on the values, and fidelity is measured
on the same weights the float32 baseline has.

The CPU's int8 / bfloat16 capability (VNNI, AVX2 only, ARM dotprod) is printed first: int8
speed depends on it. For each whitening × resolution × quantisation (plus an ONNX row run by
onnxruntime) it prints size, latency (LiteRT, one image at a
time, after a warm-up), max |Δ| and min cosine against the Keras model, each with its ratio to
float32 from the same run; Recall@1 of winter queries against summer images (places 1250–1599,
25 m) at 240×320 for every quantisation, against the Keras model's. Then the recall cost of the
phone-sized whitenings: Recall@1/5/10 of the Keras model without whitening, 512-D and 256-D.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

# TFLite quantisations, and "onnx": the float32 ONNX export run by onnxruntime (CPU).
QUANTIZATIONS = ("none", "float16", "dynamic", "int8", "onnx")
RECALL_RESOLUTION = (240, 320)
CALIBRATION_IMAGES = 32
LATENCY_IMAGES = 10


def base_model(model_path: str | None, backbone: str, train_paths: list[str]):
    import keras

    from netvlad_tf import build_netvlad_model, initialize_clusters
    from netvlad_tf.data.images import image_batches

    if model_path:
        return keras.models.load_model(model_path)
    if backbone == "vgg16":
        return build_netvlad_model(backbone="vgg16", weights=None, num_clusters=64)
    model = build_netvlad_model(backbone="efficientnet_lite0", weights="imagenet", num_clusters=64)
    initialize_clusters(model, image_batches(train_paths[::8], RECALL_RESOLUTION), num_descriptors=20000, seed=0,
                        verbose=False)
    return model


def whitened_models(model, train_paths: list[str], learned: bool = True) -> dict:
    """4096-D as a random orthonormal projection; 512-D and 256-D learned by PCA (random too
    when not `learned`)."""
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.layers.whitening import PCAWhitening, fit_pca_whitening

    pooled_dim = model.pooling.output.shape[-1]

    def random_whitening(dim):
        basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(pooled_dim, dim)))
        return PCAWhitening(np.zeros(pooled_dim), basis, np.ones(dim))

    whitenings = {4096: random_whitening(4096)}
    if learned:
        # One pass over the training images serves both learned whitenings.
        pooled = embed_images(model.pooled_model, train_paths, RECALL_RESOLUTION, batch_size=16, verbose=False)
        whitenings.update({dim: fit_pca_whitening(pooled, dim) for dim in (512, 256)})
    else:
        whitenings.update({dim: random_whitening(dim) for dim in (512, 256)})
    models = {}
    for dim, whitening in whitenings.items():
        models[dim] = model.with_whitening(whitening)
    return models


def recall_at_1(descriptor_fn, test_data) -> float:
    """Recall@1 (%) at 25 m; descriptors are L2-normalised, so nearest = largest dot product."""
    from netvlad_tf.evaluation.recall import recall_at_n

    database = descriptor_fn(test_data.database_paths)
    queries = descriptor_fn(test_data.query_paths)
    nearest = np.argmax(queries @ database.T, axis=1)[:, None]
    return 100 * recall_at_n(nearest, test_data.positives_within(25.0), (1,))[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained .keras model (default: Lite0 + k-means NetVLAD)")
    parser.add_argument("--backbone", choices=["efficientnet_lite0", "vgg16"], default="efficientnet_lite0")
    parser.add_argument("--skip-recall", action="store_true", help="only size, latency and fidelity")
    parser.add_argument("--whitening-dims", type=int, nargs="+", default=[4096, 256], choices=[4096, 256])
    parser.add_argument("--resolutions", nargs="+", default=["480x640", "240x320"], help="HxW")
    parser.add_argument("--quantize", nargs="+", default=list(QUANTIZATIONS), choices=QUANTIZATIONS,
                        help="variants to measure; the first is the baseline of the ratios")
    args = parser.parse_args()
    random_weights = args.backbone == "vgg16" and not args.model
    args.skip_recall = args.skip_recall or random_weights
    resolutions = [tuple(int(side) for side in text.split("x")) for text in args.resolutions]

    import keras

    from netvlad_tf.data import read_csv_dataset
    from netvlad_tf.data.images import image_batches
    from netvlad_tf.export import export_onnx, export_tflite, run_onnx
    from netvlad_tf.export.parity import compare_descriptors
    from netvlad_tf.export.tflite import run_tflite
    from netvlad_tf.inference.embedding import embed_images
    from netvlad_tf.sample_data import nordland_csv

    keras.utils.set_random_seed(0)
    train = read_csv_dataset(nordland_csv("train"))
    test = read_csv_dataset(nordland_csv("test"))
    from cpu_info import int8_capability

    print(f"CPU: {int8_capability()}")
    model = base_model(args.model, args.backbone, train.database_paths)
    models = whitened_models(model, train.database_paths, learned=not random_weights)
    print(f"backbone {model.backbone.name}, NetVLAD K={model.pooling.num_clusters}, "
          f"pooled {model.pooling.output.shape[-1]}-D")

    with tempfile.TemporaryDirectory() as scratch:
        print(f"\n{'whitening':>9} {'size':>9} {'quantize':>8} {'MB':>7} {'×f32':>6} {'ms/img':>8} {'×f32':>6} "
              f"{'max|Δ|':>9} {'min cos':>8} {'R@1':>6} {'Keras R@1':>9}")
        for dim in args.whitening_dims:
            whitened = models[dim]
            for resolution in resolutions:
                images = np.concatenate(list(image_batches(test.query_paths[:LATENCY_IMAGES], resolution)))
                calibration = np.concatenate(list(image_batches(
                    train.database_paths[:: len(train.database_paths) // CALIBRATION_IMAGES][:CALIBRATION_IMAGES],
                    resolution)))
                reference = keras.ops.convert_to_numpy(whitened(images, training=False))
                keras_recall = None
                if resolution == RECALL_RESOLUTION and not args.skip_recall:
                    keras_recall = recall_at_1(
                        lambda paths, whitened=whitened, resolution=resolution: embed_images(
                            whitened, paths, resolution, batch_size=16, verbose=False), test)
                baseline = {}
                for quantize in args.quantize:
                    if quantize == "onnx":
                        path = Path(scratch) / f"w{dim}_{resolution[0]}.onnx"
                        export_onnx(whitened, path)
                        run = lambda batch, path=path: np.concatenate([run_onnx(path, image[None]) for image in batch])
                    else:
                        path = Path(scratch) / f"w{dim}_{resolution[0]}_{quantize}.tflite"
                        export_tflite(whitened, path, quantize, resolution,
                                      list(calibration) if quantize == "int8" else None)
                        run = lambda batch, path=path: run_tflite(path, batch)
                    run(images[:1])
                    start = time.perf_counter()
                    exported = run(images)
                    latency_ms = 1000 * (time.perf_counter() - start) / len(images)
                    size_mb = path.stat().st_size / 1e6
                    baseline.setdefault("size", size_mb)
                    baseline.setdefault("latency", latency_ms)
                    max_abs_diff, cosine = compare_descriptors(reference, exported)
                    recall_text = keras_text = ""
                    if keras_recall is not None:
                        tflite_recall = recall_at_1(
                            lambda paths, run=run, resolution=resolution: run(np.concatenate(list(image_batches(paths, resolution)))),
                            test)
                        recall_text, keras_text = f"{tflite_recall:6.1f}", f"{keras_recall:9.1f}"
                    print(f"{dim:>9} {resolution[0]}×{resolution[1]:<5} {quantize:>8} {size_mb:7.1f} "
                          f"{size_mb / baseline['size']:6.2f} {latency_ms:8.1f} {latency_ms / baseline['latency']:6.2f} "
                          f"{max_abs_diff:9.2e} {cosine:8.5f} {recall_text:>6} {keras_text:>9}", flush=True)
                    path.unlink()

    if not args.skip_recall:
        from netvlad_tf.evaluation.evaluate import evaluate

        print(f"\nRecall cost of smaller whitenings (Keras, {RECALL_RESOLUTION[0]}×{RECALL_RESOLUTION[1]}, "
              "Nordland places 1250–1599):")
        print(f"{'descriptor':>22} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
        variants = {f"pooled {model.pooling.output.shape[-1]}-D": model.pooled_model,
                    "whitened 512-D": models[512], "whitened 256-D": models[256]}
        for name, variant in variants.items():
            recall = evaluate(variant, test, ns=(1, 5, 10), image_size=RECALL_RESOLUTION, batch_size=16,
                              verbose=False).recall
            print(f"{name:>22} {100 * recall[1]:6.1f} {100 * recall[5]:6.1f} {100 * recall[10]:6.1f}", flush=True)


if __name__ == "__main__":
    main()
