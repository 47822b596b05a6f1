"""`netvlad-tf evaluate`: Recall@N of a model (or a baseline) on a dataset."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import (
    NO_RERANK,
    define_dataset_flags,
    define_dataset_location_flags,
    define_dims_flag,
    define_image_size_flag,
    define_precision_flag,
    define_rerank_flags,
    image_policy,
    parse_numbers,
    require_flags,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.evaluation.evaluate import PIXELS, evaluate
from netvlad_tf.evaluation.output import rerank_label, sequence_label, write_evaluation
from netvlad_tf.evaluation.report import format_precision_recall_table, format_recall_table
from netvlad_tf.models.model_files import open_model
from netvlad_tf.retrieval import INDEX_KINDS

# Poolings the paper compares NetVLAD with, put on the model's backbone.
BASELINE_POOLINGS = ("mac", "avg", "gem")
# `--baseline` for the model as it is.
AS_IS = "model"
SUMMARY = "Recall@N at 25 m and precision–recall of a model or a baseline, single images and sequences, with plots."
EXAMPLE = (
    "netvlad-tf evaluate --model=runs/pitts30k/final.keras --dataset=pitts30k_test.mat "
    "--image_root=Pittsburgh --output=eval_pitts30k\n"
    "  netvlad-tf evaluate --model=model.keras --baseline=mac --dataset=data.csv --output=eval_mac\n"
    "  netvlad-tf evaluate --model=model.keras --dataset=route.csv --sequence_length=3,5,10 --dims=256 --output=eval_seq\n"
    "  netvlad-tf evaluate --model=model.keras --dataset=route.csv --rerank=speed --rerank_top_k=100 --output=eval_rerank"
)


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (not needed for --baseline=pixels).", flag_values=fv)
    define_dataset_flags(fv, "dataset", "Evaluation data (required). ")
    define_dataset_location_flags(fv)
    flags.DEFINE_string("output", None, "New folder for results.json and the plots (required).", flag_values=fv)
    flags.DEFINE_enum("baseline", AS_IS, [AS_IS, *BASELINE_POOLINGS, PIXELS],
                      "model: the model as it is (results labelled with its pooling); mac/avg/gem: that pooling on the model's "
                      "backbone (the paper's baselines); pixels: raw thumbnails.", flag_values=fv)
    flags.DEFINE_list("ns", ["1", "5", "10", "20"], "The N of Recall@N.", flag_values=fv)
    flags.DEFINE_float("radius", 25.0, "A retrieval within this many metres is correct.", flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    flags.DEFINE_enum("index", "flat", sorted(INDEX_KINDS), "Search backend.", flag_values=fv)
    flags.DEFINE_string("stored_descriptors", None, "A folder to keep descriptors in and reuse them from.",
                        flag_values=fv)
    flags.DEFINE_list("sequence_length", [], "Also match sequences of L consecutive frames (e.g. 3,5,10), each "
                      "split in capture order (row order, or a frame/timestamp column).", flag_values=fv)
    flags.DEFINE_list("sequence_speeds", ["1"], "Relative speeds of the database traversal searched by sequence "
                      "matching (e.g. 0.8,1,1.25).", flag_values=fv)
    define_dims_flag(fv)
    define_precision_flag(fv)
    flags.DEFINE_boolean("query_galleries", False, "Also write one gallery per query: queries/<row>.png.",
                         flag_values=fv)
    flags.DEFINE_boolean("save_only_wrong", False, "The galleries show only queries whose best match is wrong.",
                         flag_values=fv)
    define_rerank_flags(fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "dataset", "output")
    if fv.model is None and fv.baseline != "pixels":
        raise ValueError(f"--baseline={fv.baseline} needs --model; only --baseline=pixels works without one.")
    ns = parse_numbers(fv.ns, "ns", int, "1,5,10,20")
    sequence_lengths = parse_numbers(fv.sequence_length, "sequence_length", int, "3,5,10")
    speeds = parse_numbers(fv.sequence_speeds, "sequence_speeds", float, "0.8,1,1.25")
    if fv.rerank != NO_RERANK and fv.baseline != AS_IS:
        raise ValueError(f"--rerank matches NetVLAD's patch descriptors; --baseline={fv.baseline} has none.")
    if fv.dims is not None and fv.baseline != AS_IS:
        raise ValueError(f"--dims crops the model's own whitened descriptor; --baseline={fv.baseline} has none.")
    image_size, max_side = image_policy(fv)
    dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split)
    # A baseline pooling needs the netvlad_tf model's backbone; the model as it is may be any.
    model = None if fv.model is None else open_model(fv.model, fv.dims, netvlad=fv.baseline != AS_IS)
    if fv.baseline in BASELINE_POOLINGS:
        model = model.with_pooling(fv.baseline)
    label = fv.baseline
    if fv.baseline == AS_IS:
        pooling = getattr(model, "pooling", None)
        label = pooling.name if pooling is not None else model.name
    result = evaluate(
        model, dataset, ns=ns, radius_m=fv.radius, baseline=PIXELS if fv.baseline == PIXELS else None,
        image_size=image_size,
        max_side=max_side, batch_size=fv.batch_size, index_kind=fv.index, stored_descriptors=fv.stored_descriptors,
        sequence_lengths=sequence_lengths, sequence_speeds=speeds, precision=fv.precision,
        rerank=None if fv.rerank == NO_RERANK else fv.rerank, rerank_top_k=fv.rerank_top_k,
    )
    output = write_evaluation(result, dataset, fv.output, label, fv.overwrite, only_wrong=fv.save_only_wrong,
                              model=model, image_size=image_size, max_side=max_side,
                              query_galleries=fv.query_galleries, rerank=None if fv.rerank == NO_RERANK else fv.rerank)
    sequences = {sequence_label(label, length): ranking for length, ranking in result.sequences.items()}
    if result.reranked is not None:  # before and after, side by side
        sequences = {f"{rerank_label(label)} ({fv.rerank})": result.reranked, **sequences}
    print(format_recall_table({label: result.recall, **result.recall_by_condition,
                               **{name: ranking.recall for name, ranking in sequences.items()}}))
    print(f"Recall@N: {len(result.query_indices)} queries with a positive ({result.num_dropped} without one left "
          f"out), {result.num_database} database images.")
    print()
    print(format_precision_recall_table({label: result.precision_recall,
                                         **{name: ranking.precision_recall for name, ranking in sequences.items()}}))
    print(f"Precision-recall of best matches: all {dataset.num_queries} queries, {result.num_dropped} of them "
          "without a positive (a correct rejection when not accepted, a false positive when accepted).")
    print(f"Wrote {output}/: {', '.join(sorted(path.name for path in output.iterdir()))}")
    return 0
