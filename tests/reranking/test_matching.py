"""Matching and spatial scores against NumPy transcriptions of the authors' code."""

import numpy as np
import pytest

from netvlad_tf.reranking import reranker
from netvlad_tf.reranking.matching import fuse_scores, mutual_nearest_neighbours, ransac_inliers, rapid_spatial_score
from tests.support.patch_netvlad_reference import (
    authors_keypoints,
    authors_mutual_nn,
    authors_normalise_func,
    authors_spatial_score,
)


def unit_rows(rng, shape):
    values = rng.normal(size=shape)
    return (values / np.linalg.norm(values, axis=-1, keepdims=True)).astype(np.float32)


def related_candidates(rng, query, count, shift=(2, 1), grid=(6, 8)):
    """Candidates that hold the query's patches moved by `shift` cells, noised, plus strangers."""
    rows, columns = grid
    candidates = []
    for number in range(count):
        noise = 0.2 + 0.4 * number / max(count - 1, 1)
        moved = np.roll(query.reshape(rows, columns, -1), shift=shift, axis=(0, 1)).reshape(len(query), -1)
        candidates.append(unit_rows(rng, query.shape) * noise + moved * (1 - noise))
    return np.stack([c / np.linalg.norm(c, axis=1, keepdims=True) for c in candidates]).astype(np.float32)


def test_mutual_nearest_neighbours_are_the_authors(rng):
    query = unit_rows(rng, (48, 16))
    candidates = related_candidates(rng, query, 5)
    for candidate, (query_index, candidate_index) in zip(candidates, mutual_nearest_neighbours(query, candidates)):
        mutuals, fw_inds = authors_mutual_nn(query, candidate.T)
        np.testing.assert_array_equal(candidate_index, mutuals)
        np.testing.assert_array_equal(query_index, fw_inds[mutuals])


def test_one_way_nearest_neighbours_are_not_mutual(rng):
    """The purpose-made mistake: keeping every candidate patch's nearest query patch."""
    query = unit_rows(rng, (48, 16))
    candidates = unit_rows(rng, (1, 60, 16))
    similarity = query @ candidates[0].T
    one_way = similarity.argmax(axis=0)
    mutuals, _ = authors_mutual_nn(query, candidates[0].T)
    assert len(mutuals) < len(one_way)
    assert len(mutual_nearest_neighbours(query, candidates)[0][1]) == len(mutuals)


def test_rapid_spatial_score_is_the_authors(rng):
    _, indices = authors_keypoints(10, 12, 5, 1)  # a 6×8 patch grid
    grid = indices.T
    query = unit_rows(rng, (48, 16))
    for candidate in related_candidates(rng, query, 4):
        (query_index, candidate_index), = mutual_nearest_neighbours(query, candidate[None])
        ours = rapid_spatial_score(grid[query_index], grid[candidate_index], tuple(grid.max(axis=0)))
        assert -ours / len(query) == pytest.approx(authors_spatial_score(query, candidate.T, indices))


def test_rapid_spatial_score_without_centring_the_offsets_is_caught():
    """The purpose-made mistake: deviations from 0 instead of from the mean offset."""
    query_grid = np.array([[0, 0], [1, 0], [2, 1], [4, 3]])
    candidate_grid = query_grid + [2, 1]
    maxima = (5, 3)
    right = rapid_spatial_score(query_grid, candidate_grid, maxima)
    uncentred = float(np.sum((np.array(maxima) - np.abs(candidate_grid - query_grid)) ** 2))
    assert right == 4 * (5**2 + 3**2)
    assert uncentred != right


def test_fusion_orders_as_the_authors(rng):
    scores = rng.uniform(0, 1, (20, 3))
    weights = [0.45, 0.15, 0.4]
    ours = np.argsort(-fuse_scores(scores, weights), kind="stable")
    theirs = np.argsort(authors_normalise_func(-scores, weights), kind="stable")
    np.testing.assert_array_equal(ours, theirs)
    unweighted = np.argsort(-fuse_scores(scores, [1, 1, 1]), kind="stable")  # the mistake: weights dropped
    assert not np.array_equal(unweighted, theirs)


def test_a_size_without_information_adds_nothing_instead_of_nan():
    scores = np.array([[0.2, 0.0], [0.4, 0.0], [0.1, 0.0]])
    fused = fuse_scores(scores, [0.5, 0.5])
    assert np.all(np.isfinite(fused))
    np.testing.assert_allclose(fused, 0.5 * (scores[:, 0] - scores[:, 0].mean()) / scores[:, 0].std())
    assert np.all(fuse_scores(np.zeros((4, 2)), [0.5, 0.5]) == 0)


def test_ransac_finds_the_homography_inliers(rng):
    points = rng.uniform(0, 600, (40, 2))
    homography = np.array([[1.05, 0.02, 30.0], [-0.01, 0.98, -12.0], [1e-5, 0.0, 1.0]])
    projected = np.c_[points, np.ones(40)] @ homography.T
    query_points = projected[:, :2] / projected[:, 2:]
    outliers = np.arange(30, 40)
    query_points[outliers] = rng.uniform(0, 600, (10, 2))
    inliers = ransac_inliers(query_points, points, threshold_px=3.0)
    assert inliers[:30].all() and not inliers[outliers].any()
    assert not ransac_inliers(query_points[:3], points[:3], 3.0).any()  # fewer than four matches


def test_matching_in_groups_of_candidates_gives_the_same_pairs(rng, monkeypatch):
    query = unit_rows(rng, (48, 16))
    candidates = list(related_candidates(rng, query, 7)) + [unit_rows(rng, (30, 16))]  # one of another size
    together = reranker._mutual_matches(query, candidates)
    monkeypatch.setattr(reranker, "CANDIDATES_PER_PRODUCT", 2)
    for (a_query, a_candidate), (b_query, b_candidate) in zip(together, reranker._mutual_matches(query, candidates)):
        np.testing.assert_array_equal(a_query, b_query)
        np.testing.assert_array_equal(a_candidate, b_candidate)
    for candidate, (_query_index, candidate_index) in zip(candidates, together):
        mutuals, fw_inds = authors_mutual_nn(query, candidate.T)
        np.testing.assert_array_equal(candidate_index, mutuals)
