"""Other projects' NetVLAD forward passes, transcribed in NumPy float64 as the test oracle.

Each function follows its project's own code, line for line in meaning, not this package's:
- `hloc_forward`: cvg/Hierarchical-Localization `hloc/extractors/netvlad.py` (reads the
  `*_struct.mat` the way hloc does: `squeeze_me=True`, layers[30] and layers[33]);
- `tf_open_forward`: uzh-rpg/netvlad_tf_open `nets.py` + `layers.py` (its TF1 variables);
- `patch_netvlad_forward`: QVPR/Patch-NetVLAD `models_generic.py` + `netvlad.py` (its
  state dict, torchvision's VGG16 and normalisation).
Images are RGB `(H, W, 3)` in 0–255.
"""

from __future__ import annotations

import numpy as np
import scipy.io

TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])
VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
POOL_AFTER = {1, 3, 6, 9}  # conv indices (0-based) followed by a 2×2 max-pool


def conv3x3_same(x, kernel, bias):
    """`(H, W, C)` * `(3, 3, C, O)` with zero padding 1, stride 1."""
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))  # H,W,C,3,3
    return np.einsum("hwcij,ijco->hwo", windows, kernel, optimize=True) + bias


def max_pool2(x):
    height, width = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:height, :width].reshape(height // 2, 2, width // 2, 2, -1).max(axis=(1, 3))


def vgg16_conv5_3(x, kernels, biases):
    """13 convolutions, ReLU after all but conv5_3, max-pools between blocks (ReLU and max
    commute, so the MATLAB order pool-then-ReLU gives the same)."""
    for index, (kernel, bias) in enumerate(zip(kernels, biases)):
        x = conv3x3_same(x, np.asarray(kernel, np.float64), np.asarray(bias, np.float64).ravel())
        if index < len(kernels) - 1:
            x = np.maximum(x, 0)
        if index in POOL_AFTER:
            x = max_pool2(x)
    return x


def _softmax(logits, axis):
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _normalize(x, axis=-1, epsilon=1e-12):
    """torch's F.normalize / tf.nn.l2_normalize: x / max(‖x‖, ε)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), epsilon)


def hloc_forward(mat_path, image):
    mat = scipy.io.loadmat(mat_path, struct_as_record=False, squeeze_me=True)
    net = mat["net"]
    kernels, biases = [], []
    for layer in net.layers:
        if layer.type == "conv" and len(kernels) < 13:
            kernels.append(layer.weights[0])
            biases.append(layer.weights[1])
    mean = net.meta.normalization.averageImage[0, 0]
    x = image.astype(np.float64) - mean
    descriptors = vgg16_conv5_3(x, kernels, biases).reshape(-1, 512).T  # (D, N), torch's view
    descriptors = _normalize(descriptors, axis=0)  # pre-normalisation over D
    score_w = np.asarray(net.layers[30].weights[0], np.float64)  # D × K
    centers = -np.asarray(net.layers[30].weights[1], np.float64)  # D × K, stored negated
    scores = _softmax(score_w.T @ descriptors, axis=0)  # (K, N)
    diff = descriptors[:, None, :] - centers[:, :, None]  # (D, K, N)
    desc = (scores[None] * diff).sum(-1)  # (D, K)
    desc = _normalize(desc, axis=0)  # intra-normalisation
    desc = _normalize(desc.reshape(-1))  # view(b, -1) of (D, K): d·K + k
    whiten_w = np.asarray(net.layers[33].weights[0], np.float64).squeeze().T  # OUT × IN
    whiten_b = np.asarray(net.layers[33].weights[1], np.float64).squeeze()
    return _normalize(whiten_w @ desc + whiten_b)


def tf_open_forward(variables, image, scope="vgg16_netvlad_pca"):
    get = lambda name: np.asarray(variables[f"{scope}/{name}"], np.float64)
    x = image.astype(np.float64) - get("average_rgb")
    convs = [f"conv{b}_{p}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for p in range(1, n + 1)]
    x = vgg16_conv5_3(x, [get(f"{c}/kernel") for c in convs], [get(f"{c}/bias") for c in convs])
    x = _normalize(x, axis=-1)  # tf.nn.l2_normalize(x, dim=-1)
    inputs = x.reshape(-1, x.shape[-1])  # (N, D)
    a = _softmax(inputs @ get("assignment/kernel")[0, 0], axis=-1)  # (N, K)
    centers = get("cluster_centers")[0, 0, 0]  # (D, K), added: v = x + C
    v = (a[:, None, :] * (inputs[:, :, None] + centers[None])).sum(0)  # (D, K)
    v = v.T  # transpose(0, 2, 1): (K, D)
    matconvnet_normalize = lambda t: t / np.sqrt((t ** 2).sum(-1, keepdims=True) + 1e-12)
    v = matconvnet_normalize(v)
    v = matconvnet_normalize(v.T.reshape(-1))  # back to (D, K), flattened
    wpca = get("WPCA/kernel")[0, 0]  # (D·K, dim)
    return _normalize(v @ wpca + get("WPCA/bias"))


def patch_netvlad_forward(state_dict, image):
    get = lambda name: np.asarray(state_dict[name], np.float64)
    x = (image.astype(np.float64) / 255 - TORCHVISION_MEAN) / TORCHVISION_STD
    conv_indices = sorted({int(key.split(".")[1]) for key in state_dict if key.startswith("encoder.")})
    kernels = [get(f"encoder.{i}.weight").transpose(2, 3, 1, 0) for i in conv_indices]
    biases = [get(f"encoder.{i}.bias") for i in conv_indices]
    x = vgg16_conv5_3(x, kernels, biases)
    flat = x.reshape(-1, x.shape[-1]).T  # (C, N)
    flat = _normalize(flat, axis=0)  # normalize_input, over the descriptor dimension
    soft_assign = _softmax(get("pool.conv.weight")[:, :, 0, 0] @ flat, axis=0)  # (K, N)
    centroids = get("pool.centroids")  # (K, C)
    vlad = np.stack([(soft_assign[k] * (flat - centroids[k][:, None])).sum(-1)
                     for k in range(len(centroids))])  # (K, C)
    vlad = _normalize(vlad, axis=1)  # intra-normalisation
    vlad = _normalize(vlad.reshape(-1))  # k·C + c
    wpca = get("WPCA.0.weight")[:, :, 0, 0]  # (dim, K·C)
    return _normalize(wpca @ vlad + get("WPCA.0.bias"))
