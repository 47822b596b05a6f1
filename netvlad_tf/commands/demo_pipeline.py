"""The demo on the bundled Nordland images: NetVLAD trained with the paper's loss and mining
against MAC pooling and raw pixels, summer database → winter queries."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data import GeoDataset, read_csv_dataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.evaluation.evaluate import evaluate
from netvlad_tf.evaluation.output import write_evaluation
from netvlad_tf.evaluation.plots import plot_precision_recall, plot_recall_curves
from netvlad_tf.evaluation.report import format_precision_recall_table, format_recall_table
from netvlad_tf.export import export_tflite, verify_tflite
from netvlad_tf.initialization.clustering import initialize_clusters
from netvlad_tf.initialization.learned_whitening import with_learned_whitening
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.models.model import build_netvlad_model
from netvlad_tf.sample_data import nordland_csv
from netvlad_tf.training import train

DEMO_NS = (1, 5, 10)
# Nordland is a train route driven twice: sequences of consecutive frames (summer and winter in
# their row order) are where it gains.
DEMO_SEQUENCE_LENGTHS = (3, 5, 10)
METHODS = ("netvlad", "netvlad_whitened", "netvlad_untrained", "mac", "pixels")
# Nordland images are 64×32; a stride-16 backbone needs them upsampled to give a map.
IMAGE_SIZES = {"efficientnet_lite0": (128, 256), "vgg16": (64, 128)}


def _settings(quick: bool) -> dict:
    if quick:
        return {"train_places": 120, "test_places": 120, "cluster_images": 60, "num_clusters": 16,
                "whitening_dim": 32, "steps": 6, "epochs": 1, "num_negatives": 3,
                "num_sampled_negatives": 100}
    return {"train_places": None, "test_places": None, "cluster_images": 200, "num_clusters": 64,
            "whitening_dim": 1024, "steps": 80, "epochs": 2, "num_negatives": 5,
            "num_sampled_negatives": 500}


def run_demo(
    output_dir,
    backbone: str = "efficientnet_lite0",
    weights: str | None = "imagenet",
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict:
    """Initialises NetVLAD by k-means, trains it with the paper's ranking loss and
    hard-negative mining on one stretch of the route, and compares it — as trained, with shrinkage
    PCA whitening learned on the summer (database) images of both stretches, and untrained — with
    MAC pooling and raw pixels
    on another stretch (Recall@1/5/10, positives within 25 m).

    Every method is also measured on sequences of 3, 5 and 10 frames and by the precision–recall
    of accepting its best match (area, recall at 100 % precision, the threshold for 99 %).

    Writes `model.keras` (the trained model, no whitening), `model_whitened.keras` (with the
    whitening: cut it with `--dims`), its TFLite export
    `model_int8.tflite` (full int8, calibrated on the bundled training images at the
    demo's resolution, checked against the Keras model), `results.json`,
    `recall_curves.png`, `netvlad_evaluation/gallery.png` and the training run (`training/`,
    with TensorBoard logs) into `output_dir`, which appears only when all is written.

    Args:
        output_dir: a new folder for the results.
        backbone: `"efficientnet_lite0"` (ImageNet weights bundled, works offline) or
            `"vgg16"` (the paper's; ImageNet weights download or come from a file).
        weights: the backbone's weights: `"imagenet"`, `None` (random) or a file path.
        quick: a small run (about a minute) for smoke tests and CI.
        seed: makes the run repeatable.
        overwrite: replace an existing `output_dir`.

    Returns:
        The content of `results.json`.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; choose another --output or pass --overwrite.")
    if backbone not in IMAGE_SIZES:
        raise ValueError(f"The demo runs on {sorted(IMAGE_SIZES)}, not {backbone!r}.")
    image_size = IMAGE_SIZES[backbone]
    settings = _settings(quick)
    keras.utils.set_random_seed(seed)
    train_data = _first_places(read_csv_dataset(nordland_csv("train")), settings["train_places"])
    test_data = _first_places(read_csv_dataset(nordland_csv("test")), settings["test_places"])

    def measure(model, baseline=None):
        return evaluate(model, test_data, ns=DEMO_NS, baseline=baseline, image_size=image_size,
                        batch_size=16, sequence_lengths=DEMO_SEQUENCE_LENGTHS, verbose=False)

    model = build_netvlad_model(backbone=backbone, weights=weights, num_clusters=settings["num_clusters"])
    cluster_count = min(settings["cluster_images"], train_data.num_database)
    _say(verbose, f"1/5 k-means of {backbone} local descriptors from about {cluster_count} summer images "
                  f"(K={settings['num_clusters']})")
    initialize_clusters(model, train_data.database_paths, num_images=settings["cluster_images"], image_size=image_size,
                        num_descriptors=50 * cluster_count, descriptors_per_image=50, seed=seed, verbose=verbose)
    _say(verbose, f"2/5 baselines on {test_data}")
    results = {"mac": measure(model.with_pooling("mac")), "pixels": measure(None, "pixels"),
               "netvlad_untrained": measure(model)}

    with atomic_directory(output_dir, overwrite) as staging:
        _say(verbose, f"3/5 training on {train_data} (ranking loss, hard-negative mining)")
        run = train(model, train_data, image_size, staging / "training", epochs=settings["epochs"],
                    steps_per_epoch=settings["steps"], num_negatives=settings["num_negatives"],
                    num_sampled_negatives=settings["num_sampled_negatives"], refresh_every=10**9,
                    seed=seed, verbose=2 if verbose else 0)
        _say(verbose, "4/5 evaluating the trained model, then with shrinkage PCA whitening to "
                      f"{settings['whitening_dim']}-D learned on the summer images of both stretches")
        results["netvlad"] = measure(model)
        # Whitening needs more images than dimensions: it learns from the training stretch's
        # database and the database being searched (summer images only; no query is used).
        whitening_paths = train_data.database_paths + test_data.database_paths
        whitened = with_learned_whitening(model, whitening_paths, settings["whitening_dim"],
                                          image_size, batch_size=16, verbose=verbose)
        results["netvlad_whitened"] = measure(whitened)
        model.save(staging / "model.keras")
        whitened.save(staging / "model_whitened.keras")
        _say(verbose, "5/5 exporting the trained model to TFLite (full int8, the phone default)")
        calibration_paths = evenly_spaced(train_data.database_paths, 64)
        calibration = list(np.concatenate(list(image_batches(calibration_paths, image_size, batch_size=16))))
        tflite_path = export_tflite(model, staging / "model_int8.tflite", "int8", image_size, calibration)
        check_images = np.concatenate(list(image_batches(test_data.query_paths[:8], image_size)))
        tflite_report = verify_tflite(tflite_path, model, check_images, "int8")
        recalls = {name: results[name].recall for name in METHODS}
        summary = {
            "recall": {name: {str(n): value for n, value in curve.items()} for name, curve in recalls.items()},
            "sequence_recall": {name: {str(length): {str(n): value for n, value in ranking.recall.items()}
                                       for length, ranking in results[name].sequences.items()} for name in METHODS},
            "precision_recall": {name: results[name].precision_recall.summary() for name in METHODS},
            "num_queries": int(len(results["netvlad"].query_indices)),
            "num_database": test_data.num_database,
            "positive_radius_m": 25.0,
            "training_loss": run.history["loss"],
            "tflite": {key: value for key, value in tflite_report.as_dict().items() if key != "path"},
            "settings": {**settings, "backbone": backbone, "weights": str(weights), "quick": quick, "seed": seed,
                         "image_size": list(image_size)},
        }
        (staging / "results.json").write_text(json.dumps(summary, indent=2))
        plot_recall_curves(recalls, staging / "recall_curves.png", title="Nordland summer → winter")
        plot_precision_recall({name: results[name].precision_recall for name in METHODS},
                              staging / "precision_recall.png", title="Nordland summer → winter: best match accepted")
        write_evaluation(results["netvlad"], test_data, staging / "netvlad_evaluation", "netvlad", model=model,
                         image_size=image_size)
    if verbose:
        print(format_recall_table(recalls))
        print()
        print(format_recall_table({f"{name}, sequences of {length}": ranking.recall for name in ("netvlad_whitened", "pixels")
                                   for length, ranking in results[name].sequences.items()}))
        print()
        print(format_precision_recall_table({name: results[name].precision_recall for name in METHODS}))
        print(tflite_report.line())
        print(f"Wrote {output_dir}: model.keras, model_whitened.keras, model_int8.tflite, results.json, "
              "recall_curves.png, precision_recall.png, netvlad_evaluation/ (gallery, soft assignment), training/")
    return summary


def _first_places(dataset: GeoDataset, count: int | None) -> GeoDataset:
    if count is None:
        return dataset
    return dataset.select(np.arange(min(count, dataset.num_database)), np.arange(min(count, dataset.num_queries)),
                          name=f"{dataset.name}_first{count}")


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)
