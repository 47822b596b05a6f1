"""Re-ranking a query's global candidates by spatially verified patch matches (Patch-NetVLAD).

NetVLAD's global vector finds candidates; each candidate's patch descriptors are matched to the
query's (mutual nearest neighbours) and the matches are checked in space (RANSAC or the rapid
spatial score). The candidates are reordered by the fused scores, the global rank breaking ties.

Reference: Hausler et al., CVPR 2021, Sec. 3.4–3.5; their `local_matcher`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import keras
import numpy as np

from netvlad_tf.io.progress import Progress
from netvlad_tf.reranking.matching import (
    CANDIDATES_PER_PRODUCT,
    RANSAC_THRESHOLD_STRIDES,
    fuse_scores,
    mutual_nearest_neighbours,
    ransac_inliers,
    rapid_spatial_score,
)
from netvlad_tf.reranking.patch_descriptors import PatchDescriber, PatchFeatures
from netvlad_tf.reranking.settings import PatchSettings

# Candidates re-ranked per query by default (the authors re-rank NetVLAD's top 100).
DEFAULT_RERANK_TOP_K = 100
# Rapid spatial scoring has no inliers; for drawing, a match counts as consistent when its
# offset is within this many patch strides of the matches' mean offset on both axes.
CONSISTENT_OFFSET_STRIDES = 1.5


@dataclass
class Verification:
    """The spatial check of one candidate against the query.

    Attributes:
        scores: `(sizes,)` each patch size's score in [0, 1]: RANSAC inliers per query patch, or
            the rapid spatial score per query patch over its largest possible value.
        score: the weighted mean of `scores` (the settings' weights): comparable across queries,
            what a threshold (precision–recall, the loop detector) is set on.
        query_points, candidate_points: `(M, 2)` matched keypoints (pixels of the resized images)
            of the patch size with the largest weight.
        consistent: `(M,)` bool: RANSAC inliers, or matches whose offset agrees with the mean one.
    """

    scores: np.ndarray
    score: float
    query_points: np.ndarray
    candidate_points: np.ndarray
    consistent: np.ndarray


@dataclass
class Reranking:
    """One query's candidates after re-ranking.

    Attributes:
        order: `(C,)` positions into the candidates as given, best first.
        fused: `(C,)` the fused scores of the candidates as given (larger is better).
        verifications: the candidates' `Verification`s, as given.
    """

    order: np.ndarray
    fused: np.ndarray
    verifications: list[Verification]


class Reranker:
    """Patch-NetVLAD re-ranking with a NetVLAD model's own patch descriptors.

    Args:
        model: a `PlaceRecognitionModel` pooling with NetVLAD.
        settings: `"performance"`, `"speed"`, `"storage"` or a `PatchSettings`.

    Example:
    >>> import numpy as np
    >>> from netvlad_tf import build_netvlad_model
    >>> model = build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=4)
    >>> reranker = Reranker(model, "speed")
    >>> images = np.random.default_rng(0).uniform(0, 255, (3, 128, 160, 3)).astype("float32")
    >>> query, *candidates = reranker.describer.describe_arrays(images)
    >>> ranking = reranker.rerank(query, [candidates[0], candidates[1], query])
    >>> int(ranking.order[0])                   # the query itself verifies best
    2

    Reference: Hausler et al., CVPR 2021, Sec. 3.4–3.5.
    """

    def __init__(self, model: keras.Model, settings: str | PatchSettings = "speed"):
        self.describer = PatchDescriber(model, settings)
        self.settings = self.describer.settings
        if self.settings.scoring == "ransac":
            _require_opencv()

    def verify(self, query: PatchFeatures, candidates: Sequence[PatchFeatures]) -> list[Verification]:
        """The spatial check of each candidate against `query`."""
        settings = self.settings
        shown = int(np.argmax(settings.weights))
        per_size: list[list[tuple]] = []
        for number, (_size, stride) in enumerate(zip(settings.patch_sizes, settings.strides)):
            query_keypoints, query_grid = self.describer.keypoints(query.image_size, number)
            query_patches = query.descriptors[number]
            grid_maxima = query_grid.max(axis=0)
            matches = _mutual_matches(query_patches, [candidate.descriptors[number] for candidate in candidates])
            results = []
            for candidate, (query_index, candidate_index) in zip(candidates, matches):
                candidate_keypoints, candidate_grid = self.describer.keypoints(candidate.image_size, number)
                if settings.scoring == "ransac":
                    threshold = RANSAC_THRESHOLD_STRIDES * self.describer.geometry(query.image_size).width.stride * stride
                    consistent = ransac_inliers(query_keypoints[query_index], candidate_keypoints[candidate_index],
                                                threshold)
                    score = consistent.sum() / len(query_patches)
                else:
                    raw = rapid_spatial_score(query_grid[query_index], candidate_grid[candidate_index], grid_maxima)
                    score = raw / (len(query_patches) * max(float(np.sum(grid_maxima.astype(float) ** 2)), 1.0))
                    consistent = _consistent_offsets(query_grid[query_index], candidate_grid[candidate_index], stride)
                results.append((score, query_keypoints[query_index], candidate_keypoints[candidate_index], consistent))
            per_size.append(results)
        weights = np.asarray(settings.weights, np.float64)
        verifications = []
        for number in range(len(candidates)):
            scores = np.array([per_size[size][number][0] for size in range(len(per_size))], np.float64)
            _, query_points, candidate_points, consistent = per_size[shown][number]
            verifications.append(Verification(scores, float(scores @ weights / weights.sum()), query_points,
                                              candidate_points, consistent))
        return verifications

    def rerank(self, query: PatchFeatures, candidates: Sequence[PatchFeatures]) -> Reranking:
        """Reorders `candidates` (given in their global order) by their fused spatial scores.

        Returns:
            A `Reranking`; a tie (or scores that carry no information) keeps the global order.
        """
        if len(candidates) == 0:
            raise ValueError("Re-ranking needs at least one candidate.")
        return self._ordered(self.verify(query, candidates))

    def rerank_stored(self, query: PatchFeatures, source: CandidatePatches, database_indices: Sequence[int]) -> Reranking:
        """`rerank` of the database images `database_indices` (their global order), their patch
        features read from `source` a few candidates at a time, so memory holds a group of them,
        not all (the `performance` setting's are 23 MB an image at 640×480)."""
        if len(database_indices) == 0:
            raise ValueError("Re-ranking needs at least one candidate.")
        verifications = []
        for start in range(0, len(database_indices), CANDIDATES_PER_PRODUCT):
            group = database_indices[start: start + CANDIDATES_PER_PRODUCT]
            verifications += self.verify(query, source.features(group))
        return self._ordered(verifications)

    def _ordered(self, verifications: list[Verification]) -> Reranking:
        fused = fuse_scores(np.stack([verification.scores for verification in verifications]), self.settings.weights)
        order = np.lexsort((np.arange(len(verifications)), -fused))
        return Reranking(order, fused, verifications)


def rerank_rankings(reranker: Reranker, query_features: Iterable[tuple[int, PatchFeatures]], ranked: np.ndarray,
                    candidate_patches: CandidatePatches, top_k: int, verbose: bool = True,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Re-ranks every query's first `top_k` global candidates (the rest keep their places).

    Args:
        reranker: the `Reranker`.
        query_features: `(query position, PatchFeatures)` pairs, e.g. `describe_images` of the
            query photos (any order).
        ranked: `(Q, depth)` database indices by global similarity, best first (-1 pads).
        candidate_patches: gives the database images' patch features (`ComputedPatches`, or
            the stored ones of a descriptor folder).
        top_k: candidates re-ranked per query (≥ 1).
        verbose: show a progress bar.

    Returns:
        `(Q, depth)` the re-ranked indices and `(Q,)` each query's new best match's
        verification score (`Verification.score`, in [0, 1]).

    Example:
    >>> import numpy as np
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.reranking.candidate_patches import ComputedPatches
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).database_paths[:4]
    >>> reranker = Reranker(build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=4), "speed")
    >>> database = ComputedPatches(reranker.describer, paths, image_size=(96, 128))
    >>> queries = reranker.describer.describe_images(paths[3:], image_size=(96, 128))
    >>> reranked, best = rerank_rankings(reranker, queries, np.array([[0, 1, 3, 2]]), database, 3, verbose=False)
    >>> reranked[0, 0], reranked[0, 3]                   # the photo itself first; the 4th untouched
    (np.int64(3), np.int64(2))
    """
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"The number of candidates to re-rank must be at least 1, got {top_k!r}.")
    reranked = np.array(ranked, copy=True)
    best_scores = np.zeros(len(ranked), np.float32)
    progress = Progress(len(ranked), "query", verbose, f"re-ranking {top_k} candidates")
    for done, (position, query) in enumerate(query_features, start=1):
        candidates = ranked[position, :top_k]
        candidates = candidates[candidates >= 0]
        if len(candidates):
            reranking = reranker.rerank_stored(query, candidate_patches, candidates)
            reranked[position, : len(candidates)] = candidates[reranking.order]
            best_scores[position] = reranking.verifications[reranking.order[0]].score
        progress.update(done)
    return reranked, best_scores


class CandidatePatches(Protocol):
    """What gives database images' patch features by database index."""

    def features(self, database_indices: Sequence[int]) -> list[PatchFeatures]: ...


