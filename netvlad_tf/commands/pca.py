"""`netvlad-tf pca`: learn PCA whitening for a model and save the whitened model."""

from __future__ import annotations

from absl import flags

from netvlad_tf.commands.shared_flags import (
    define_dataset_flags,
    define_dataset_location_flags,
    define_image_size_flag,
    define_whitening_flag,
    image_policy,
    require_flags,
    require_keras_output,
)
from netvlad_tf.data.loading import open_dataset
from netvlad_tf.initialization.learned_whitening import with_learned_whitening
from netvlad_tf.io.atomic_writes import refuse_existing, save_model_atomically
from netvlad_tf.models.model_files import open_model

SUMMARY = "Learn PCA whitening (≤ 10 000 database images) and save the model with it baked in."
EXAMPLE = ("netvlad-tf pca --model=runs/pitts30k/last.keras --dataset=pitts30k_train.mat --image_root=Pittsburgh "
           "--whitening_dim=4096 --output=final.keras")


def define_flags(fv: flags.FlagValues) -> None:
    """Defines this command\'s flags on `fv`."""
    flags.DEFINE_string("model", None, "The trained .keras model (required).", flag_values=fv)
    define_dataset_flags(fv, "dataset", "Training data whose database images fit the whitening (required). ")
    define_dataset_location_flags(fv)
    define_image_size_flag(fv, None)
    flags.DEFINE_integer("whitening_dim", 4096, "Output dimension (the paper: 4096).", flag_values=fv)
    define_whitening_flag(fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --output (also --output = --model).", flag_values=fv)
    flags.DEFINE_string("output", None, "Where to save the whitened .keras model (required).", flag_values=fv)


def run(fv: flags.FlagValues) -> int:
    """Runs the command on parsed flags; returns the exit status (errors are raised)."""
    require_flags(fv, "model", "dataset", "output")
    require_keras_output(fv.output)
    refuse_existing(fv.output, fv.overwrite)
    model = open_model(fv.model, netvlad=True)
    dataset = open_dataset(fv.dataset, fv.image_root, fv.query_root, fv.split)
    image_size, max_side = image_policy(fv)
    whitened = with_learned_whitening(model, dataset.database_paths, fv.whitening_dim, image_size,
                                      max_side=max_side, method=fv.whitening)
    save_model_atomically(whitened, fv.output, fv.overwrite)
    print(f"Saved {fv.output}: descriptors of {whitened.descriptor_dim} dimensions")
    return 0
