"""`netvlad-tf demo`: the bundled Nordland run."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import none_or_text

SUMMARY = "NetVLAD vs MAC vs raw pixels on the bundled Nordland images (summer → winter)."
EXAMPLE = "netvlad-tf demo --output demo_output --quick"


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("output", "demo_output", "New folder for model.keras, results.json and plots.", flag_values=fv)
    flags.DEFINE_enum("backbone", "efficientnet_lite0", ["efficientnet_lite0", "vgg16"],
                      "efficientnet_lite0 (ImageNet weights bundled, offline) or vgg16 (the paper's).",
                      flag_values=fv)
    flags.DEFINE_string(
        "weights", "imagenet",
        "Backbone weights: 'imagenet' (bundled for efficientnet_lite0; Keras downloads them for "
        "vgg16), 'none' for random weights, or the path of a local weights file.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("quick", False, "Small run (about a minute) for smoke tests and CI.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same results.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    from netvlad_tf.commands.demo_pipeline import run_demo

    weights = none_or_text(fv.weights)
    run_demo(fv.output, backbone=fv.backbone, weights=weights, quick=fv.quick, seed=fv.seed,
             overwrite=fv.overwrite)
    print(f"See it answer on a web page: pip install 'netvlad_tf[web]' && netvlad-tf serve --demo --demo_dir={fv.output}")
    return 0
