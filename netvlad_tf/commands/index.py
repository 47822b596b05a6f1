"""`netvlad-tf index`: build a searchable index of geotagged images."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.common import define_image_size_flag, image_policy
from netvlad_tf.data.csv_dataset import read_csv_dataset
from netvlad_tf.model_files import load_model_file
from netvlad_tf.place_index import PlaceIndex
from netvlad_tf.retrieval import INDEX_KINDS

SUMMARY = "Index the database images of a dataset CSV for `netvlad-tf query`."
EXAMPLE = "netvlad-tf index --model=model.keras --dataset=my_photos.csv --output=index_dir"


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (required).", flag_values=fv)
    flags.DEFINE_string("dataset", None, "CSV of geotagged images; its database rows are indexed (required).", flag_values=fv)
    flags.DEFINE_string("output", None, "New index folder (required).", flag_values=fv)
    flags.DEFINE_enum("index", "flat", sorted(INDEX_KINDS), "Search backend (ivfpq/hnsw for millions of images; ivfsq8 for 4096-D descriptors).", flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    missing = [name for name in ("model", "dataset", "output") if getattr(fv, name) is None]
    if missing:
        raise ValueError(f"Missing {', '.join('--' + m for m in missing)}.")
    dataset = read_csv_dataset(fv.dataset, require_queries=False)
    model = load_model_file(fv.model, place_model=False)
    image_size, max_side = image_policy(fv)
    places = PlaceIndex.build(model, dataset, fv.index, image_size, max_side, fv.batch_size)
    places.save(fv.output, fv.overwrite)
    print(f"Indexed {places.index.size} images into {fv.output}")
    return 0
