"""`netvlad-tf convert`: released NetVLAD weights (MatConvNet / hloc .mat, netvlad_tf_open TF1
checkpoint, PyTorch port / Patch-NetVLAD .pth) → a `.keras` model."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import require_flags, require_keras_output
from netvlad_tf.io.atomic_writes import refuse_existing
from netvlad_tf.models.presets import CONVERTERS

SUMMARY = "Convert released NetVLAD weights (.mat, TF1 checkpoint, .pth) into a .keras model."
EXAMPLE = (
    "netvlad-tf convert --source=matconvnet "
    "--input=vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat --output=pitts30k.keras\n"
    "  netvlad-tf convert --source=matconvnet --input=Pitts30K_struct.mat --output=pitts30k.keras\n"
    "  netvlad-tf convert --source=tf_checkpoint "
    "--input=checkpoints/vd16_pitts30k_conv5_3_vlad_preL2_intra_white --output=pitts30k.keras\n"
    "  netvlad-tf convert --source=pytorch --input=pittsburgh_WPCA4096.pth.tar --output=patch.keras"
)


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_enum("source", None, sorted(CONVERTERS), "Where the weights come from (required).", flag_values=fv)
    flags.DEFINE_string("input", None, "The released .mat or .pth(.tar) file, or the TF checkpoint prefix (required).", flag_values=fv)
    flags.DEFINE_string("output", None, "Where to save the .keras model (required).", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "source", "input", "output")
    require_keras_output(fv.output)
    refuse_existing(fv.output, fv.overwrite)
    model = CONVERTERS[fv.source](fv.input, fv.output, fv.overwrite)
    print(f"Saved {fv.output}: {model.descriptor_dim}-D descriptors, "
          f"{model.count_params():,} parameters")
    return 0
