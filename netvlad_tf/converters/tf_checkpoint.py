"""Converts netvlad_tf_open's TF1 checkpoint (uzh-rpg/netvlad_tf_open) into a Keras model.

That project ships the authors' Pittsburgh 30k model as a TF1 checkpoint,
`vd16_pitts30k_conv5_3_vlad_preL2_intra_white.{index,data-…}`, with its variables under
`vgg16_netvlad_pca/`:

- `average_rgb` `(3,)`: subtracted from RGB images in 0–255;
- `conv1_1 … conv5_3/kernel` `(3, 3, in, out)` and `/bias`: VGG16 up to conv5_3 (no ReLU after it);
- `assignment/kernel` `(1, 1, D, K)`: the soft assignment (no bias);
- `cluster_centers` `(1, 1, 1, D, K)`: the centroids, stored negated (residuals are `x + C`);
- `WPCA/kernel` `(1, 1, D·K, 4096)` and `WPCA/bias`: the whitening, on the D-major (`d·K + k`)
  descriptor.

The checkpoint is read with `tf.train.load_checkpoint`; no TF1 graph is built.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from netvlad_tf.backbones.vgg16 import VGG16_BLOCK_SIZES
from netvlad_tf.converters.assembly import NetVLADArrays, netvlad_model_from_arrays
from netvlad_tf.io.atomic_writes import save_model_atomically
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.models.presets import register_converter

SCOPE = "vgg16_netvlad_pca"
VGG16_CONVS = [f"conv{block}_{position}" for block, size in enumerate(VGG16_BLOCK_SIZES, start=1)
               for position in range(1, size + 1)]
# Variables TF1 training leaves beside the weights: bookkeeping, not weights.
_BOOKKEEPING = ("global_step", "_CHECKPOINTABLE_OBJECT_GRAPH")


def read_tf_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint as name → array.

    Args:
        prefix: the checkpoint prefix (the path without `.index` / `.data-…`), or the folder of
            a `checkpoint` file.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: a damaged checkpoint (named).
    """
    prefix = os.fspath(prefix)
    if not (os.path.isfile(prefix + ".index") or os.path.isdir(prefix)):
        raise FileNotFoundError(f"TF checkpoint {prefix!r} does not exist (expected {prefix}.index "
                                "and its .data-… files).")
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"TF checkpoint {prefix!r} cannot be read: {' '.join(str(error).split())[:300]}") from None


def netvlad_tf_open_arrays(variables: dict[str, np.ndarray]) -> NetVLADArrays:
    """Maps netvlad_tf_open's variables onto this package's weights.

    Args:
        variables: name → array, as `read_tf_checkpoint` returns them.

    Returns:
        The weights (D-major layout, RGB minus `average_rgb` inside the model).

    Raises:
        ValueError: a variable the conversion needs is missing or has the wrong shape (named).

    Warns:
        UserWarning: naming variables the conversion does not use.
    """
    def variable(name: str) -> np.ndarray:
        key = f"{SCOPE}/{name}"
        if key not in variables:
            found = sorted(variables)[:6]
            raise ValueError(f"The checkpoint has no {key!r}: not netvlad_tf_open's VGG16 + NetVLAD "
                             f"(+ WPCA) checkpoint. Its variables start with {found}.")
        return variables[key]

    average_rgb = variable("average_rgb").ravel()
    if average_rgb.shape != (3,):
        raise ValueError(f"{SCOPE}/average_rgb has {average_rgb.size} values; expected 3 (RGB).")
    kernels = [variable(f"{conv}/kernel") for conv in VGG16_CONVS]
    biases = [variable(f"{conv}/bias") for conv in VGG16_CONVS]
    assignment = variable("assignment/kernel")
    if assignment.ndim != 4 or assignment.shape[:2] != (1, 1):
        raise ValueError(f"{SCOPE}/assignment/kernel must be (1, 1, D, K), got {assignment.shape}.")
    channels, num_clusters = assignment.shape[2:]
    negated_centroids = variable("cluster_centers")
    if negated_centroids.size != channels * num_clusters:
        raise ValueError(f"{SCOPE}/cluster_centers has shape {negated_centroids.shape}; the assignment "
                         f"{assignment.shape} needs D × K = {channels} × {num_clusters}.")
    used = {f"{SCOPE}/{name}" for name in
            ["average_rgb", "assignment/kernel", "cluster_centers"]
            + [f"{conv}/{part}" for conv in VGG16_CONVS for part in ("kernel", "bias")]}
    whitening_kernel = whitening_bias = None
    if f"{SCOPE}/WPCA/kernel" in variables:
        whitening = variable("WPCA/kernel")
        whitening_kernel = whitening.reshape(-1, whitening.shape[-1])
        whitening_bias = variable("WPCA/bias").ravel()
        used |= {f"{SCOPE}/WPCA/kernel", f"{SCOPE}/WPCA/bias"}
    unused = sorted(name for name in variables if name not in used and not name.endswith(_BOOKKEEPING))
    if unused:
        warnings.warn(f"The checkpoint holds {len(unused)} variables the conversion does not use: "
                      f"{unused[:8]}{' …' if len(unused) > 8 else ''}.", stacklevel=2)
    return NetVLADArrays(
        conv_kernels=kernels,
        conv_biases=biases,
        # Stored negated: the layer computes x + C.
        centroids=-negated_centroids.reshape(channels, num_clusters).T,
        assignment_kernel=assignment[0, 0],
        assignment_bias=np.zeros(num_clusters, np.float32),
        normalize_input=True,  # tf.nn.l2_normalize before the layer
        output_layout="matlab",  # (B, D, K) flattened: d·K + k
        pixel_normalization={"mean": average_rgb.tolist(), "std": 1.0, "channel_order": "rgb"},
        whitening_kernel=whitening_kernel,
        whitening_bias=whitening_bias,
    )


@register_converter("tf_checkpoint")
def convert_tf_checkpoint_netvlad(
    checkpoint_prefix: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> PlaceRecognitionModel:
    """Converts netvlad_tf_open's checkpoint into a Keras model that gives its descriptor.

    Args:
        checkpoint_prefix: e.g. `checkpoints/vd16_pitts30k_conv5_3_vlad_preL2_intra_white`.
        output_path: where to save the `.keras` file, or None.
        overwrite: replace an existing `output_path`.

    Returns:
        A `PlaceRecognitionModel` (VGG16 conv5_3 → NetVLAD → 4096-D whitening + L2) taking RGB
        images in 0–255.

    Example (with the released checkpoint)::

        model = convert_tf_checkpoint_netvlad(
            "checkpoints/vd16_pitts30k_conv5_3_vlad_preL2_intra_white", "pitts30k_tf.keras")
    """
    model = netvlad_model_from_arrays(netvlad_tf_open_arrays(read_tf_checkpoint(checkpoint_prefix)),
                                      name="tf_checkpoint_netvlad")
    if output_path is not None:
        save_model_atomically(model, output_path, overwrite)
    return model
