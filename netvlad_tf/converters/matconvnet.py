"""Converts the authors' MatConvNet NetVLAD models (e.g. `vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat`).

The file holds `net.layers`, a cell of layer structs run in order, and
`net.meta.normalization.averageImage`. For `vd16_*_conv5_3_vlad_preL2_intra_white` the layers are
the 13 VGG16 convolutions with their ReLUs and pools (no ReLU after conv5_3), `preL2`
(normalize), `vlad:core`, `vlad:intranorm`, `postL2`, `WPCA` (a 1×1 conv) and `finalL2`.
`vlad:core` stores `{assignment (1,1,D,K), −centroids (1,1,D,K)}` (centroids negated, because
the layer adds them) or, for vladv2, `{w, b, −centroids}`; its output `(1, K, D)` is flattened
column-major, i.e. element (k, d) at `d·K + k`: this package's `"matlab"` layout.

MATLAB images are RGB in 0–255 minus the network's average image; Keras' VGG16 uses BGR minus
the caffe means. The converted model carries the MATLAB normalisation inside it, so it gives the
MATLAB descriptor for the same pixels; resizing and JPEG decoding may still differ slightly
(see docs/design.md).
"""

from __future__ import annotations

import os

import numpy as np

from netvlad_tf.converters.assembly import NetVLADArrays, netvlad_model_from_arrays
from netvlad_tf.io.atomic_writes import save_model_atomically
from netvlad_tf.io.mat_file import MatV73Error, load_mat
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.models.presets import register_converter

RESAVE_HINT = (
    "Re-save it in MATLAB as a version-7 file with plain structs: "
    "load(f); for i = 1:numel(net.layers), if isobject(net.layers{i}), "
    "net.layers{i} = relja_saveobj(net.layers{i}); end, end; save('net_v7.mat', 'net', '-v7')"
)


def read_matconvnet_net(path: str | os.PathLike):
    """Loads `net` from a MATLAB v5/v7 `.mat` file as nested scipy structs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a v7.3 (HDF5) file, which holds the custom layers as MATLAB objects, or a
            file without `net`.
    """
    path = os.fspath(path)
    try:
        contents = load_mat(path, "MatConvNet model", squeeze_me=False, struct_as_record=False)
    except MatV73Error as error:
        raise MatV73Error(f"{error} {RESAVE_HINT}") from None
    if "net" not in contents:
        variables = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"MatConvNet model {path!r} has no variable 'net'; it holds {variables}.")
    return _struct(contents["net"])


