"""Hard-negative mining from a refreshed descriptor cache (arXiv 1511.07247, Sec. 4 and
Appendix A; the interval and memory rules of the authors' training code)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import faiss
import numpy as np

from netvlad_tf.data.geo_dataset import NEGATIVE_RADIUS_M, TRAIN_POSITIVE_RADIUS_M, GeoDataset
from netvlad_tf.models.losses import DEFAULT_MARGIN
from netvlad_tf.training.refresh_plan import PARTS, RefreshPlan, contains
from netvlad_tf.training.tuple_sources import TupleSource

T = TypeVar("T")
# How the cache stores descriptors: faiss' 8-bit scalar quantiser, or exact float32.
CACHE_ENCODINGS = ("sq8", "float32")
# Descriptors used to fit the 8-bit quantiser's per-dimension range.
QUANTIZER_TRAINING_SAMPLES = 2000
# Above this many database images `train` suggests a mining pool instead of the paper's
# full mining (every database image embedded at each refresh).
FULL_MINING_LIMIT = 50_000


class DescriptorCache:
    """Descriptors of many images, stored compactly: one byte per dimension with `"sq8"`.

    `"sq8"` is faiss' 8-bit scalar quantiser (per-dimension range fitted on the first
    descriptors stored): 32 768 bytes for a 32 768-D NetVLAD vector, ¼ of float32.
    `"float32"` keeps exact values.

    Example:
    >>> cache = DescriptorCache(encoding="sq8")
    >>> cache.store(np.random.default_rng(0).normal(size=(100, 16)).astype("float32"))
    >>> cache.bytes_per_vector, cache.get([0, 1]).shape
    (16, (2, 16))
    """

    def __init__(self, encoding: str = "sq8"):
        if encoding not in CACHE_ENCODINGS:
            raise ValueError(f"Unknown cache encoding {encoding!r}; use one of {CACHE_ENCODINGS}.")
        self.encoding = encoding
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
        if self.encoding == "float32":
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
        if self.encoding == "float32":
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

    The miner also owns the order of the training queries (a new random permutation on each
    pass, `next_query`) and plans each refresh (`plan_refresh`): the images whose descriptors
    it caches. The paper's full mining plans every image. With `mining_pool=N` a plan holds
    only N random database images, plus the potential positives and remembered negatives of
    the queries due before the next refresh, and those queries ("partial mining" of
    deep-visual-geo-localization-benchmark): memory and refresh time follow N and the
    refresh interval, not the database. Negatives are then sampled from the pool.

    A refresh (`refresh_from`, or `refresh` with descriptors computed elsewhere) swaps the
    cache under the miner's lock; the tuple stream takes, mines and reads each tuple under the
    same lock (`next_tuple`), so every tuple is read under the plan it was mined with.

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
        cache_encoding: str = "sq8",
        seed: int = 0,
        mining_pool: int | None = None,
    ):
        if negative_radius_m < positive_radius_m:
            raise ValueError("negative_radius_m must be at least positive_radius_m.")
        if mining_pool is not None and mining_pool < 1:
            raise ValueError(f"mining_pool must be a positive number of database images or None, got {mining_pool}.")
        self.dataset = dataset
        self.num_negatives = num_negatives
        self.num_sampled_negatives = num_sampled_negatives
        self.margin = margin
        self.mining_pool = None if mining_pool is None or mining_pool >= dataset.num_database else int(mining_pool)
        self.potential_positives = dataset.positives_within(positive_radius_m)
        self.not_negatives = dataset.not_negatives_within(negative_radius_m)
        self.training_queries = np.array(
            [q for q, found in enumerate(self.potential_positives) if found.size], dtype=np.int64
        )
        self.num_dropped = dataset.num_queries - len(self.training_queries)
        if len(self.training_queries) == 0:
            raise ValueError(
                f"{dataset.name}: no query has a database image {dataset.positive_rule(positive_radius_m)}; "
                "nothing to train on."
            )
        self.database_cache = DescriptorCache(cache_encoding)
        self.query_cache = DescriptorCache(cache_encoding)
        self.remembered_negatives: dict[int, np.ndarray] = {}
        self.queries_visited = 0
        self.revisited_queries = 0
        self._rng = np.random.default_rng(seed)
        self._order_rng = np.random.default_rng(seed)
        self._upcoming: deque[int] = deque()  # the order of the training queries
        self._window: deque[int] = deque()  # the cached plan's queries not yet visited, in order
        self._planned_window: list[int] = []  # the next plan's queries, in visiting order
        self._lock = threading.RLock()  # held while the cache is swapped and while a tuple is mined and read
        # Full mining: every image (what a refresh without plan_refresh() caches too).
        self.plan = RefreshPlan(np.arange(dataset.num_database), np.arange(dataset.num_queries))
        self._cached_plan: RefreshPlan | None = None
        self._cached_training_queries = np.zeros(0, dtype=np.int64)

    def next_query(self) -> int:
        """The next training query: the training queries in a new random order on each pass.

        Only queries of the cached plan are handed out, in the order `plan_refresh` planned. Past
        the planned ones, a plan holding every training query (full mining) goes on with the
        order; one that does not (a pool whose refresh comes later than planned) visits its
        training queries again in a new random order (`revisited_queries`)."""
        with self._lock:
            if self._cached_plan is None:
                raise RuntimeError(
                    "The descriptor cache is empty; refresh it first. With model.fit under a tf.distribute "
                    "strategy, Keras reads the first batch before the callbacks start: call "
                    "CacheRefresh.set_model(model) and CacheRefresh.refresh() before fit."
                )
            if not self._window:
                if len(self._cached_training_queries) == len(self.training_queries):
                    self._window.append(self._take_upcoming(1)[0])
                else:
                    self._window.extend(int(q) for q in self._order_rng.permutation(self._cached_training_queries))
                    self.revisited_queries += len(self._window)
            return self._window.popleft()

    def plan_refresh(self, queries_until_next: int) -> RefreshPlan:
        """Chooses (and keeps as `plan`) the images the next refresh embeds.

        Args:
            queries_until_next: training queries visited before the refresh after this one.
                The plan covers a tenth more (at least 16), for a refresh that comes a little
                late, and at most one pass over the training queries.

        Returns:
            Every image with full mining; with a pool, the pool and what the upcoming queries need.
        """
        window = min(queries_until_next + max(16, queries_until_next // 10), len(self.training_queries))
        with self._lock:  # the queries not visited under the cached plan come first
            self._planned_window = list(self._window)
            self._planned_window += self._take_upcoming(window - len(self._planned_window))
        if self.mining_pool is not None:
            query_ids = np.unique(self._planned_window)
            needed = [self.potential_positives[q] for q in query_ids]
            needed += [self.remembered_negatives[q] for q in query_ids if q in self.remembered_negatives]
            pool = self._rng.choice(self.dataset.num_database, size=self.mining_pool, replace=False)
            self.plan = RefreshPlan(np.unique(np.concatenate([pool, *needed]).astype(np.int64)), query_ids)
        return self.plan

    def refresh(self, database_descriptors: np.ndarray, query_descriptors: np.ndarray,
                on_swap: Callable[[], None] | None = None) -> None:
        """Replaces the cached descriptors with those of the `plan`'s images (the paper refreshes
        them every 1000 training queries; `refresh_from` plans and computes them).

        Args:
            database_descriptors: `(len(plan.database_ids), dim)`, rows in that order (with
                full mining: every database image in the dataset's order).
            query_descriptors: `(len(plan.query_ids), dim)`, rows in that order.
            on_swap: called under the miner's lock together with the swap (a tuple source
                making the plan's inputs the readable ones).

        Example:
        >>> dataset = GeoDataset("pair", ["d0", "d1"], [[0, 0], [100, 0]], ["q"], [[0, 0]])
        >>> miner = HardNegativeMiner(dataset, cache_encoding="float32")
        >>> miner.refresh(np.eye(2, dtype="float32"), np.array([[0.0, 1.0]], "float32"))
        >>> miner.mine(0).negatives.tolist()
        [1]
        """
        for role, descriptors, expected in (("database", database_descriptors, len(self.plan.database_ids)),
                                            ("query", query_descriptors, len(self.plan.query_ids))):
            if np.ndim(descriptors) != 2 or len(descriptors) != expected:
                raise ValueError(f"The refresh of {self.dataset.name} plans {expected} {role} images; got "
                                 f"{role} descriptors of shape {np.shape(descriptors)}.")
        with self._lock:
            if on_swap is not None:
                on_swap()
            self.database_cache.store(database_descriptors)
            self.query_cache.store(query_descriptors)
            self._cached_plan = self.plan
            self._cached_training_queries = np.intersect1d(self.plan.query_ids, self.training_queries)
            self._window, self._planned_window = deque(self._planned_window), []

    def refresh_from(self, source: TupleSource, model, queries_until_next: int, verbose: bool = False) -> RefreshPlan:
        """One cache refresh: plans it, has `source` compute `model`'s descriptors of the plan's
        images (outside the lock: training steps on the previous plan go on), then swaps the
        cache and the source's readable inputs together.

        Args:
            source: what the tuples are made of (`ImageSource`, `FrozenFeatureStore`,
                `PoolFeatureStore`); it computes the descriptors.
            model: the `PlaceRecognitionModel` being trained.
            queries_until_next: training queries before the next refresh (`plan_refresh`).
            verbose: show progress.

        Returns:
            The plan now cached.
        """
        plan = self.plan_refresh(queries_until_next)
        if verbose:
            pool = "" if self.mining_pool is None else f", a pool of {self.mining_pool} and the queries' own"
            print(f"\nRefreshing the descriptor cache ({len(plan.database_ids)} database images{pool}, "
                  f"{len(plan.query_ids)} queries)", flush=True)
        prepared = source.prepare(plan, verbose=verbose)
        database, queries = (source.descriptors(model, prepared, part, verbose=verbose) for part in PARTS)
        self.refresh(database, queries, on_swap=lambda: source.activate(prepared))
        return plan

    def next_tuple(self, read: Callable[[MinedTuple], T]) -> T | None:
        """Takes the next query, mines it and returns `read(tuple)`, all under the lock (so under
        one cached plan); None when no negative violates the margin."""
        with self._lock:
            mined = self.mine(self.next_query())
            return None if mined is None else read(mined)

    def mine(self, query: int) -> MinedTuple | None:
        """The tuple of `query` under the current cache, or None when no negative violates."""
        with self._lock:
            return self._mine(query)

    def _mine(self, query: int) -> MinedTuple | None:
        cached = self._cached_plan
        if cached is None or not contains(cached.query_ids, query):
            raise ValueError(f"Query {query} of {self.dataset.name} has no cached descriptor: the mining "
                             "pool's plan does not hold it (take queries from next_query()).")
        self.queries_visited += 1
        query_descriptor = self.query_cache.get(cached.query_rows([query]))[0]
        positives = self.potential_positives[query]
        positive_distances = _squared_distances(
            query_descriptor, self.database_cache.get(cached.database_rows(positives)))
        best = int(np.argmin(positive_distances))
        remembered = self.remembered_negatives.get(query, np.zeros(0, dtype=np.int64))
        # Remembered while an earlier pool was cached: only those of this pool have descriptors.
        candidates = np.union1d(self._sample_definite_negatives(query),
                                remembered[contains(cached.database_ids, remembered)])
        negative_distances = _squared_distances(
            query_descriptor, self.database_cache.get(cached.database_rows(candidates)))
        order = np.argsort(negative_distances, kind="stable")
        self.remembered_negatives[query] = candidates[order[: self.num_negatives]]
        violating = order[negative_distances[order] < positive_distances[best] + self.margin]
        if violating.size == 0:
            return None
        return MinedTuple(query, int(positives[best]), candidates[violating[: self.num_negatives]])

    def _take_upcoming(self, count: int) -> list[int]:
        """The next `count` queries of the order: one random permutation of the training queries
        after another (under the lock)."""
        while len(self._upcoming) < count:
            self._upcoming.extend(int(q) for q in self._order_rng.permutation(self.training_queries))
        return [self._upcoming.popleft() for _ in range(max(0, count))]

    def _sample_definite_negatives(self, query: int) -> np.ndarray:
        """Random definite negatives of `query` among the cached database images."""
        cached = self._cached_plan
        pool = cached.database_ids
        allowed = np.ones(len(pool), dtype=bool)
        near = self.not_negatives[query]
        allowed[cached.database_rows(near[contains(pool, near)])] = False
        definite = pool[allowed]
        take = min(self.num_sampled_negatives, len(definite))
        return self._rng.choice(definite, size=take, replace=False)


def _squared_distances(vector: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return ((matrix.astype(np.float64) - vector.astype(np.float64)) ** 2).sum(axis=1)
