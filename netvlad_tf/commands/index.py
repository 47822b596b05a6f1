"""`netvlad-tf index`: build a searchable index of geotagged images."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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
from netvlad_tf.database.place_index import PlaceIndex
from netvlad_tf.evaluation.output import read_threshold
from netvlad_tf.io.atomic_writes import refuse_existing
from netvlad_tf.models.model_files import open_model
from netvlad_tf.retrieval import INDEX_KINDS

# The index kinds with inverted lists (`--num_lists`, `--on_disk`, parts built by Ray tasks).
IVF_KINDS = ("ivfpq", "ivfsq8")
SUMMARY = "Index database images (a dataset, or a descriptor folder from `embed`) for `netvlad-tf query`."
EXAMPLE = ("netvlad-tf index --model=model.keras --dataset=my_photos.csv --output=index_dir\n"
           "  netvlad-tf index --descriptors=city_descriptors --index=ivfsq8 --on_disk --output=index_dir")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command's flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (with --dataset).", flag_values=fv)
    define_dataset_flags(fv)
    define_dataset_location_flags(fv)
    flags.DEFINE_string("descriptors", None, "A descriptor folder made by `netvlad-tf embed` (instead of "
                        "--model and --dataset).", flag_values=fv)
    flags.DEFINE_string("output", None, "New index folder (required unless --update).", flag_values=fv)
    flags.DEFINE_string("update", None, "With --descriptors: an index built from that folder, to which the rows "
                        "appended since are added (instead of --output; no rebuild).", flag_values=fv)
    flags.DEFINE_enum("index", "flat", sorted(INDEX_KINDS), "Search backend (ivfpq/hnsw for millions of images; "
                      "ivfsq8 for 4096-D descriptors).", flag_values=fv)
    flags.DEFINE_integer("num_lists", None, "IVF kinds: inverted lists (default 4·√N).", flag_values=fv)
    flags.DEFINE_boolean("on_disk", False, "IVF kinds: keep the inverted lists on disk (index.ivfdata) "
                         "instead of RAM, for indices larger than memory.", flag_values=fv)
    flags.DEFINE_integer("num_workers", 0, "IVF kinds with --descriptors: build the per-shard parts as "
                         "Ray tasks, this many at a time.", flag_values=fv)
    flags.DEFINE_string("ray_address", None, "An existing Ray cluster for --num_workers.", flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    define_dims_flag(fv)
    define_precision_flag(fv, None)
    flags.DEFINE_float("threshold", None, "The similarity a best match needs to count as \"seen before\", kept with "
                       "the index (what `netvlad-tf serve` decides by).", flag_values=fv)
    flags.DEFINE_string("threshold_from", None, "Take --threshold from an evaluation's results.json "
                        "(threshold_at_99_precision of `netvlad-tf evaluate` on data like your queries).", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def _threshold(fv: flags.FlagValues) -> tuple[float, float, str] | None:
    """`(similarity, precision, source)` from --threshold or --threshold_from, or None."""
    if fv.threshold is not None and fv.threshold_from is not None:
        raise ValueError("Give --threshold or --threshold_from, not both.")
    if fv.threshold_from is not None:
        similarity, source = read_threshold(fv.threshold_from)
        return similarity, 0.99, source
    if fv.threshold is not None:
        if not -1 <= fv.threshold <= 1:
            raise ValueError(f"--threshold is a cosine similarity in [-1, 1], got {fv.threshold:g}.")
        return fv.threshold, 0.99, "given with --threshold"
    return None


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    if fv.update is not None:
        return _update(fv)
    require_flags(fv, "output")
    output = Path(fv.output)
    refuse_existing(output, fv.overwrite)
    threshold = _threshold(fv)
    if fv.num_lists and fv.index not in IVF_KINDS:
        raise ValueError(f"--num_lists sets the inverted lists of {' and '.join(IVF_KINDS)}, not of --index={fv.index}.")
    parameters = {"num_lists": fv.num_lists} if fv.num_lists else {}
    if fv.descriptors is not None:
        if fv.model is not None or fv.dataset is not None:
            raise ValueError("Give either --descriptors or --model with --dataset, not both.")
        if fv.dims is not None or fv.precision is not None:
            raise ValueError("A descriptor folder's dimension and precision are set when it is embedded: use "
                             "`netvlad-tf embed --dims/--precision`.")
        output.parent.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
        try:
            places = PlaceIndex.from_descriptors(fv.descriptors, index_kind=fv.index, work_dir=work_dir,
                                                 on_disk=fv.on_disk, num_workers=fv.num_workers,
                                                 ray_address=fv.ray_address, **parameters)
            if threshold is not None:
                places.set_threshold(*threshold)
            places.save(output, fv.overwrite)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    else:
        require_flags(fv, "model", "dataset")
        if fv.on_disk or fv.num_workers:
            raise ValueError("--on_disk and --num_workers build from --descriptors; run `netvlad-tf embed` first.")
        dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split, require_queries=False)
        model = open_model(fv.model, fv.dims)
        image_size, max_side = image_policy(fv)
        places = PlaceIndex.build(model, dataset, index_kind=fv.index, image_size=image_size, max_side=max_side,
                                  batch_size=fv.batch_size, precision=fv.precision or "float32", **parameters)
        if threshold is not None:
            places.set_threshold(*threshold)
        places.save(output, fv.overwrite)
    print(f"Indexed {places.index.size} images into {output}")
    return 0


def _update(fv: flags.FlagValues) -> int:
    """`--update`: adds a descriptor folder's appended rows to the index built from it."""
    require_flags(fv, "descriptors")
    given = [name for name in ("output", "model", "dataset", "dims", "num_lists", "precision", "threshold",
                               "threshold_from") if fv[name].value is not None]
    given += [name for name in ("on_disk", "num_workers") if fv[name].value]
    if given:
        raise ValueError(f"--update adds to an existing index as it was built; drop --{', --'.join(given)}.")
    places = PlaceIndex.load(fv.update)
    before = places.index.size
    added = places.add_appended(fv.descriptors)
    places.save(fv.update, overwrite=True)
    print(f"Added {added} images to {fv.update} ({before} before, {places.index.size} now)")
    advice = places.index.retrain_advice()
    if advice:
        print(advice)
    return 0
