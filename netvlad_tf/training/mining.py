"""Hard-negative mining from a refreshed descriptor cache (arXiv 1511.07247, Sec. 4 and
Appendix A; the interval and memory rules of the authors' training code)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from netvlad_tf.data.geo_dataset import NEGATIVE_RADIUS_M, TRAIN_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.models.losses import DEFAULT_MARGIN

CACHE_PRECISIONS = ("int8", "float32")
# Descriptors used to fit the 8-bit quantiser's per-dimension range.
QUANTIZER_TRAINING_SAMPLES = 2000


class DescriptorCache:
    """Descriptors of many images, stored compactly: one byte per dimension with `int8`.

    `"int8"` is faiss' 8-bit scalar quantiser (per-dimension range fitted on the first
    descriptors stored): 32 768 bytes for a 32 768-D NetVLAD vector, ¼ of float32.
    `"float32"` keeps exact values.

    Example:
    >>> cache = DescriptorCache(precision="int8")
    >>> cache.store(np.random.default_rng(0).normal(size=(100, 16)).astype("float32"))
    >>> cache.bytes_per_vector, cache.get([0, 1]).shape
    (16, (2, 16))
    """

    def __init__(self, precision: str = "int8"):
        if precision not in CACHE_PRECISIONS:
            raise ValueError(f"Unknown cache precision {precision!r}; use one of {CACHE_PRECISIONS}.")
        self.precision = precision
        self._codes: np.ndarray | None = None
        self._quantizer: faiss.ScalarQuantizer | None = None

    def __len__(self) -> int:
        return 0 if self._codes is None else len(self._codes)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes the cache holds per descriptor (0 while empty)."""
        return 0 if self._codes is None else self._codes[0].nbytes

    def store(self, descriptors: np.ndarray) -> None:
        """Replaces the cache content with `(N, dim)` descriptors."""
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if self.precision == "float32":
            self._codes = descriptors.copy()
            return
        self._quantizer = faiss.ScalarQuantizer(descriptors.shape[1], faiss.ScalarQuantizer.QT_8bit)
        self._quantizer.train(descriptors[:QUANTIZER_TRAINING_SAMPLES])
        self._codes = self._quantizer.compute_codes(descriptors)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The (dequantised) descriptors at `indices`, `(len(indices), dim)` float32."""
        if self._codes is None:
            raise RuntimeError(
                "The descriptor cache is empty; refresh it first. With model.fit under a "
                "tf.distribute strategy, Keras reads the first batch before the callbacks start: call "
                "CacheRefresh.set_model(model) and CacheRefresh.refresh() before fit."
            )
        codes = self._codes[np.asarray(indices, dtype=np.int64)]
        if self.precision == "float32":
            return codes
        return self._quantizer.decode(np.ascontiguousarray(codes))


@dataclass(frozen=True)
class MinedTuple:
    """One training tuple: database indices of the best positive and the hard negatives."""

    query: int
    positive: int
    negatives: np.ndarray


class HardNegativeMiner:
    """Chooses training tuples from cached descriptors, as the paper does.

    Per query: the best positive is the potential positive (within `positive_radius_m`)
    nearest in descriptor space; the candidate negatives are `num_sampled_negatives` random
    definite negatives (beyond `negative_radius_m`) plus the `num_negatives` hardest ones
    remembered from this query's previous visit; the negatives that violate the margin,
    `d²(q, n) < d²(q, p) + margin`, are kept, hardest first, at most `num_negatives`. A
    query without a violating negative yields no tuple.

    Queries without any potential positive cannot train and are dropped (`num_dropped`).

    Example:
    >>> dataset = GeoDataset("line", [f"d{i}" for i in range(40)], [[10 * i, 0] for i in range(40)],
    ...                      ["q"], [[0, 0]])
    >>> miner = HardNegativeMiner(dataset, num_sampled_negatives=10)
    >>> miner.training_queries.tolist(), miner.num_dropped
    ([0], 0)
    """

    def __init__(
        self,
        dataset: GeoDataset,
        positive_radius_m: float = TRAIN_POSITIVE_RADIUS_M,
        negative_radius_m: float = NEGATIVE_RADIUS_M,
        num_negatives: int = 10,
        num_sampled_negatives: int = 1000,
        margin: float = DEFAULT_MARGIN,
        cache_precision: str = "int8",
        seed: int = 0,
    ):
        if negative_radius_m < positive_radius_m:
            raise ValueError("negative_radius_m must be at least positive_radius_m.")
        self.dataset = dataset
        self.num_negatives = num_negatives
        self.num_sampled_negatives = num_sampled_negatives
        self.margin = margin
        self.potential_positives = dataset.positives_within(positive_radius_m)
        self.not_negatives = dataset.positives_within(negative_radius_m)
        self.training_queries = np.array(
            [q for q, found in enumerate(self.potential_positives) if found.size], dtype=np.int64
        )
        self.num_dropped = dataset.num_queries - len(self.training_queries)
        if len(self.training_queries) == 0:
            raise ValueError(
                f"{dataset.name}: no query has a database image within {positive_radius_m} m; "
                "nothing to train on."
            )
        self.database_cache = DescriptorCache(cache_precision)
        self.query_cache = DescriptorCache(cache_precision)
        self.remembered_negatives: dict[int, np.ndarray] = {}
        self.queries_visited = 0
        self._rng = np.random.default_rng(seed)

    def refresh(self, database_descriptors: np.ndarray, query_descriptors: np.ndarray) -> None:
        """Replaces the cached descriptors of the database and the queries (the paper refreshes
        them every 1000 training queries; `netvlad_tf.training.CacheRefresh` computes them).

        Args:
            database_descriptors: `(num_database, dim)`, rows in the dataset's database order.
            query_descriptors: `(num_queries, dim)`, rows in the dataset's query order.

        Example:
        >>> dataset = GeoDataset("pair", ["d0", "d1"], [[0, 0], [100, 0]], ["q"], [[0, 0]])
        >>> miner = HardNegativeMiner(dataset, cache_precision="float32")
        >>> miner.refresh(np.eye(2, dtype="float32"), np.array([[0.0, 1.0]], "float32"))
        >>> miner.mine(0).negatives.tolist()
        [1]
        """
        for role, descriptors, expected in (("database", database_descriptors, self.dataset.num_database),
                                            ("query", query_descriptors, self.dataset.num_queries)):
            if np.ndim(descriptors) != 2 or len(descriptors) != expected:
                raise ValueError(f"{self.dataset.name} has {expected} {role} images; got {role} "
                                 f"descriptors of shape {np.shape(descriptors)}.")
        self.database_cache.store(database_descriptors)
        self.query_cache.store(query_descriptors)

    def mine(self, query: int) -> MinedTuple | None:
        """The tuple of `query` under the current cache, or None when no negative violates."""
        self.queries_visited += 1
        query_descriptor = self.query_cache.get([query])[0]
        positives = self.potential_positives[query]
        positive_distances = _squared_distances(query_descriptor, self.database_cache.get(positives))
        best = int(np.argmin(positive_distances))
        candidates = np.union1d(
            self._sample_definite_negatives(query),
            self.remembered_negatives.get(query, np.zeros(0, dtype=np.int64)),
        )
        negative_distances = _squared_distances(query_descriptor, self.database_cache.get(candidates))
        order = np.argsort(negative_distances, kind="stable")
        self.remembered_negatives[query] = candidates[order[: self.num_negatives]]
        violating = order[negative_distances[order] < positive_distances[best] + self.margin]
        if violating.size == 0:
            return None
        return MinedTuple(query, int(positives[best]), candidates[violating[: self.num_negatives]])

    def _sample_definite_negatives(self, query: int) -> np.ndarray:
        allowed = np.ones(self.dataset.num_database, dtype=bool)
        allowed[self.not_negatives[query]] = False
        definite = np.flatnonzero(allowed)
        take = min(self.num_sampled_negatives, len(definite))
        return self._rng.choice(definite, size=take, replace=False)


def _squared_distances(vector: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return ((matrix.astype(np.float64) - vector.astype(np.float64)) ** 2).sum(axis=1)
