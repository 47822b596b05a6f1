"""`evaluate(model, dataset)`: embed, search, Recall@N at 25 m, per-condition breakdown, the
precision–recall of best matches, and sequence matching.

Reference: arXiv 1511.07247, Sec. 5.1 (a query is correctly localised at N if one of its top N
database images is within 25 m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.geo_dataset import EVAL_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.decisions.precision_recall import PrecisionRecall, best_match_precision_recall
from netvlad_tf.decisions.sequences import DEFAULT_SPEEDS, sequence_similarities
from netvlad_tf.evaluation.pixels import pixel_descriptors
from netvlad_tf.evaluation.recall import DEFAULT_NS, first_per_group, recall_at_n
from netvlad_tf.evaluation.stored_descriptors import cached_descriptors, descriptor_cache_key
from netvlad_tf.inference.precision import choose_precision
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.reranking.candidate_patches import ComputedPatches
from netvlad_tf.reranking.reranker import DEFAULT_RERANK_TOP_K, Reranker, rerank_rankings
from netvlad_tf.reranking.settings import PatchSettings
from netvlad_tf.retrieval import create_index

# The one baseline evaluate() computes without a model: raw thumbnails.
PIXELS = "pixels"


@dataclass
class Ranking:
    """One way of ranking the database for every query (single images, or sequences of L
    frames) and what it gives.

    Attributes:
        recall: `{N: fraction}` over the queries that have a positive (the paper's Recall@N).
        recall_by_condition: the same per query condition (e.g. day / sunset / night).
        ranked: `(Q, max N)` retrieved database indices of the queries with a positive, best
            first (-1 pads short rows).
        distances: `(Q, max N)` their squared L2 distances (for sequences: the mean over the
            sequence, `2 − 2·similarity` for L2-normalised descriptors).
        precision_recall: accepting each query's best match by its similarity, over every
            query, those without a positive included (`best_match_precision_recall`).
        best_similarity: `(all queries,)` similarity of each query's best match.
        best_match: `(all queries,)` that match's database index.
    """

    recall: dict[int, float]
    recall_by_condition: dict[str, dict[int, float]]
    ranked: np.ndarray
    distances: np.ndarray
    precision_recall: PrecisionRecall
    best_similarity: np.ndarray
    best_match: np.ndarray

    def to_json(self) -> dict:
        """Recall@N, per condition, and the precision–recall summary as JSON-ready types."""
        return {
            "recall": {str(n): value for n, value in self.recall.items()},
            "recall_by_condition": {
                condition: {str(n): value for n, value in curve.items()}
                for condition, curve in self.recall_by_condition.items()
            },
            "precision_recall": self.precision_recall.summary(),
        }


@dataclass
class EvaluationResult:
    """What `evaluate` measured: single images, and sequences where asked.

    Attributes:
        single: the ranking of single images (`recall`, `ranked`… are its fields too).
        sequences: `{L: Ranking}` of sequence matching with L frames.
        query_indices: the queries with a positive, `(Q,)`: the rows of `ranked`.
        positives: per query with a positive, the database indices within the radius.
        num_dropped: queries without any positive, left out of Recall@N as in the paper (kept
            in precision–recall, where rejecting them is right).
        num_database: database images.
    """

    single: Ranking
    sequences: dict[int, Ranking]
    query_indices: np.ndarray
    positives: list[np.ndarray]
    num_dropped: int
    num_database: int
    details: dict = field(default_factory=dict)
    reranked: Ranking | None = None

    @property
    def recall(self) -> dict[int, float]:
        """Recall@N of single images."""
        return self.single.recall

    @property
    def recall_by_condition(self) -> dict[str, dict[int, float]]:
        """Recall@N of single images per query condition."""
        return self.single.recall_by_condition

    @property
    def ranked(self) -> np.ndarray:
        """`(Q, max N)` database indices of single-image retrieval, best first."""
        return self.single.ranked

    @property
    def distances(self) -> np.ndarray:
        """`(Q, max N)` distances of single-image retrieval."""
        return self.single.distances

    @property
    def precision_recall(self) -> PrecisionRecall:
        """Precision–recall of single images' best matches."""
        return self.single.precision_recall

    def to_json(self) -> dict:
        """The result as JSON-ready types (what `results.json` holds)."""
        return {
            **self.single.to_json(),
            **({"reranked": self.reranked.to_json()} if self.reranked is not None else {}),
            "sequences": {str(length): ranking.to_json() for length, ranking in self.sequences.items()},
            "num_queries": int(len(self.query_indices)),
            "num_dropped_queries": int(self.num_dropped),
            "num_database": int(self.num_database),
            **self.details,
        }


def evaluate(
    model: keras.Model | None,
    dataset: GeoDataset,
    *,
    ns: Sequence[int] = DEFAULT_NS,
    radius_m: float = EVAL_POSITIVE_RADIUS_M,
    baseline: str | None = None,
    image_size: tuple[int, int] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
    index_kind: str = "flat",
    database_groups: np.ndarray | None = None,
    stored_descriptors=None,
    sequence_lengths: Sequence[int] = (),
    sequence_speeds: Sequence[float] = DEFAULT_SPEEDS,
    verbose: bool = True,
    precision: str = "float32",
    rerank: str | PatchSettings | None = None,
    rerank_top_k: int = DEFAULT_RERANK_TOP_K,
) -> EvaluationResult:
    """Recall@N of `model` on `dataset` (a query counts at N when one of its top-N database
    images lies within `radius_m`, the paper: 25 m), the precision–recall of accepting each
    query's best match by its similarity, and the same for sequences of frames.

    Args:
        model: the model to evaluate, as it is (for the paper's baselines pass e.g.
            `model.with_pooling("mac")`); None with `baseline="pixels"`.
        dataset: database and queries with coordinates.
        baseline: None (the model's descriptors) or `"pixels"` (raw thumbnails, no model).
        image_size, max_side: resize policy (see `netvlad_tf.data.load_image`).
        index_kind: `"flat"` (exact), `"ivfpq"`, `"ivfsq8"`, `"hnsw"` or `"numpy"`.
        database_groups: a group id per database image whose members count once in the
            ranking (Tokyo 24/7: the cutouts of one panorama).
        stored_descriptors: a folder to keep descriptors in and reuse them from when the
            model, images and settings are the same.
        sequence_lengths: also rank by sequences of each of these lengths L > 1
            (`sequence_similarities`, each split in its capture order, `GeoDataset.stream_order`).
            Exact: it scores every query against every database image (about 50 bytes per
            query–database pair while scoring).
        sequence_speeds: relative speeds of the database traversal searched by sequences.
        verbose: show progress.
        precision: what the images are embedded in (`netvlad_tf.inference.precision`; int8
            is calibrated on the database images).
        rerank: also re-rank each query's first `rerank_top_k` candidates by Patch-NetVLAD
            (`"performance"`, `"speed"`, `"storage"` or a `PatchSettings`; the model's own
            patch descriptors, computed for the candidates as they are needed): the result's
            `reranked` holds Recall@N and the precision–recall after it, with each best match's
            verification score as its similarity.
        rerank_top_k: candidates re-ranked per query.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> result = evaluate(None, read_csv_dataset(nordland_csv("test")), baseline="pixels",
    ...                   sequence_lengths=[5], verbose=False)
    >>> sorted(result.recall), result.sequences[5].recall[1] > result.recall[1]
    ([1, 5, 10, 20], True)

    Reference: arXiv 1511.07247, Sec. 5.1 (Recall@N); VPR-Bench (Zaffar et al., IJCV 2021) for
    precision–recall; SeqSLAM (Milford & Wyeth, ICRA 2012) for sequences.
    """
    if baseline not in (None, PIXELS):
        raise ValueError(f"baseline must be None (the model as it is) or {PIXELS!r}, got {baseline!r}; "
                         f"for a pooling baseline evaluate model.with_pooling({baseline!r}).")
    if baseline is None and model is None:
        raise ValueError(f"evaluate needs a model; only baseline={PIXELS!r} works without one.")
    if rerank is not None and baseline == PIXELS:
        raise ValueError("Re-ranking uses a NetVLAD model's patch descriptors; raw pixels have none.")
    reranker = Reranker(model, rerank) if rerank is not None else None
    if reranker is not None and (int(rerank_top_k) != rerank_top_k or rerank_top_k < 1):
        raise ValueError(f"rerank_top_k must be at least 1 candidate, got {rerank_top_k!r}.")
    ns = tuple(sorted(set(int(n) for n in ns)))
    sequence_lengths = sorted({int(length) for length in sequence_lengths} - {1})
    if any(length < 1 for length in sequence_lengths):
        raise ValueError(f"Sequence lengths must be positive numbers of frames, got {sequence_lengths}.")
    all_positives = dataset.positives_within(radius_m)
    query_indices = dataset.queries_with_positives(radius_m)
    if len(query_indices) == 0:
        raise ValueError(f"{dataset.name}: no query has a database image {dataset.positive_rule(radius_m)}.")
    requested = precision
    precision, reason = choose_precision(requested)
    if baseline == PIXELS and precision != "float32":
        raise ValueError("Raw pixels are compared as they are; --precision applies to a model.")
    if verbose and requested != "float32" and baseline != PIXELS:
        print(reason, flush=True)
    runner = None if baseline == PIXELS else ModelRunner.prepare(
        model, precision, calibration_paths=dataset.database_paths, image_size=image_size, max_side=max_side,
        verbose=verbose)
    embed = _embedder(runner, image_size, max_side, batch_size, stored_descriptors, verbose)
    database = embed(dataset.database_paths, "database")
    queries = embed(dataset.query_paths, "query")

    index = create_index(index_kind, database.shape[1], model_name=PIXELS if baseline else model.name)
    index.add(database)
    depth = max(ns)
    search_depth = depth
    if database_groups is not None:
        search_depth = depth * int(np.unique(np.asarray(database_groups), return_counts=True)[1].max())
    if reranker is not None:
        search_depth = max(search_depth, min(int(rerank_top_k), dataset.num_database))
    distances, ranked = index.search(queries, search_depth, verbose=verbose)
    best_similarity = np.einsum("qd,qd->q", queries, database[ranked[:, 0]])
    decide = partial(_ranking, dataset=dataset, positives=all_positives, query_indices=query_indices, ns=ns,
                     depth=depth, database_groups=database_groups)
    single = decide(ranked, distances, best_similarity)
    reranked = None
    if reranker is not None:
        reranked = _reranked(reranker, dataset, ranked, distances, int(rerank_top_k), image_size, max_side, verbose,
                             decide)
    sequences = {}
    if sequence_lengths:
        query_order, query_segments = dataset.stream_order("query")
        database_order, database_segments = dataset.stream_order("database")
        frame_similarities = queries[query_order] @ database[database_order].T
        for length in sequence_lengths:
            in_stream_order = sequence_similarities(frame_similarities, length, sequence_speeds,
                                                    query_segments, database_segments)
            scores = np.empty_like(in_stream_order)
            scores[np.ix_(query_order, database_order)] = in_stream_order
            ranked_by_sequence = np.argsort(-scores, axis=1, kind="stable")[:, :search_depth]
            best = np.take_along_axis(scores, ranked_by_sequence, axis=1)
            sequences[length] = decide(ranked_by_sequence, 2 - 2 * best, best[:, 0])
    return EvaluationResult(
        single=single,
        sequences=sequences,
        query_indices=query_indices,
        positives=[all_positives[q] for q in query_indices],
        num_dropped=dataset.num_queries - len(query_indices),
        num_database=dataset.num_database,
        details={"model": PIXELS if baseline else model.name, "radius_m": radius_m, "index": index_kind,
                 "dataset": dataset.name, "sequence_speeds": [float(speed) for speed in sequence_speeds],
                 **({"rerank": _settings_json(reranker.settings, rerank), "rerank_top_k": int(rerank_top_k)}
                    if reranker is not None else {})},
        reranked=reranked,
    )


def _reranked(reranker, dataset, ranked, distances, top_k, image_size, max_side, verbose, decide) -> Ranking:
    """The ranking after Patch-NetVLAD re-ranking of each query's first `top_k` candidates."""
    if verbose:
        print(f"Re-ranking the top {top_k} candidates of {dataset.num_queries} queries by patch matching "
              "(candidates' patch features computed from their images)", flush=True)
    database_patches = ComputedPatches(reranker.describer, dataset.database_paths, image_size, max_side)
    queries = reranker.describer.describe_images(dataset.query_paths, image_size, max_side)
    reranked, best_scores = rerank_rankings(reranker, queries, ranked, database_patches, top_k, verbose)
    # The distances travel with their images: a re-ranked row lists its candidates' global distances.
    moved = np.full_like(distances, np.nan)
    for row, (before, after) in enumerate(zip(ranked, reranked)):
        where = {int(index): column for column, index in enumerate(before)}
        moved[row] = [distances[row, where[int(index)]] if int(index) in where else np.nan for index in after]
    return decide(reranked, moved, best_scores)


def _settings_json(settings: PatchSettings, asked) -> dict:
    return {"name": asked if isinstance(asked, str) else None, "patch_sizes": list(settings.patch_sizes),
            "strides": list(settings.strides), "weights": list(settings.weights), "dims": settings.dims,
            "scoring": settings.scoring}


def _ranking(ranked, distances, best_similarity, dataset, positives, query_indices, ns, depth,
             database_groups) -> Ranking:
    """Recall@N on the queries with a positive and precision–recall on all, from one ranking of
    every query."""
    best_match = ranked[:, 0]
    has_positive = np.array([found.size > 0 for found in positives])
    best_is_correct = np.array([match in found for match, found in zip(best_match, positives)])
    curve = best_match_precision_recall(best_similarity, best_is_correct, has_positive)
    ranked, distances = ranked[query_indices], distances[query_indices]
    if database_groups is not None:
        ranked = first_per_group(ranked, database_groups, depth)
    distances = distances[:, :depth]
    kept_positives = [positives[q] for q in query_indices]
    by_condition = {}
    if dataset.query_conditions is not None:
        conditions = np.array([dataset.query_conditions[q] for q in query_indices])
        for condition in sorted(set(conditions) - {""}):
            members = np.flatnonzero(conditions == condition)
            by_condition[condition] = recall_at_n(ranked[members], [kept_positives[m] for m in members], ns)
    return Ranking(recall_at_n(ranked, kept_positives, ns), by_condition, ranked, distances, curve,
                   np.asarray(best_similarity, np.float32), best_match)


def _embedder(runner: ModelRunner | None, image_size, max_side, batch_size, stored_descriptors, verbose):
    """`embed(paths, role)`: the runner's descriptors (read from `stored_descriptors` when kept
    there), or raw pixels without a runner (the pixel baseline)."""
    if runner is None:
        return lambda paths, role: pixel_descriptors(paths)

    def embed(paths, role):
        if verbose:
            print(f"Embedding {len(paths)} {role} images with {runner.forward.name}", flush=True)
        compute = lambda: runner.embed(paths, image_size, max_side, batch_size, verbose)
        if stored_descriptors is None:
            return compute()
        precision = [runner.precision] if runner.precision != "float32" else []
        key = descriptor_cache_key(runner.model, paths, image_size, max_side, *precision)
        return cached_descriptors(Path(stored_descriptors) / f"{role}-{key}.npy", compute)

    return embed