def _mutual_matches(query: np.ndarray, candidates: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`mutual_nearest_neighbours` of the query against every candidate, a few candidates of one
    shape per matrix product."""
    matches: list = [None] * len(candidates)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, candidate in enumerate(candidates):
        by_shape.setdefault(candidate.shape, []).append(position)
    for positions in by_shape.values():
        for start in range(0, len(positions), CANDIDATES_PER_PRODUCT):
            group = positions[start: start + CANDIDATES_PER_PRODUCT]
            stacked = np.stack([np.asarray(candidates[position], np.float32) for position in group])
            for position, pairs in zip(group, mutual_nearest_neighbours(query, stacked)):
                matches[position] = pairs
    return matches


def _consistent_offsets(query_grid: np.ndarray, candidate_grid: np.ndarray, stride: int) -> np.ndarray:
    if len(query_grid) == 0:
        return np.zeros(0, bool)
    offsets = candidate_grid.astype(np.float64) - query_grid
    return np.all(np.abs(offsets - offsets.mean(axis=0)) <= CONSISTENT_OFFSET_STRIDES * stride, axis=1)


def _require_opencv() -> None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise ImportError("RANSAC re-ranking needs OpenCV: pip install 'netvlad_tf[rerank]' (or use the "
                          "'speed' or 'storage' settings, which score without it).") from None


