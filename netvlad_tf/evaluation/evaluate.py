"""`evaluate(model, dataset)`: embed, search, Recall@N at 25 m, per-condition breakdown.

Reference: arXiv 1511.07247, Sec. 5.1 (a query is correctly localised at N if one of its top N
database images is within 25 m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.geo_dataset import EVAL_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.evaluation.pixels import pixel_descriptors
from netvlad_tf.evaluation.recall import DEFAULT_NS, first_per_group, recall_at_n
from netvlad_tf.evaluation.stored_descriptors import cached_descriptors, descriptor_cache_key
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.retrieval import create_index

# The one baseline evaluate() computes without a model: raw thumbnails.
PIXELS = "pixels"


@dataclass
class EvaluationResult:
    """What `evaluate` measured.

    Attributes:
        recall: `{N: fraction}` over the evaluated queries.
        recall_by_condition: the same per query condition (e.g. day / sunset / night).
        query_indices: the evaluated queries (those with a positive), `(Q,)`.
        ranked: `(Q, max N)` retrieved database indices, best first (-1 pads short rows).
        distances: `(Q, max N)` their distances.
        positives: per evaluated query, the database indices within the radius.
        num_dropped: queries without any positive, left out as in the paper.
    """

    recall: dict[int, float]
    recall_by_condition: dict[str, dict[int, float]]
    query_indices: np.ndarray
    ranked: np.ndarray
    distances: np.ndarray
    positives: list[np.ndarray]
    num_dropped: int
    num_database: int
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The result as JSON-ready types (what `results.json` holds)."""
        return {
            "recall": {str(n): value for n, value in self.recall.items()},
            "recall_by_condition": {
                condition: {str(n): value for n, value in curve.items()}
                for condition, curve in self.recall_by_condition.items()
            },
            "num_queries": int(len(self.query_indices)),
            "num_dropped_queries": int(self.num_dropped),
            "num_database": int(self.num_database),
            **self.details,
        }


def evaluate(
    model: keras.Model | None,
    dataset: GeoDataset,
    ns: Sequence[int] = DEFAULT_NS,
    radius_m: float = EVAL_POSITIVE_RADIUS_M,
    pooling: str | None = None,
    image_size: tuple[int, int] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = 8,
    index_kind: str = "flat",
    database_groups: np.ndarray | None = None,
    cache_dir=None,
    verbose: bool = True,
) -> EvaluationResult:
    """Recall@N of `model` on `dataset`: a query counts at N when one of its top-N database
    images lies within `radius_m` (the paper: 25 m).

    Args:
        model: the model to evaluate, as it is (for the paper's baselines pass e.g.
            `model.with_pooling("mac")`); None with `pooling="pixels"`.
        dataset: database and queries with coordinates.
        pooling: None (the model's descriptors) or `"pixels"` (raw thumbnails, no model).
        image_size, max_side: resize policy (see `netvlad_tf.data.load_image`).
        index_kind: `"flat"` (exact), `"ivfpq"`, `"ivfsq8"`, `"hnsw"` or `"numpy"`.
        database_groups: a group id per database image whose members count once in the
            ranking (Tokyo 24/7: the cutouts of one panorama).
        cache_dir: keep descriptors here and reuse them when the model, images and settings
            are the same.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> result = evaluate(None, read_csv_dataset(nordland_csv("test")), pooling="pixels",
    ...                   verbose=False)
    >>> sorted(result.recall)
    [1, 5, 10, 20]
    """
    if pooling not in (None, PIXELS):
        raise ValueError(f"pooling must be None (the model as it is) or {PIXELS!r}, got {pooling!r}; "
                         f"for a pooling baseline evaluate model.with_pooling({pooling!r}).")
    if pooling is None and model is None:
        raise ValueError(f"evaluate needs a model; only pooling={PIXELS!r} works without one.")
    ns = tuple(sorted(set(int(n) for n in ns)))
    all_positives = dataset.positives_within(radius_m)
    query_indices = dataset.queries_with_positives(radius_m)
    if len(query_indices) == 0:
        raise ValueError(f"{dataset.name}: no query has a database image {dataset.positive_rule(radius_m)}.")
    embed = _embedder(model, pooling, image_size, max_side, batch_size, cache_dir, verbose)
    database = embed(dataset.database_paths, "database")
    queries = embed([dataset.query_paths[q] for q in query_indices], "queries")

    index = create_index(index_kind, database.shape[1], model_name=PIXELS if pooling else model.name)
    index.add(database)
    depth = max(ns)
    if database_groups is not None:
        group_sizes = np.unique(np.asarray(database_groups), return_counts=True)[1]
        distances, ranked = index.search(queries, depth * int(group_sizes.max()), verbose=verbose)
        ranked = first_per_group(ranked, database_groups, depth)
        distances = distances[:, :depth]
    else:
        distances, ranked = index.search(queries, depth, verbose=verbose)
    positives = [all_positives[q] for q in query_indices]
    by_condition = {}
    if dataset.query_conditions is not None:
        conditions = np.array([dataset.query_conditions[q] for q in query_indices])
        for condition in sorted(set(conditions) - {""}):
            members = np.flatnonzero(conditions == condition)
            by_condition[condition] = recall_at_n(ranked[members], [positives[m] for m in members], ns)
    return EvaluationResult(
        recall=recall_at_n(ranked, positives, ns),
        recall_by_condition=by_condition,
        query_indices=query_indices,
        ranked=ranked,
        distances=distances,
        positives=positives,
        num_dropped=dataset.num_queries - len(query_indices),
        num_database=dataset.num_database,
        details={"model": PIXELS if pooling else model.name, "radius_m": radius_m, "index": index_kind, "dataset": dataset.name},
    )


def _embedder(model, pooling, image_size, max_side, batch_size, cache_dir, verbose):
    if pooling == PIXELS:
        return lambda paths, role: pixel_descriptors(paths)

    def embed(paths, role):
        if verbose:
            print(f"Embedding {len(paths)} {role} images with {model.name}", flush=True)
        compute = lambda: embed_images(model, paths, image_size, max_side, batch_size, verbose)
        if cache_dir is None:
            return compute()
        key = descriptor_cache_key(model, paths, image_size, max_side)
        return cached_descriptors(Path(cache_dir) / f"{role}-{key}.npy", compute)

    return embed

