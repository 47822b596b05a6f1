"""The demo on the bundled Nordland images: NetVLAD vs MAC vs raw pixels, summer → winter."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from netvlad_tf.clustering import initialize_clusters
from netvlad_tf.data import read_csv_dataset
from netvlad_tf.data.geo_dataset import EVAL_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.data.images import image_batches
from netvlad_tf.embedding import embed_images
from netvlad_tf.evaluation import pixel_descriptors, recall_at_n
from netvlad_tf.evaluation.plots import plot_recall_curves
from netvlad_tf.evaluation.report import format_recall_table
from netvlad_tf.model import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.pooling import MACPooling
from netvlad_tf.retrieval import FaissFlatIndex
from netvlad_tf.sample_data import nordland_csv
from netvlad_tf.staging import atomic_directory
from netvlad_tf.whitening import MAX_WHITENING_SAMPLES, fit_pca_whitening

DEMO_NS = (1, 5, 10)
# Nordland images are 64×32; VGG16 needs more pixels to give a useful map (stride 16).
FULL_IMAGE_SIZE = (128, 256)
QUICK_IMAGE_SIZE = (64, 128)


def run_demo(
    output_dir,
    weights: str | None = None,
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict:
    """Builds NetVLAD on VGG16, initialises it on the training stretch of the route, and
    compares it with MAC pooling and raw pixels on the evaluation stretch.

    Writes `output_dir/model.keras`, `results.json` and `recall_curves.png`; the folder
    appears only once everything is written.

    Args:
        output_dir: a new folder for the results.
        weights: VGG16 weights: `None` (random), `"imagenet"` (downloads) or a file path.
        quick: a small run (fewer images, smaller images, 16 clusters) for CI.
        seed: makes the run repeatable.
        overwrite: replace an existing `output_dir`.

    Returns:
        The content of `results.json`.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; choose another --output or pass --overwrite.")
    keras.utils.set_random_seed(seed)
    train = read_csv_dataset(nordland_csv("train"))
    test = read_csv_dataset(nordland_csv("test"))
    image_size = QUICK_IMAGE_SIZE if quick else FULL_IMAGE_SIZE
    num_clusters, whitening_dim = (16, 64) if quick else (64, 256)
    train_database = train.database_paths[::4] if quick else train.database_paths
    if quick:
        test = _every_other_place(test)

    model = build_netvlad_model(weights=weights, num_clusters=num_clusters, whitening_dim=whitening_dim)
    _say(verbose, f"Clustering local descriptors of {len(train_database)} summer images (k-means, K={num_clusters})")
    initialize_clusters(
        model.pooling,
        model.backbone,
        image_batches(train_database, image_size, batch_size=16),
        num_descriptors=50 * len(train_database),
        descriptors_per_image=50,
        seed=seed,
    )
    _say(verbose, f"Learning PCA whitening to {whitening_dim}-D")
    model.set_whitening(
        fit_pca_whitening(
            embed_images(model.pooled_model, train_database[:MAX_WHITENING_SAMPLES], image_size, batch_size=16, verbose=verbose),
            whitening_dim,
        )
    )

    _say(verbose, f"Evaluating on {test}: summer database, winter queries")
    both = _netvlad_and_mac(model)
    descriptors = {
        role: dict(zip(("netvlad", "mac"), embed_images(both, paths, image_size, batch_size=16, verbose=verbose)))
        for role, paths in (("database", test.database_paths), ("query", test.query_paths))
    }
    for role, paths in (("database", test.database_paths), ("query", test.query_paths)):
        descriptors[role]["pixels"] = pixel_descriptors(paths)
    positives = test.positives_within(EVAL_POSITIVE_RADIUS_M)
    recalls = {
        method: _recall(descriptors["database"][method], descriptors["query"][method], positives)
        for method in ("netvlad", "mac", "pixels")
    }
    results = {
        "recall": {method: {str(n): value for n, value in curve.items()} for method, curve in recalls.items()},
        "num_queries": test.num_queries,
        "num_database": test.num_database,
        "positive_radius_m": EVAL_POSITIVE_RADIUS_M,
        "weights": str(weights),
        "quick": quick,
        "seed": seed,
        "image_size": list(image_size),
        "num_clusters": num_clusters,
        "whitening_dim": whitening_dim,
    }
    _write_outputs(output_dir, overwrite, model, results, recalls)
    if verbose:
        print(format_recall_table(recalls))
        print(f"Wrote {output_dir}/model.keras, results.json, recall_curves.png")
    return results


def _netvlad_and_mac(model: PlaceRecognitionModel) -> keras.Model:
    """One backbone pass feeding both the NetVLAD head and MAC pooling."""
    images = keras.Input((None, None, 3), name="images")
    features = model.backbone(images)
    netvlad = model.get_layer("whitening_l2")(model.get_layer("whitening")(model.pooling(features)))
    return keras.Model(images, [netvlad, MACPooling(name="mac")(features)])


def _recall(database, queries, positives) -> dict[int, float]:
    index = FaissFlatIndex(database.shape[1])
    index.add(database)
    _, ranked = index.search(queries, max(DEMO_NS))
    return recall_at_n(ranked, positives, DEMO_NS)


def _every_other_place(dataset: GeoDataset) -> GeoDataset:
    return GeoDataset(
        name=f"{dataset.name}_quick",
        database_paths=dataset.database_paths,
        database_utm=dataset.database_utm,
        query_paths=dataset.query_paths[::2],
        query_utm=dataset.query_utm[::2],
    )


def _write_outputs(output_dir: Path, overwrite: bool, model, results: dict, recalls) -> None:
    with atomic_directory(output_dir, overwrite) as staging:
        model.save(staging / "model.keras")
        (staging / "results.json").write_text(json.dumps(results, indent=2))
        plot_recall_curves(recalls, staging / "recall_curves.png", title="Nordland summer → winter")


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, flush=True)

