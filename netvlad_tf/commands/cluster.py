"""`netvlad-tf cluster`: initialise a model's NetVLAD from k-means of a dataset's descriptors."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import (
    define_dataset_flags,
    define_dataset_location_flags,
    define_image_size_flag,
    image_policy,
    none_or_text,
    require_flags,
    require_keras_output,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.initialization.clustering import (
    DEFAULT_DESCRIPTORS_PER_IMAGE,
    DEFAULT_NUM_DESCRIPTORS,
    initialize_clusters,
)
from netvlad_tf.io.atomic_writes import refuse_existing, save_model_atomically
from netvlad_tf.models.model import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.models.model_files import open_model

SUMMARY = "Initialise NetVLAD's clusters and assignment by k-means (the paper's initialisation)."
EXAMPLE = ("netvlad-tf cluster --dataset=pitts30k_train.mat --image_root=Pittsburgh --weights=imagenet --output=init.keras\n"
           "  netvlad-tf cluster --preset=efficientnet_lite0_imagenet --dataset=route.csv --output=lite0_init.keras")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "A .keras model to initialise; unset builds --preset, or VGG16 + NetVLAD.",
                        flag_values=fv)
    flags.DEFINE_string("preset", None, "Build this preset to initialise (e.g. efficientnet_lite0_imagenet) with "
                        "--num_clusters clusters; unset builds VGG16 + NetVLAD with --weights.", flag_values=fv)
    flags.DEFINE_string("weights", "imagenet", "Backbone weights when building: imagenet, none or a path.", flag_values=fv)
    flags.DEFINE_integer("num_clusters", 64, "K when building.", flag_values=fv)
    define_dataset_flags(fv, "dataset", "Images to cluster (required; database images are used). ")
    define_dataset_location_flags(fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("cluster_images", 500, "Database images to sample descriptors from.", flag_values=fv)
    flags.DEFINE_integer("num_descriptors", DEFAULT_NUM_DESCRIPTORS, "Descriptors for k-means.", flag_values=fv)
    flags.DEFINE_integer("descriptors_per_image", DEFAULT_DESCRIPTORS_PER_IMAGE, "Descriptors per image.", flag_values=fv)
    flags.DEFINE_enum("version", "v1", ["v1", "v2"], "Initialisation: v1 (released models) or v2 (paper).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --output (also --output = --model).", flag_values=fv)
    flags.DEFINE_string("output", None, "Where to save the initialised .keras model (required).", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "dataset", "output")
    require_keras_output(fv.output)
    refuse_existing(fv.output, fv.overwrite)
    if fv.model and fv.preset:
        raise ValueError("Give --model (a file to initialise) or --preset (a model to build), not both.")
    if fv.model:
        model = open_model(fv.model, netvlad=True)
    elif fv.preset:
        model = PlaceRecognitionModel.from_preset(fv.preset, num_clusters=fv.num_clusters)
    else:
        weights = none_or_text(fv.weights)
        model = build_netvlad_model(weights=weights, num_clusters=fv.num_clusters)
    dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split, require_queries=False)
    image_size, max_side = image_policy(fv)
    alpha = initialize_clusters(model, dataset.database_paths, num_images=fv.cluster_images, image_size=image_size,
                                max_side=max_side, num_descriptors=fv.num_descriptors,
                                descriptors_per_image=fv.descriptors_per_image, version=fv.version, seed=fv.seed)
    save_model_atomically(model, fv.output, fv.overwrite)
    print(f"Clustered descriptors of {min(fv.cluster_images, dataset.num_database)} images into {model.pooling.num_clusters} clusters "
          f"(alpha {alpha:.2f}); saved {fv.output}")
    return 0
