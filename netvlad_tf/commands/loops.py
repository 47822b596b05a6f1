"""`netvlad-tf loops`: loop closure over an image stream, written as a CSV of revisits."""

from __future__ import annotations

import csv

from absl import flags

from netvlad_tf.commands.shared_flags import (
    NO_RERANK,
    define_dims_flag,
    define_image_size_flag,
    image_policy,
    require_flags,
)
from netvlad_tf.data.image_stream import read_image_stream
from netvlad_tf.decisions.loop_detector import DEFAULT_CANDIDATES, DEFAULT_VERIFY_THRESHOLD, LoopDetector
from netvlad_tf.io.atomic_writes import atomic_file, refuse_existing
from netvlad_tf.models.model_files import open_model
from netvlad_tf.reranking.settings import PATCH_SETTINGS

SUMMARY = "Find the revisits (loop closures) in a stream of frames: frame, matched_frame, similarity."
EXAMPLE = ("netvlad-tf loops --model=model.keras --images=drive/frames --threshold=0.62 --min_frame_gap=50 "
           "--output=loops.csv\n"
           "  (take --threshold from threshold_at_99_precision in `netvlad-tf evaluate`'s results.json)")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command's flags on `fv`."""
    flags.DEFINE_string("model", None, "The .keras model (required).", flag_values=fv)
    flags.DEFINE_string("images", None, "The stream (required): a folder of frames (sorted by name) or a CSV with "
                        "an image_path column (row order, or by a frame/timestamp column).", flag_values=fv)
    flags.DEFINE_float("threshold", None, "Similarity (cosine) a best match needs to count as a loop (required); "
                       "use threshold_at_99_precision from `netvlad-tf evaluate`.", flag_values=fv)
    flags.DEFINE_integer("min_frame_gap", None, "Frames closer than this in the stream are never matched "
                         "(required).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("sequence_length", 1, "Consecutive frames a match must hold for.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("num_candidates", DEFAULT_CANDIDATES, "Neighbours searched per frame of a sequence.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_string("output", None, "The CSV to write (required): frame, matched_frame, similarity.",
                        flag_values=fv)
    flags.DEFINE_string("save_detector", None, "Also save the detector here (continue the stream later with "
                        "netvlad_tf.LoopDetector.load).", flag_values=fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("batch_size", 8, "Images per forward pass.", flag_values=fv)
    define_dims_flag(fv)
    flags.DEFINE_enum("verify", NO_RERANK, [NO_RERANK, *sorted(PATCH_SETTINGS)], "Accept a loop only after "
                      "Patch-NetVLAD's spatial check of the match (speed, storage, or performance with RANSAC: pip "
                      "install 'netvlad_tf[rerank]'); the CSV then has a verification column.", flag_values=fv)
    flags.DEFINE_float("verify_threshold", DEFAULT_VERIFY_THRESHOLD, "With --verify: the verification score (0-1) a "
                       "loop needs; use reranked.precision_recall.threshold_at_99_precision from `netvlad-tf evaluate "
                       "--rerank`.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output (and --save_detector) if they exist.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "model", "images", "threshold", "min_frame_gap", "output")
    if not -1 <= fv.threshold <= 1:
        raise ValueError(f"--threshold is a cosine similarity in [-1, 1], got {fv.threshold:g}: no loop could pass it.")
    refuse_existing(fv.output, fv.overwrite)
    if fv.save_detector:
        refuse_existing(fv.save_detector, fv.overwrite)
    frames = read_image_stream(fv.images)
    image_size, max_side = image_policy(fv)
    model = open_model(fv.model, fv.dims)
    verify = None if fv.verify == NO_RERANK else fv.verify
    detector = LoopDetector(model, fv.threshold, fv.min_frame_gap, sequence_length=fv.sequence_length,
                            image_size=image_size, max_side=max_side, num_candidates=fv.num_candidates,
                            verify=verify, verify_threshold=fv.verify_threshold)
    print(f"Embedding {len(frames)} frames with {model.name}", flush=True)
    loops = [loop for loop in detector.add_images(frames, fv.batch_size) if loop is not None]
    with atomic_file(fv.output, overwrite=fv.overwrite) as staging:
        with open(staging, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["frame", "matched_frame", "similarity", *(["verification"] if verify else [])])
            writer.writerows([loop.frame, loop.matched_frame, f"{loop.similarity:.6f}",
                              *([f"{loop.verification:.6f}"] if verify else [])] for loop in loops)
    if fv.save_detector:
        detector.save(fv.save_detector, fv.overwrite)
    checked = f", verified by {verify} patch matching ≥ {fv.verify_threshold:g}" if verify else ""
    print(f"{len(loops)} of {len(frames)} frames close a loop (similarity ≥ {fv.threshold:g}{checked}, at least "
          f"{fv.min_frame_gap} frames apart); wrote {fv.output}")
    return 0
