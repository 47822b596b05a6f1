"""Converts checkpoints of the popular PyTorch NetVLAD port (VGG16 + NetVLAD) without torch.

The port saves `{"state_dict": {...}, ...}` with `encoder.<i>.weight/bias` for torchvision's
VGG16 `features` up to conv5_3 (its last ReLU and pool dropped), `pool.conv.weight`
`(K, D, 1, 1)` (+ `pool.conv.bias` for the v2 initialisation) and `pool.centroids` `(K, D)`.
Its descriptor is cluster-major (`k·D + d`) and its images are normalised as torchvision's
(RGB in 0–1, ImageNet mean and std). Patch-NetVLAD's checkpoints (QVPR/Patch-NetVLAD,
`models_generic.py`) add PCA whitening as `WPCA.0.weight` `(dim, K·D, 1, 1)` and `WPCA.0.bias`,
a 1×1 convolution on the cluster-major descriptor followed by L2: it becomes the model's
whitening layer. Every tensor of the state dict is either used or named: unknown ones in a
warning, ones that cannot be placed in an error.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from netvlad_tf.converters.assembly import NetVLADArrays, netvlad_model_from_arrays
from netvlad_tf.io.atomic_writes import save_model_atomically
from netvlad_tf.io.torch_checkpoint import read_torch_checkpoint
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.models.presets import register_converter

# torchvision's ImageNet statistics of 0–1 pixels, in 0–255 units.
TORCHVISION_PIXELS = {
    "mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "std": [0.229 * 255, 0.224 * 255, 0.225 * 255],
    "channel_order": "rgb",
}
_ENCODER_KEY = re.compile(r"^encoder\.(\d+)\.weight$")


def pytorch_netvlad_arrays(state_dict: dict[str, np.ndarray]) -> NetVLADArrays:
    """Maps the port's (or Patch-NetVLAD's) state dict onto this package's weights.

    Args:
        state_dict: name → array, as `read_torch_checkpoint` returns it.

    Returns:
        The weights; the whitening when the state dict holds `WPCA.0.weight` and `.bias`.

    Raises:
        ValueError: a key the conversion needs is missing, or a whitening that cannot be placed
            (both named in the message).

    Warns:
        UserWarning: naming state-dict entries the conversion does not use.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    for required in ("pool.conv.weight", "pool.centroids"):
        if required not in state_dict:
            raise ValueError(
                f"The checkpoint has no {required!r}: not a VGG16 + NetVLAD checkpoint of the "
                f"PyTorch port. Its keys start with {sorted(state_dict)[:4]}."
            )
    indices = sorted(int(match.group(1)) for key in state_dict if (match := _ENCODER_KEY.match(key)))
    if not indices:
        raise ValueError("The checkpoint has no encoder.<i>.weight entries (the VGG16 convolutions).")
    kernels, biases = [], []
    for index in indices:
        if f"encoder.{index}.bias" not in state_dict:
            raise ValueError(f"The checkpoint has encoder.{index}.weight but no encoder.{index}.bias.")
        # (out, in, kh, kw) → (kh, kw, in, out)
        kernels.append(np.asarray(state_dict[f"encoder.{index}.weight"]).transpose(2, 3, 1, 0))
        biases.append(np.asarray(state_dict[f"encoder.{index}.bias"]))
    assignment = np.asarray(state_dict["pool.conv.weight"])
    if assignment.ndim != 4 or assignment.shape[2:] != (1, 1):
        raise ValueError(f"pool.conv.weight must be (K, D, 1, 1), got {assignment.shape}.")
    num_clusters = assignment.shape[0]
    bias = state_dict.get("pool.conv.bias")
    whitening_kernel, whitening_bias = _whitening(state_dict, num_clusters * assignment.shape[1])
    used = {f"encoder.{index}.{part}" for index in indices for part in ("weight", "bias")}
    used |= {"pool.conv.weight", "pool.conv.bias", "pool.centroids", "WPCA.0.weight", "WPCA.0.bias"}
    unused = sorted(key for key, value in state_dict.items() if key not in used and isinstance(value, np.ndarray))
    if unused:
        warnings.warn(f"The checkpoint's state dict holds {len(unused)} tensors the conversion does "
                      f"not use: {unused[:8]}{' …' if len(unused) > 8 else ''}.", stacklevel=2)
    return NetVLADArrays(
        conv_kernels=kernels,
        conv_biases=biases,
        centroids=np.asarray(state_dict["pool.centroids"]),
        assignment_kernel=assignment[:, :, 0, 0].T,
        assignment_bias=np.zeros(num_clusters, np.float32) if bias is None else np.asarray(bias),
        normalize_input=True,  # the port always L2-normalises the local descriptors
        output_layout="cluster_major",
        pixel_normalization=TORCHVISION_PIXELS,
        whitening_kernel=whitening_kernel,
        whitening_bias=whitening_bias,
    )


def _whitening(state_dict: dict, pooled_dim: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Patch-NetVLAD's `WPCA.0` 1×1 convolution as a `(K·D, dim)` kernel and `(dim,)` bias."""
    present = [key for key in ("WPCA.0.weight", "WPCA.0.bias") if key in state_dict]
    other = sorted(key for key in state_dict if key.startswith("WPCA.") and key not in present)
    if not present and not other:
        return None, None
    if len(present) != 2 or other:
        raise ValueError(f"The checkpoint's whitening holds {sorted(present + other)}; expected exactly "
                         "WPCA.0.weight and WPCA.0.bias (Patch-NetVLAD's layout), so it cannot be placed.")
    weight, bias = np.asarray(state_dict["WPCA.0.weight"]), np.asarray(state_dict["WPCA.0.bias"])
    if weight.ndim != 4 or weight.shape[1:] != (pooled_dim, 1, 1) or bias.shape != (weight.shape[0],):
        raise ValueError(f"WPCA.0.weight {weight.shape} and WPCA.0.bias {bias.shape} cannot be placed: "
                         f"NetVLAD here gives {pooled_dim} dimensions, so they must be (dim, {pooled_dim}, "
                         "1, 1) and (dim,).")
    return weight[:, :, 0, 0].T, bias


@register_converter("pytorch")
def convert_pytorch_netvlad(
    checkpoint_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> PlaceRecognitionModel:
    """Converts the PyTorch port's `checkpoint.pth.tar` into a Keras model (torch not needed).

    Args:
        checkpoint_path: the port's checkpoint (zip or legacy `torch.save` format).
        output_path: where to save the `.keras` file, or None.
        overwrite: replace an existing `output_path`.

    Returns:
        A `PlaceRecognitionModel` giving the port's descriptor (cluster-major; whitened when
        the checkpoint holds Patch-NetVLAD's `WPCA`) for RGB images in 0–255; torchvision's
        normalisation is inside the model.

    Example (with a real checkpoint):
        model = convert_pytorch_netvlad("runs/Sep12/checkpoints/model_best.pth.tar",
                                        "pitts30k_pytorch.keras")
    """
    checkpoint = read_torch_checkpoint(checkpoint_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{os.fspath(checkpoint_path)!r} holds no state dict.")
    model = netvlad_model_from_arrays(pytorch_netvlad_arrays(state_dict), name="pytorch_netvlad")
    if output_path is not None:
        save_model_atomically(model, output_path, overwrite)
    return model
