"""`netvlad-tf train`: the paper's weakly supervised training from the shell."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf
from absl import flags

from netvlad_tf.commands.shared_flags import (
    define_dataset_flags,
    define_dataset_location_flags,
    define_image_size_flag,
    define_whitening_flag,
    none_or_text,
    parse_image_size,
    require_flags,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.data.unreadable import drop_unreadable_images
from netvlad_tf.inference.hardware import gpu_names
from netvlad_tf.initialization.clustering import DEFAULT_NUM_DESCRIPTORS, initialize_clusters
from netvlad_tf.initialization.learned_whitening import with_learned_whitening
from netvlad_tf.io.atomic_writes import save_model_atomically
from netvlad_tf.models.model import BACKBONE_DEFAULT, build_netvlad_model
from netvlad_tf.models.model_files import open_model
from netvlad_tf.training import multi_worker_strategy, new_run_dir, train
from netvlad_tf.training.train import BACKUP_DIR, LAST_MODEL_FILE

SUMMARY = "Train NetVLAD from GPS-tagged images with hard-negative mining (the paper's recipe)."
EXAMPLE = (
    "netvlad-tf train --dataset=pitts30k_train.mat --image_root=Pittsburgh "
    "--val_dataset=pitts30k_val.mat --weights=imagenet --output_root=runs\n"
    "  netvlad-tf train --flagfile=training/pitts30k.flags"
)


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    define_dataset_flags(fv, "dataset", "Training data (required). ")
    define_dataset_flags(fv, "val_dataset", "Validation data for Recall@N each epoch. ")
    define_dataset_location_flags(fv)
    define_image_size_flag(fv, "480,640", with_max_side=False)
    flags.DEFINE_string("output_root", "runs", "Each run gets a new folder under this one.", flag_values=fv)
    flags.DEFINE_string("run_name", "netvlad", "Prefix of the run folder name.", flag_values=fv)
    flags.DEFINE_string("resume", None, "Run folder of a killed run to continue.", flag_values=fv)
    flags.DEFINE_string("model", None, "Start from this .keras model instead of building one.", flag_values=fv)
    flags.DEFINE_string("backbone", "vgg16", "Backbone name (see netvlad_tf.backbones.BACKBONES).", flag_values=fv)
    flags.DEFINE_string("weights", "imagenet", "Backbone weights: imagenet, none, or a file path.", flag_values=fv)
    flags.DEFINE_integer("num_clusters", 64, "NetVLAD clusters K.", flag_values=fv)
    flags.DEFINE_string("trainable_from", BACKBONE_DEFAULT, "First trainable backbone layer; "
                        f"'{BACKBONE_DEFAULT}' keeps the backbone's policy (VGG16: block5_conv1), "
                        "'none' trains every layer.", flag_values=fv)
    flags.DEFINE_integer("cluster_images", 500, "Images sampled for the k-means initialisation.", flag_values=fv)
    flags.DEFINE_integer("num_descriptors", DEFAULT_NUM_DESCRIPTORS, "Descriptors clustered by k-means.", flag_values=fv)
    flags.DEFINE_integer("epochs", 30, "Epochs (passes over the training queries).", flag_values=fv)
    flags.DEFINE_float("learning_rate", 1e-3, "Initial SGD learning rate (paper: 1e-3 Pitts30k, 1e-4 others).", flag_values=fv)
    flags.DEFINE_integer("lr_halving_epochs", 5, "Halve the learning rate every this many epochs.", flag_values=fv)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", flag_values=fv)
    flags.DEFINE_float("weight_decay", 1e-3, "Weight decay.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 4, "Tuples per batch.", flag_values=fv)
    flags.DEFINE_integer("num_negatives", 10, "Hard negatives per tuple.", flag_values=fv)
    flags.DEFINE_integer("num_sampled_negatives", 1000, "Random definite negatives scored per query.", flag_values=fv)
    flags.DEFINE_integer("refresh_every", 1000, "Training queries between descriptor-cache refreshes.", flag_values=fv)
    flags.DEFINE_integer("mining_pool", None, "At each refresh embed only this many random database images "
                         "(plus the upcoming queries' positives and remembered negatives) and sample negatives "
                         "from them; unset: every database image (the paper).", flag_values=fv)
    flags.DEFINE_float("margin", 0.1, "Margin m of the ranking loss (squared distances).", flag_values=fv)
    flags.DEFINE_enum("normalization", "violating", ["violating", "all", "none"], "Loss normalisation.", flag_values=fv)
    flags.DEFINE_enum("cache_encoding", "sq8", ["sq8", "float32"], "How the mining cache stores descriptors: sq8 (faiss' "
                      "8-bit scalar quantiser, a quarter of float32) or float32.", flag_values=fv)
    flags.DEFINE_boolean("frozen_features", True, "Compute the frozen backbone layers once per image and store "
                         "their output in the run folder (with --mining_pool: for each refresh's images only); "
                         "steps and cache refreshes then run only the trainable layers (--nofrozen_features "
                         "recomputes them from the images).", flag_values=fv)
    flags.DEFINE_enum("frozen_feature_dtype", "float16", ["float16", "float32"],
                      "Storage of the frozen layers' output.", flag_values=fv)
    flags.DEFINE_enum("strategy", "none", ["none", "mirrored", "multi_worker"], "none: the default device; "
                      "mirrored: tf.distribute.MirroredStrategy over this machine's GPUs (or its CPU), each batch "
                      "split over them; multi_worker: MultiWorkerMirroredStrategy over the processes of the "
                      "cluster in TF_CONFIG, each started with the same flags; the run folder is then "
                      "--output_root/--run_name (no time stamp, the same on every worker; started again, it "
                      "resumes) and only the chief writes it.", flag_values=fv)
    flags.DEFINE_float("frozen_features_budget_gb", None, "The most disk the frozen features may take; unset: "
                       "half the free space. Their size is estimated first and a larger store refused.", flag_values=fv)
    flags.DEFINE_integer("whitening_dim", None, "After training, learn PCA whitening to this size and save final.keras.", flag_values=fv)
    define_whitening_flag(fv)
    flags.DEFINE_boolean("skip_corrupt_images", False, "Scan the images first and skip unreadable ones "
                         "(with a count and a warning) instead of stopping at the first.", flag_values=fv)
    flags.DEFINE_boolean("mixed_precision", False, "Compute in float16 with loss scaling on a GPU, bfloat16 on a CPU "
                         "(weights stay float32).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "dataset")
    if fv.resume and fv.model:
        raise ValueError("--resume continues a run with its own model; drop --model.")
    if fv.resume:
        check_resumable(fv.resume)
    if fv.num_negatives > fv.num_sampled_negatives:
        raise ValueError("--num_negatives cannot exceed --num_sampled_negatives.")
    # Before any other TensorFlow work: collective ops are configured at the program's start.
    strategy = {"none": lambda: None, "mirrored": tf.distribute.MirroredStrategy,
                "multi_worker": multi_worker_strategy}[fv.strategy]()
    run_dir = fv.resume
    if not run_dir and fv.strategy == "multi_worker":  # the same folder on every worker
        run_dir = str(Path(fv.output_root) / fv.run_name)
        if Path(run_dir).is_dir():
            check_resumable(run_dir)
    image_size = parse_image_size(fv.image_size)
    if image_size is None:
        raise ValueError("Training batches tuples of images: set --image_size HEIGHT,WIDTH.")
    keras.utils.set_random_seed(fv.seed)
    if fv.mixed_precision:  # float16 with loss scaling on a GPU, bfloat16 on a CPU
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu_names() else "mixed_bfloat16")
    train_dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, "train")
    val_dataset = open_dataset(fv.val_dataset, fv.image_root, fv.query_root, "val") if fv.val_dataset else None
    if fv.skip_corrupt_images:
        train_dataset, dropped = drop_unreadable_images(train_dataset)
        if val_dataset is not None:
            val_dataset, dropped_val = drop_unreadable_images(val_dataset)
            dropped += dropped_val
        print(f"Skipped {len(dropped)} unreadable images")
    print(f"Training on {train_dataset}" + (f", validating on {val_dataset}" if val_dataset else ""))

    if fv.model:
        model = open_model(fv.model, netvlad=True)
    else:
        weights = none_or_text(fv.weights)
        model = build_netvlad_model(
            backbone=fv.backbone, weights=weights, num_clusters=fv.num_clusters,
            trainable_from=none_or_text(fv.trainable_from),
        )
        print(f"Initialising {fv.num_clusters} clusters from {min(fv.cluster_images, train_dataset.num_database)} "
              "database images")
        initialize_clusters(model, train_dataset.database_paths, num_images=fv.cluster_images, image_size=image_size,
                            num_descriptors=fv.num_descriptors, seed=fv.seed)
    if not run_dir:
        run_dir = new_run_dir(fv.output_root, fv.run_name)
    print(f"Writing to {run_dir}")
    result = train(
        model, train_dataset, image_size, run_dir, val_dataset=val_dataset, epochs=fv.epochs,
        learning_rate=fv.learning_rate, lr_halving_epochs=fv.lr_halving_epochs, momentum=fv.momentum,
        weight_decay=fv.weight_decay, batch_size=fv.batch_size, num_negatives=fv.num_negatives,
        num_sampled_negatives=fv.num_sampled_negatives, refresh_every=fv.refresh_every,
        mining_pool=fv.mining_pool, margin=fv.margin, normalization=fv.normalization, cache_encoding=fv.cache_encoding,
        frozen_features=fv.frozen_features, frozen_feature_dtype=fv.frozen_feature_dtype,
        frozen_feature_budget_gb=fv.frozen_features_budget_gb,
        strategy=strategy, seed=fv.seed,
    )
    if fv.whitening_dim and result.chief:
        whitened = with_learned_whitening(model, train_dataset.database_paths, fv.whitening_dim, image_size,
                                          method=fv.whitening)
        save_model_atomically(whitened, result.run_dir / "final.keras", overwrite=True)
        print(f"Saved {result.run_dir / 'final.keras'} with {fv.whitening_dim}-D whitening")
    return 0



def check_resumable(run_dir: str) -> None:
    """Refuses a `--resume` folder that does not exist or holds a run that already finished
    (it would otherwise train from scratch, silently)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder.")
    if (folder / LAST_MODEL_FILE).exists() and not (folder / BACKUP_DIR).exists():
        raise ValueError(f"{run_dir}: that run finished (it has {LAST_MODEL_FILE} and no {BACKUP_DIR}/); "
                         f"start a new run (another --run_name), e.g. with --model {folder / LAST_MODEL_FILE}.")