def _struct(value):
    """scipy wraps every MATLAB struct in a 1×1 object array; this takes it out."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.ravel()[0]
    return value


def _field(struct, name: str, where: str):
    struct = _struct(struct)
    if not hasattr(struct, name):
        raise ValueError(f"{where} has no field {name!r}.")
    return getattr(struct, name)


def _text(value) -> str:
    return str(np.asarray(value).ravel()[0]) if np.asarray(value).size else ""


def _weights(layer, name: str) -> list[np.ndarray]:
    cell = np.asarray(_field(layer, "weights", f"Layer {name!r}"))
    return [np.asarray(item, dtype=np.float32) for item in cell.ravel()]


def matconvnet_arrays(net) -> NetVLADArrays:
    """Reads a MatConvNet NetVLAD `net` struct into this package's weights.

    Raises:
        ValueError: a layer the conversion needs is missing or has unexpected weights.
    """
    layers = [_struct(item) for item in np.asarray(_field(net, "layers", "net"), dtype=object).ravel()]
    names = [_text(_field(layer, "name", "A layer")) for layer in layers]
    if "vlad:core" not in names:
        raise ValueError(f"net.layers has no 'vlad:core' layer; its layers are {names}.")
    vlad_at = names.index("vlad:core")
    kernels, biases = [], []
    for layer, name in zip(layers[:vlad_at], names[:vlad_at]):
        if _text(_field(layer, "type", f"Layer {name!r}")) == "conv":
            kernel, bias = _weights(layer, name)
            kernels.append(kernel.reshape(kernel.shape + (1,) * (4 - kernel.ndim)))
            biases.append(bias.ravel())
    if "vlad:intranorm" not in names:
        raise ValueError("net.layers has no 'vlad:intranorm': only intra-normalised NetVLAD "
                         "(the paper's vlad_..._intra models) is supported.")
    vlad = _weights(layers[vlad_at], "vlad:core")
    if len(vlad) == 2:  # layerVLAD: {assignment, −centroids}
        assignment, negated_centroids = vlad
        assignment_bias = np.zeros(assignment.shape[-1], np.float32)
    elif len(vlad) == 3:  # layerVLADv2: {w, b, −centroids}
        assignment, assignment_bias, negated_centroids = vlad
    else:
        raise ValueError(f"vlad:core holds {len(vlad)} weight arrays; expected 2 (vlad) or 3 (vladv2).")
    channels, num_clusters = assignment.shape[-2:]
    if negated_centroids.size != channels * num_clusters:
        raise ValueError(
            f"vlad:core centroids have shape {negated_centroids.shape}; its assignment weights "
            f"{assignment.shape} need D × K = {channels} × {num_clusters} centroids."
        )
    whitening_kernel = whitening_bias = None
    after = [(layer, name) for layer, name in zip(layers[vlad_at:], names[vlad_at:])
             if _text(_field(layer, "type", f"Layer {name!r}")) == "conv"]
    if after:
        layer, name = after[0]
        kernel, bias = _weights(layer, name)
        whitening_kernel = kernel.reshape(-1, kernel.shape[-1])
        whitening_bias = bias.ravel()
    normalization = _field(_field(net, "meta", "net"), "normalization", "net.meta")
    average_image = np.asarray(_field(normalization, "averageImage", "net.meta.normalization"), np.float64)
    if average_image.size < 3 or average_image.shape[-1] != 3:
        raise ValueError(f"net.meta.normalization.averageImage has shape {average_image.shape}; "
                         "expected (..., 3) RGB values.")
    # The authors' computeRepresentation.m (and hloc, netvlad_tf_open) subtract averageImage(1,1,:),
    # its first pixel, not the mean over the image.
    mean_rgb = average_image.reshape(-1, 3)[0]
    return NetVLADArrays(
        conv_kernels=kernels,
        conv_biases=biases,
        centroids=-negated_centroids.reshape(channels, num_clusters).T,
        assignment_kernel=assignment.reshape(channels, num_clusters),
        assignment_bias=assignment_bias.ravel(),
        normalize_input="preL2" in names,
        output_layout="matlab",
        pixel_normalization={"mean": mean_rgb.tolist(), "std": 1.0, "channel_order": "rgb"},
        whitening_kernel=whitening_kernel,
        whitening_bias=whitening_bias,
    )


@register_converter("matconvnet")
def convert_matconvnet_netvlad(
    mat_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> PlaceRecognitionModel:
    """Converts an authors' MatConvNet NetVLAD `.mat` into a Keras model.

    Args:
        mat_path: e.g. `vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat` (v7; see
            `RESAVE_HINT` for v7.3 files).
        output_path: where to save the `.keras` file, or None.
        overwrite: replace an existing `output_path`.

    Returns:
        A `PlaceRecognitionModel` (VGG16 conv5_3 → NetVLAD → whitening + L2 when present)
        taking RGB images in 0–255, with MATLAB's average-image subtraction inside.

    Example (with the released file):
        model = convert_matconvnet_netvlad("vd16_pitts30k_conv5_3_vlad_preL2_intra_white.mat",
                                           "pitts30k_matlab.keras")
    """
    model = netvlad_model_from_arrays(matconvnet_arrays(read_matconvnet_net(mat_path)), name="matconvnet_netvlad")
    if output_path is not None:
        save_model_atomically(model, output_path, overwrite)
    return model
