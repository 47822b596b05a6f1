"""NumPy transcriptions of Patch-NetVLAD's definitions, step by step as the authors' PyTorch code
does them (QVPR/Patch-NetVLAD, MIT licence: `patchnetvlad/models/patchnetvlad.py`,
`patchnetvlad/models/local_matcher.py`, `patchnetvlad/tools/patch_matcher.py`).

Independent of `netvlad_tf.reranking`: channels-first maps, the per-cluster residual loop,
integral features read by a dilated 2×2 kernel, the authors' keypoint boxes and their sign
conventions (smaller is better). Only the tests use them.
"""

from __future__ import annotations

import numpy as np


def authors_patch_vlads(feature_map_hwd, centroids, assignment_kernel, assignment_bias, patch_size, stride,
                        normalize_input=True):
    """`PatchNetVLAD.forward`'s `vlad_local` for one size: `(patches, K·D)` in the PyTorch
    ports' cluster-major order (index k·D + d), patches row by row."""
    x = np.transpose(np.asarray(feature_map_hwd, np.float64), (2, 0, 1))  # (D, H, W), as N C H W
    if normalize_input:
        x = x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-12)
    logits = np.einsum("dhw,dk->khw", x, assignment_kernel) + np.asarray(assignment_bias)[:, None, None]
    logits -= logits.max(axis=0, keepdims=True)
    soft_assign = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    clusters, (channels, height, width) = len(centroids), x.shape
    store_residual = np.zeros((clusters, channels, height, width))
    for k in range(clusters):  # the authors' loop over clusters
        store_residual[k] = (x - np.asarray(centroids)[k][:, None, None]) * soft_assign[k][None]
    store_residual = store_residual.reshape(clusters * channels, height, width)
    integral = np.pad(np.cumsum(np.cumsum(store_residual, axis=-1), axis=-2), ((0, 0), (1, 0), (1, 0)))
    # get_square_regions_from_integral: conv2d with weights [[1, −1], [−1, 1]], dilation p, stride s.
    rows = (integral.shape[1] - 1 - patch_size) // stride + 1
    columns = (integral.shape[2] - 1 - patch_size) // stride + 1
    regions = np.zeros((clusters * channels, rows, columns))
    for i in range(rows):
        for j in range(columns):
            top, left = i * stride, j * stride
            regions[:, i, j] = (integral[:, top, left] - integral[:, top, left + patch_size]
                                - integral[:, top + patch_size, left] + integral[:, top + patch_size, left + patch_size])
    regions /= patch_size**2
    vlad = regions.reshape(clusters, channels, -1)
    vlad = vlad / np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)
    vlad = vlad.reshape(clusters * channels, -1)
    vlad = vlad / np.maximum(np.linalg.norm(vlad, axis=0, keepdims=True), 1e-12)
    return vlad.T


def authors_pca(vlads, kernel, bias):
    """`get_pca_encoding`: the whitening layer, then L2."""
    encoded = vlads @ kernel + bias
    return encoded / np.linalg.norm(encoded, axis=1, keepdims=True)


def authors_keypoints(feature_height, feature_width, patch_size, stride):
    """`calc_keypoint_centers_from_patches` without its final int cast: `(2, N)` x then y, and
    the grid `indices` (VGG16 conv5_3's hard-coded field 196, stride 16, padding 90)."""
    rf, step, padding = 196.0, 16.0, 90.0
    boxes = []
    for x in range(feature_height):  # meshgrid(arange(H), arange(W)), 'ij'; stack([y, x])
        for y in range(feature_width):
            boxes.append([step * y - padding, step * x - padding, step * y - padding + rf - 1, step * x - padding + rf - 1])
    boxes = np.asarray(boxes)
    rows = (feature_height - patch_size) // stride + 1
    columns = (feature_width - patch_size) // stride + 1
    keypoints, indices = np.zeros((2, rows * columns)), np.zeros((2, rows * columns), int)
    k = 0
    for i in range(0, rows, stride):
        for j in range(0, columns, stride):
            keypoints[0, k] = (boxes[j + i * feature_width, 0] + boxes[j + patch_size - 1 + i * feature_width, 2]) / 2
            keypoints[1, k] = (boxes[j + i * feature_width, 1] + boxes[j + (i + patch_size - 1) * feature_width, 3]) / 2
            indices[:, k] = j, i
            k += 1
    return keypoints, indices


def authors_mutual_nn(query_t, database):
    """`torch_nn` and the mutual filter of `compare_two_*`: query `(Nq, D)`, database `(D, Ndb)`;
    returns the database indices of the mutual matches and `fw_inds` (their query partners)."""
    distance = np.sqrt(2 - 2 * (query_t @ database) + 1e-9)
    fw_inds = np.argmin(distance, axis=0)
    bw_inds = np.argmin(distance, axis=1)
    mutuals = np.atleast_1d(np.argwhere(bw_inds[fw_inds] == np.arange(len(fw_inds))).squeeze())
    return mutuals, fw_inds


def authors_spatial_score(query_t, database, indices):
    """`compare_two_spatial` for one size: the negated rapid spatial score per query patch."""
    mutuals, fw_inds = authors_mutual_nn(query_t, database)
    if len(mutuals) == 0:
        return 0.0
    index_keypoints = indices[:, mutuals]
    query_keypoints = indices[:, fw_inds[mutuals]]
    spatial_dist = index_keypoints - query_keypoints
    mean_spatial_dist = np.mean(spatial_dist, axis=1)
    s_dists_x = np.absolute(spatial_dist[0, :] - mean_spatial_dist[0])
    s_dists_y = np.absolute(spatial_dist[1, :] - mean_spatial_dist[1])
    xmax, ymax = np.max(indices[0, :]), np.max(indices[1, :])
    s_score = (xmax - s_dists_x) ** 2 + (ymax - s_dists_y) ** 2
    return -s_score.sum() / query_t.shape[0]


def authors_normalise_func(input_diff, patch_weights):
    """`normalise_func`: per-size z-scores over the candidates, weighted (smaller is better)."""
    normed_diff = 0
    for i in range(len(patch_weights)):
        normed_diff = normed_diff + patch_weights[i] * (
            (input_diff[:, i] - np.mean(input_diff[:, i])) / np.std(input_diff[:, i]))
    return normed_diff
