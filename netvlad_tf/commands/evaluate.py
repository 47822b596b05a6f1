"""`netvlad-tf evaluate`: Recall@N of a model (or a baseline) on a dataset."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import (
    define_dataset_flags,
    define_dataset_location_flags,
    define_image_size_flag,
    image_policy,
    require_flags,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.evaluation.evaluate import PIXELS, evaluate
from netvlad_tf.evaluation.output import write_evaluation
from netvlad_tf.evaluation.report import format_recall_table
from netvlad_tf.models.model_files import load_model_file
from netvlad_tf.retrieval import INDEX_KINDS

# Poolings the paper compares NetVLAD with, put on the model's backbone.
BASELINE_POOLINGS = ("mac", "avg", "gem")
# `--pooling` for the model as it is.
AS_IS = "model"
SUMMARY = "Recall@N at 25 m of a model, or of a baseline pooling, with plots."
EXAMPLE = (
    "netvlad-tf evaluate --model=runs/pitts30k/final.keras --dataset=pitts30k_test.mat "
    "--image_root=Pittsburgh --output=eval_pitts30k\n"
    "  netvlad-tf evaluate --model=model.keras --pooling=mac --dataset=data.csv --output=eval_mac"
)


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (not needed for --pooling=pixels).", flag_values=fv)
    define_dataset_flags(fv, "dataset", "Evaluation data (required). ")
    define_dataset_location_flags(fv)
    flags.DEFINE_string("output", None, "New folder for results.json and the plots (required).", flag_values=fv)
    flags.DEFINE_enum("pooling", AS_IS, [AS_IS, *BASELINE_POOLINGS, PIXELS],
                      "model: the model as it is (results labelled with its pooling); mac/avg/gem: that pooling on the model's "
                      "backbone; pixels: raw thumbnails.", flag_values=fv)
    flags.DEFINE_list("ns", ["1", "5", "10", "20"], "The N of Recall@N.", flag_values=fv)
    flags.DEFINE_float("radius", 25.0, "A retrieval within this many metres is correct.", flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    flags.DEFINE_enum("index", "flat", sorted(INDEX_KINDS), "Search backend.", flag_values=fv)
    flags.DEFINE_string("cache_dir", None, "Keep descriptors here and reuse them.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "dataset", "output")
    if fv.model is None and fv.pooling != "pixels":
        raise ValueError(f"--pooling={fv.pooling} needs --model; only --pooling=pixels works without one.")
    try:
        ns = [int(n) for n in fv.ns]
    except ValueError:
        raise ValueError(f"--ns must be integers such as 1,5,10,20; got {fv.ns}.") from None
    image_size, max_side = image_policy(fv)
    dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split)
    model = load_model_file(fv.model, place_model=fv.pooling != AS_IS) if fv.model else None
    if fv.pooling in BASELINE_POOLINGS:
        model = model.with_pooling(fv.pooling)
    label = fv.pooling
    if fv.pooling == AS_IS:
        pooling = getattr(model, "pooling", None)
        label = pooling.name if pooling is not None else model.name
    result = evaluate(
        model, dataset, ns=ns, radius_m=fv.radius, pooling=PIXELS if fv.pooling == PIXELS else None,
        image_size=image_size,
        max_side=max_side, batch_size=fv.batch_size, index_kind=fv.index, cache_dir=fv.cache_dir,
    )
    output = write_evaluation(result, dataset, fv.output, label, fv.overwrite)
    print(format_recall_table({label: result.recall, **result.recall_by_condition}))
    print(f"{len(result.query_indices)} queries ({result.num_dropped} without a positive left out), "
          f"{result.num_database} database images.")
    print(f"Wrote {output}/results.json, recall_curve.png, gallery.png")
    return 0
