"""`netvlad-tf embed`: a dataset's images into a resumable folder of descriptor shards."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import (
    define_dataset_flags,
    define_dataset_location_flags,
    define_dims_flag,
    define_image_size_flag,
    define_precision_flag,
    image_policy,
    require_flags,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.database.descriptor_folder import DescriptorFolder
from netvlad_tf.database.embed import DEFAULT_SHARD_SIZE, dataset_rows, embed_database
from netvlad_tf.database.hloc_features import write_hloc_features
from netvlad_tf.database.patch_shards import PATCH_DTYPES
from netvlad_tf.database.shard_writer import DEFAULT_MAX_UNREADABLE, ON_UNREADABLE
from netvlad_tf.database.shards import MISSING_FILE
from netvlad_tf.io.atomic_writes import refuse_existing
from netvlad_tf.reranking.settings import PATCH_SETTINGS

# `--patch_features` value that stores none.
NO_PATCHES = "none"
SUMMARY = "Embed a dataset's images into Parquet descriptor shards (resumable; Ray Data with --num_workers; hloc's .h5)."
EXAMPLE = ("netvlad-tf embed --model=model.keras --dataset=city.csv --output=city_descriptors\n"
           "  netvlad-tf embed --model=model.keras --dataset=city.csv --output=city_descriptors "
           "--num_workers=8 --ray_address=auto")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command's flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (required).", flag_values=fv)
    define_dataset_flags(fv, "dataset", "Required. ")
    define_dataset_location_flags(fv)
    flags.DEFINE_string("output", None, "Descriptor folder to write, or to resume (required).", flag_values=fv)
    flags.DEFINE_enum("images", "database", ["database", "queries"], "Which images of the dataset to embed.",
                      flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    flags.DEFINE_integer("shard_size", DEFAULT_SHARD_SIZE, "Images per shard: the unit of work and of resuming.",
                         flag_values=fv)
    flags.DEFINE_integer("num_workers", 0, "0: embed in this process; N: N Ray Data actors "
                         "(pip install 'netvlad_tf[ray]').", flag_values=fv)
    flags.DEFINE_string("ray_address", None, "An existing Ray cluster (auto, or ray://host:10001); unset "
                        "starts a local Ray.", flag_values=fv)
    flags.DEFINE_float("cpus_per_worker", 1, "Logical CPUs (and TensorFlow threads) per Ray actor.", flag_values=fv)
    flags.DEFINE_float("gpus_per_worker", 0, "GPUs per Ray actor (e.g. 1, or 0.5 to share one).", flag_values=fv)
    define_dims_flag(fv)
    define_precision_flag(fv)
    flags.DEFINE_string("hloc_features", None, "Also write the descriptors as hloc's global-feature file "
                        "(e.g. global-feats-netvlad.h5) for hloc's pairs_from_retrieval.", flag_values=fv)
    flags.DEFINE_string("hloc_image_root", None, "With --hloc_features: names are image paths relative to this "
                        "folder (hloc's image_dir); default: --image_root, else the deepest folder holding every "
                        "image.", flag_values=fv)
    flags.DEFINE_enum("on_unreadable", "skip", list(ON_UNREADABLE), "An image that cannot be read (missing, "
                      "truncated): skip it (its row is kept, marked missing, and listed in missing.csv) or stop.",
                      flag_values=fv)
    flags.DEFINE_float("max_unreadable", DEFAULT_MAX_UNREADABLE, "With --on_unreadable=skip: stop when more than "
                       "this share of one shard's images cannot be read (a lost mount, not bad files).",
                       lower_bound=0, upper_bound=1, flag_values=fv)
    flags.DEFINE_boolean("retry_missing", False, "Read the folder's missing rows again (after fixing their files) "
                         "and embed those that now read.", flag_values=fv)
    flags.DEFINE_enum("patch_features", NO_PATCHES, [NO_PATCHES, *sorted(PATCH_SETTINGS)], "Also store each image's "
                      "Patch-NetVLAD patch descriptors (for `query --rerank` without recomputing them): performance "
                      "(sizes 2, 5, 8; the most disk), speed (size 5, 512 dims) or storage (size 5, 128 dims).",
                      flag_values=fv)
    flags.DEFINE_enum("patch_dtype", "float16", list(PATCH_DTYPES), "Number format of stored patch features.",
                      flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Remove what --output holds and start afresh.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "model", "dataset", "output")
    if fv.num_workers < 0:
        raise ValueError(f"--num_workers must be 0 or more, got {fv.num_workers}.")
    if fv.hloc_features:
        refuse_existing(fv.hloc_features, fv.overwrite)  # before the hours of embedding
    dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split, require_queries=False,
                           check_files=fv.on_unreadable == "stop")
    image_paths, coordinates = dataset_rows(dataset, fv.images)
    image_size, max_side = image_policy(fv)
    folder = embed_database(fv.model, image_paths, coordinates, fv.output, image_size=image_size, max_side=max_side,
                            batch_size=fv.batch_size, shard_size=fv.shard_size, num_workers=fv.num_workers,
                            ray_address=fv.ray_address, cpus_per_worker=fv.cpus_per_worker,
                            gpus_per_worker=fv.gpus_per_worker, overwrite=fv.overwrite, dims=fv.dims,
                            on_unreadable=fv.on_unreadable, max_unreadable=fv.max_unreadable,
                            retry_missing=fv.retry_missing, precision=fv.precision,
                            patch_features=None if fv.patch_features == NO_PATCHES else fv.patch_features,
                            patch_dtype=fv.patch_dtype)
    missing = DescriptorFolder.open(folder).num_missing
    print(f"Embedded {len(image_paths) - missing} of {len(image_paths)} images into {folder}"
          + (f"; {missing} could not be read, listed in {folder / MISSING_FILE} (fix them, then rerun "
             "with --retry_missing)" if missing else ""))
    if fv.hloc_features:
        write_hloc_features(folder, fv.hloc_features, fv.hloc_image_root or fv.image_root, fv.overwrite)
        print(f"Wrote hloc's global features to {fv.hloc_features}")
    return 0
