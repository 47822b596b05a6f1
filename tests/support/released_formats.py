"""Files in the exact layouts other projects distribute NetVLAD weights in, with random weights of
VGG16's real shapes: hloc's `*_struct.mat`, netvlad_tf_open's TF1 checkpoint, Patch-NetVLAD's
`.pth.tar` (torch's zip format, written without torch)."""

from __future__ import annotations

import numpy as np
import scipy.io

from tests.support.crafted_checkpoints import StorageRef, TensorView, write_zip_checkpoint
from tests.support.reference_forward import POOL_AFTER, VGG16_WIDTHS

VGG16_CONV_NAMES = [f"conv{b}_{p}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for p in range(1, n + 1)]
# torchvision's vgg16().features indices of the 13 convolutions.
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
DIM = 512


def vgg16_weights(rng):
    """13 kernels `(3, 3, in, out)` (He-scaled, so activations stay in range) and biases."""
    kernels, biases, channels = [], [], 3
    for width in VGG16_WIDTHS:
        kernels.append(rng.normal(0, np.sqrt(2 / (9 * channels)), (3, 3, channels, width)).astype(np.float32))
        biases.append(rng.normal(0, 0.01, width).astype(np.float32))
        channels = width
    return kernels, biases


def netvlad_weights(rng, num_clusters, whitening_dim):
    # Soft enough that every cluster receives weight from a small test image (12–24 locations),
    # as it does from the hundreds of locations of a real photo.
    assignment = rng.normal(0, 1, (DIM, num_clusters)).astype(np.float32)
    centroids = rng.normal(0, 0.05, (DIM, num_clusters)).astype(np.float32)  # D × K
    whitening = rng.normal(0, 1, (DIM * num_clusters, whitening_dim)).astype(np.float32)
    whitening_bias = rng.normal(0, 0.1, whitening_dim).astype(np.float32)
    return assignment, centroids, whitening, whitening_bias


def _cell(items):
    cell = np.empty((1, len(items)), dtype=object)
    for index, item in enumerate(items):
        cell[0, index] = item
    return cell


def write_hloc_struct_mat(path, rng, num_clusters, whitening_dim, average_image):
    """The layout of hloc's Pitts30K_struct.mat / TokyoTM_struct.mat (netvlad_tf_open's
    net_class2struct.m): 35 layers, pool before ReLU at block ends, `vlad:core` at index 30
    with negated centroids, `WPCA` at 33 as a 1×1×(K·D)×dim convolution with bias."""
    kernels, biases = vgg16_weights(rng)
    layers = []
    for index, (name, kernel, bias) in enumerate(zip(VGG16_CONV_NAMES, kernels, biases)):
        layers.append({"name": name, "type": "conv", "stride": [1, 1], "pad": [1, 1, 1, 1],
                       "weights": _cell([kernel, bias.reshape(1, -1)])})
        relu = {"name": "relu" + name[4:], "type": "relu", "leak": 0}
        if index in POOL_AFTER:  # the authors' nets pool first, then ReLU
            layers.append({"name": "pool" + name[4], "type": "pool", "method": "max",
                           "pool": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0]})
        if index < len(kernels) - 1:
            layers.append(relu)
    assignment, centroids, whitening, whitening_bias = netvlad_weights(rng, num_clusters, whitening_dim)
    normalize = {"type": "normalize", "param": [2 * DIM, 1e-12, 1, 0.5]}
    layers.append({"name": "preL2", **normalize})
    layers.append({"name": "vlad:core", "type": "custom", "K": num_clusters, "D": DIM,
                   "weights": _cell([assignment.reshape(1, 1, DIM, num_clusters),
                                     -centroids.reshape(1, 1, DIM, num_clusters)])})
    layers.append({"name": "vlad:intranorm", **normalize})
    layers.append({"name": "postL2", "type": "custom"})
    layers.append({"name": "WPCA", "type": "conv", "stride": [1, 1], "pad": [0, 0, 0, 0], "weights": _cell(
        [whitening.reshape(1, 1, -1, whitening_dim), whitening_bias.reshape(-1, 1)])})
    layers.append({"name": "finalL2", "type": "custom"})
    assert [layer["name"] for layer in layers].index("vlad:core") == 30 and layers[33]["name"] == "WPCA"
    net = {"layers": _cell(layers), "meta": {"normalization": {"averageImage": average_image}}}
    scipy.io.savemat(path, {"net": net}, do_compression=False)


def tf_open_variables(rng, num_clusters, whitening_dim, average_rgb):
    """netvlad_tf_open's variables, named as its `nets.py` creates them."""
    scope = "vgg16_netvlad_pca"
    kernels, biases = vgg16_weights(rng)
    variables = {f"{scope}/average_rgb": np.asarray(average_rgb, np.float32)}
    for name, kernel, bias in zip(VGG16_CONV_NAMES, kernels, biases):
        variables[f"{scope}/{name}/kernel"], variables[f"{scope}/{name}/bias"] = kernel, bias
    assignment, centroids, whitening, whitening_bias = netvlad_weights(rng, num_clusters, whitening_dim)
    variables[f"{scope}/assignment/kernel"] = assignment.reshape(1, 1, DIM, num_clusters)
    variables[f"{scope}/cluster_centers"] = -centroids.reshape(1, 1, 1, DIM, num_clusters)
    variables[f"{scope}/WPCA/kernel"] = whitening.reshape(1, 1, -1, whitening_dim)
    variables[f"{scope}/WPCA/bias"] = whitening_bias
    return variables


def write_tf_checkpoint(prefix, variables: dict[str, np.ndarray]) -> None:
    """A TF1-style V2 checkpoint (`prefix.index` + `prefix.data-00000-of-00001`) holding exactly
    these names, as `tf.compat.v1.train.Saver` writes them."""
    import tensorflow as tf

    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[name]) for name in names])


def patch_netvlad_state_dict(rng, num_clusters, whitening_dim):
    """Patch-NetVLAD's `state_dict`: torchvision VGG16 `encoder.<i>`, `pool.conv`/`pool.centroids`
    (cluster-major), `WPCA.0` as a 1×1 convolution `(dim, K·D, 1, 1)`."""
    kernels, biases = vgg16_weights(rng)
    state = {}
    for index, kernel, bias in zip(TORCHVISION_CONV_INDICES, kernels, biases):
        state[f"encoder.{index}.weight"] = kernel.transpose(3, 2, 0, 1).copy()  # (out, in, kh, kw)
        state[f"encoder.{index}.bias"] = bias
    assignment, centroids, whitening, whitening_bias = netvlad_weights(rng, num_clusters, whitening_dim)
    state["pool.conv.weight"] = assignment.T.reshape(num_clusters, DIM, 1, 1).copy()
    state["pool.centroids"] = centroids.T.copy()  # (K, D)
    state["WPCA.0.weight"] = whitening.T.reshape(whitening_dim, -1, 1, 1).copy()
    state["WPCA.0.bias"] = whitening_bias
    return state


def write_torch_state_dict(path, state: dict[str, np.ndarray], extra: dict | None = None) -> None:
    """`torch.save({"state_dict": state, ...})` in torch's zip format, each tensor on its own
    float32 storage with contiguous strides."""
    views, storages = {}, {}
    for key, (name, array) in enumerate(state.items()):
        array = np.ascontiguousarray(array, dtype="<f4")
        strides = tuple(step // 4 for step in array.strides)
        views[name] = TensorView(StorageRef(str(key), "FloatStorage", array.size), 0, array.shape, strides)
        storages[str(key)] = array.tobytes()
    write_zip_checkpoint(path, views, storages, extra)
