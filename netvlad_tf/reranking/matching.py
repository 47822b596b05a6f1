"""Matching two images' patch descriptors and scoring how well the matches agree in space.

Pure functions of arrays: mutual nearest neighbours, the inliers of a RANSAC homography
(OpenCV), the authors' rapid spatial score, and the fusion of several patch sizes.

Reference: Hausler et al., CVPR 2021, Sec. 3.4 (mutual nearest neighbours, RANSAC, rapid
spatial scoring, Eq. 4–6) and Sec. 3.5 (multi-scale fusion); their
`patchnetvlad/tools/patch_matcher.py` and `normalise_func` of `models/local_matcher.py`.
"""

from __future__ import annotations

import numpy as np

# RANSAC's reprojection threshold, in patch strides of the feature map: the authors' 1.5 × 16 px × stride.
RANSAC_THRESHOLD_STRIDES = 1.5
# A homography needs four correspondences.
MIN_HOMOGRAPHY_MATCHES = 4
# Candidates matched at once: their similarity matrix is query patches × this × candidate patches.
CANDIDATES_PER_PRODUCT = 16


def mutual_nearest_neighbours(query: np.ndarray, candidates: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The mutual nearest neighbours between a query's patches and each candidate's.

    Patch descriptors are L2-normalised, so the nearest in L2 is the most similar by inner
    product; one matrix product serves a whole batch of candidates.

    Args:
        query: `(Nq, D)` the query's patch descriptors.
        candidates: `(C, Nc, D)` the candidates' (all of one image size).

    Returns:
        Per candidate, `(query_patches, candidate_patches)`: index arrays of the mutual pairs, in
        the order of the candidate's patches.

    Example:
    >>> query = np.eye(3, dtype="float32")
    >>> candidate = np.eye(3, dtype="float32")[[2, 0]][None]     # patches 2 and 0 of the query
    >>> [pairs.tolist() for pairs in mutual_nearest_neighbours(query, candidate)[0]]
    [[2, 0], [0, 1]]
    """
    query = np.asarray(query, np.float32)
    candidates = np.asarray(candidates, np.float32)
    count, patches, dims = candidates.shape
    similarity = (query @ candidates.reshape(-1, dims).T).reshape(len(query), count, patches)
    nearest_query = similarity.argmax(axis=0)  # (C, Nc): each candidate patch's best query patch
    nearest_candidate = similarity.argmax(axis=2)  # (Nq, C): each query patch's best candidate patch
    pairs = []
    for number in range(count):
        forward = nearest_query[number]
        mutual = np.flatnonzero(nearest_candidate[forward, number] == np.arange(patches))
        pairs.append((forward[mutual], mutual))
    return pairs


def ransac_inliers(query_points: np.ndarray, candidate_points: np.ndarray, threshold_px: float) -> np.ndarray:
    """Which correspondences agree with one homography from the candidate to the query.

    Args:
        query_points: `(M, 2)` matched keypoints in the query, pixels.
        candidate_points: `(M, 2)` the same matches in the candidate.
        threshold_px: RANSAC's reprojection threshold (the authors: 1.5 × feature stride × patch stride).

    Returns:
        `(M,)` bool: the inliers; all False with fewer than four matches or no homography.

    Example:
    >>> points = np.array([[0, 0], [50, 0], [0, 50], [50, 50], [25, 25]], float)
    >>> ransac_inliers(points + 10, points, threshold_px=2.0).tolist()
    [True, True, True, True, True]
    """
    import cv2  # the `rerank` extra

    inliers = np.zeros(len(query_points), bool)
    if len(query_points) < MIN_HOMOGRAPHY_MATCHES:
        return inliers
    _, mask = cv2.findHomography(np.asarray(candidate_points, np.float32), np.asarray(query_points, np.float32),
                                 cv2.RANSAC, ransacReprojThreshold=float(threshold_px))
    if mask is not None:
        inliers[:] = mask.ravel().astype(bool)
    return inliers


def rapid_spatial_score(query_grid: np.ndarray, candidate_grid: np.ndarray, grid_maxima: tuple[int, int]) -> float:
    """The authors' rapid spatial score of matched patches (larger: more consistent).

    With `d = candidate − query` grid offsets of the matches and `d̄` their mean,
    `score = Σ_matches (x_max − |d_x − d̄_x|)² + (y_max − |d_y − d̄_y|)²`: a shift shared by
    all matches scores highest.

    Args:
        query_grid: `(M, 2)` `(column, row)` of the matched query patches.
        candidate_grid: `(M, 2)` the same of the candidate's.
        grid_maxima: `(x_max, y_max)`: the largest column and row index of the patch grid.

    Returns:
        The sum over matches (0 without matches); divide by the query's patch count to compare
        images, as the authors do.

    Example:
    >>> grid = np.array([[0, 0], [3, 1], [2, 2]])
    >>> rapid_spatial_score(grid, grid + 1, (3, 2))   # one shared shift: 3 × (3² + 2²)
    39.0
    """
    if len(query_grid) == 0:
        return 0.0
    offsets = np.asarray(candidate_grid, np.float64) - np.asarray(query_grid, np.float64)
    deviations = np.abs(offsets - offsets.mean(axis=0))
    return float(np.sum((np.asarray(grid_maxima, np.float64) - deviations) ** 2))


def fuse_scores(scores: np.ndarray, weights) -> np.ndarray:
    """Fuses each patch size's scores over a query's candidates: `Σ_s w_s · z_s`, `z_s` the
    scores of size s standardised over the candidates (the authors' `normalise_func`).

    A size whose scores are all equal carries no information and adds 0 (the authors' code gives
    NaN there, which scrambles the order).

    Args:
        scores: `(candidates, sizes)`, larger is better.
        weights: `(sizes,)`.

    Returns:
        `(candidates,)` fused scores, larger is better.

    Example:
    >>> fuse_scores(np.array([[1.0, 5.0], [3.0, 5.0]]), [0.5, 0.5]).tolist()
    [-0.5, 0.5]
    """
    scores = np.asarray(scores, np.float64)
    spread = scores.std(axis=0)
    informative = spread > 0
    standardised = np.zeros_like(scores)
    standardised[:, informative] = (scores[:, informative] - scores[:, informative].mean(axis=0)) / spread[informative]
    return standardised @ np.asarray(weights, np.float64)
