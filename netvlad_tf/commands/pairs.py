"""`netvlad-tf pairs`: image pairs to match for structure from motion, in hloc's format."""

from __future__ import annotations

import numpy as np
from absl import flags

from netvlad_tf.commands.shared_flags import require_flags
from netvlad_tf.database.descriptor_folder import read_descriptors
from netvlad_tf.database.hloc_features import hloc_names
from netvlad_tf.decisions.image_pairs import merged_pairs, retrieval_pairs, sequential_pairs, write_pairs

SUMMARY = "Image pairs for structure from motion from a descriptor folder, as hloc's pairs file."
EXAMPLE = ("netvlad-tf pairs --descriptors=sfm_descriptors --num_matched=20 --output=pairs-netvlad.txt\n"
           "  netvlad-tf pairs --descriptors=drive --num_matched=10 --sequential=5 --output=pairs.txt  (video)")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command's flags on `fv`."""
    flags.DEFINE_string("descriptors", None, "A descriptor folder made by `netvlad-tf embed` (required).",
                        flag_values=fv)
    flags.DEFINE_integer("num_matched", None, "Database images paired with each query (required).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("output", None, "The pairs file to write (required).", flag_values=fv)
    flags.DEFINE_string("image_root", None, "Names are image paths relative to this folder (hloc's image_dir); "
                        "default: the deepest folder holding every image.", flag_values=fv)
    flags.DEFINE_list("query_prefix", None, "Only images whose names start so are queries (default: all).",
                      flag_values=fv)
    flags.DEFINE_list("db_prefix", None, "Only images whose names start so are matched against (default: all).",
                      flag_values=fv)
    flags.DEFINE_integer("sequential", 0, "Also pair each frame with this many frames after it (rows in plan "
                         "order): for video.", lower_bound=0, flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "descriptors", "num_matched", "output")
    table = read_descriptors(fv.descriptors)
    names = hloc_names(table.image_paths, fv.image_root)
    queries = _with_prefix(names, fv.query_prefix, "query")
    database = _with_prefix(names, fv.db_prefix, "database")
    pairs = retrieval_pairs([names[i] for i in queries], table.descriptors[queries],
                            [names[i] for i in database], table.descriptors[database], fv.num_matched)
    if fv.sequential:
        pairs = merged_pairs(pairs, sequential_pairs(names, fv.sequential))
    write_pairs(pairs, fv.output, fv.overwrite)
    print(f"Wrote {len(pairs)} pairs of {len(queries)} queries and {len(database)} database images to {fv.output}")
    return 0


def _with_prefix(names: list[str], prefixes: list[str] | None, role: str) -> np.ndarray:
    if not prefixes:
        return np.arange(len(names))
    chosen = np.array([i for i, name in enumerate(names) if name.startswith(tuple(prefixes))], dtype=np.int64)
    if chosen.size == 0:
        raise ValueError(f"No image name starts with the {role} prefix {', '.join(prefixes)} (e.g. {names[0]!r}).")
    return chosen
