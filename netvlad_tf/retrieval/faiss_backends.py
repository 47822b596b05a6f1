"""The faiss search backends: exact (Flat), IVF-PQ, IVF-SQ8 and HNSW, each registered as a kind."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from netvlad_tf.retrieval.index import DescriptorIndex, register_index


class _FaissIndex(DescriptorIndex):
    """Shared plumbing of the faiss backends: search, save and load of `self._index`."""

    @property
    def size(self) -> int:
        return self._index.ntotal

    def _add(self, descriptors):
        self._index.add(descriptors)

    def _search(self, queries, k):
        distances, indices = self._index.search(queries, k)
        return distances, indices.astype(np.int64)

    def _save_data(self, directory):
        faiss.write_index(self._index, str(directory / "index.faiss"))

    @classmethod
    def _from_saved(cls, directory: Path, metadata: dict):
        parameters = {key: metadata[key] for key in cls._parameter_names}
        index = cls(metadata["dim"], metadata["metric"], metadata["model_name"], **parameters)
        index._index = faiss.read_index(str(directory / "index.faiss"))
        index._after_load()
        return index

    _parameter_names: tuple[str, ...] = ()

    def _parameters(self) -> dict:
        return {key: getattr(self, key) for key in self._parameter_names}

    def _after_load(self) -> None:
        pass

    def _faiss_metric(self):
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT


@register_index("flat")
class FaissFlatIndex(_FaissIndex):
    """Exact search with faiss (`IndexFlatL2` / `IndexFlatIP`): 4·dim bytes per vector.

    Example:
    >>> index = FaissFlatIndex(dim=2)
    >>> index.add(np.array([[0, 0], [1, 0], [5, 5]]))
    >>> index.search(np.array([[4.0, 4.0]]), k=1)[1].tolist()
    [[2]]
    """

    backend = "faiss_flat"

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None):
        super().__init__(dim, metric, model_name)
        self._index = faiss.IndexFlatL2(self.dim) if metric == "l2" else faiss.IndexFlatIP(self.dim)


class _FaissIVFIndex(_FaissIndex):
    """Inverted lists over compressed vectors; subclasses name the compression (`_encoding`)."""

    def __init__(self, dim: int, metric: str, model_name: str | None, num_lists: int | None, num_probes: int):
        super().__init__(dim, metric, model_name)
        self.num_lists = num_lists
        self.num_probes = num_probes
        self._index = None

    @property
    def size(self) -> int:
        return 0 if self._index is None else self._index.ntotal

    def _encoding(self) -> str:
        raise NotImplementedError

    def _factory_encoding(self) -> str:
        """The encoding as `faiss.index_factory` spells it, with its build options."""
        return self._encoding()

    def _add(self, descriptors):
        if self._index is None:
            self._train(descriptors)
        self._index.add(descriptors)

    def _train(self, descriptors):
        if self.num_lists is None:
            self.num_lists = int(np.clip(4 * np.sqrt(len(descriptors)), 1, max(1, len(descriptors) // 39)))
        if len(descriptors) < max(self.num_lists, 256):
            raise ValueError(
                f"IVF-{self._encoding()} needs at least {max(self.num_lists, 256)} descriptors in its "
                f"first add to train, got {len(descriptors)}; use the flat index for small databases."
            )
        index = faiss.index_factory(self.dim, f"IVF{self.num_lists},{self._factory_encoding()}", self._faiss_metric())
        sample = max(10_000, 39 * self.num_lists)
        index.train(descriptors[:sample])
        index.nprobe = self.num_probes
        self._index = index

    def _after_load(self):
        self._index.nprobe = self.num_probes


@register_index("ivfpq")
class FaissIVFPQIndex(_FaissIVFIndex):
    """Inverted lists with product quantisation for large databases (millions of images).

    Trained on the first descriptors added (at most `max(10 000, 39·num_lists)` of them).

    Args:
        num_lists: inverted lists; default `4·√N` of the first batch added.
        num_subquantizers: PQ sub-vectors of 8 bits each, i.e. bytes per vector; default
            `dim / 4` (a 16× smaller store than float32). Must divide `dim`. Training time
            grows with it: at 4096-D prefer `FaissIVFSQ8Index` or a 256-D whitening.
        num_probes: lists visited per query (default 16).

    Example:
    >>> points = np.random.default_rng(0).normal(size=(300, 8)).astype("float32")
    >>> index = FaissIVFPQIndex(dim=8)
    >>> index.add(points)
    >>> index.search(points[:1], k=1)[1].tolist()
    [[0]]
    """

    backend = "faiss_ivfpq"
    _parameter_names = ("num_lists", "num_subquantizers", "num_probes")

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None,
                 num_lists: int | None = None, num_subquantizers: int | None = None, num_probes: int = 16):
        super().__init__(dim, metric, model_name, num_lists, num_probes)
        self.num_subquantizers = num_subquantizers or max(1, self.dim // 4)
        if self.dim % self.num_subquantizers:
            raise ValueError(f"num_subquantizers={self.num_subquantizers} must divide dim={self.dim}.")

    def _encoding(self) -> str:
        return f"PQ{self.num_subquantizers}"

    def _factory_encoding(self) -> str:
        # "np": no polysemous training. The factory's default reorders the PQ codes for
        # Hamming-distance pre-filtering, which this index never uses, at 5× the training time.
        return f"{self._encoding()}np"


@register_index("ivfsq8")
class FaissIVFSQ8Index(_FaissIVFIndex):
    """Inverted lists over 8-bit scalar-quantised vectors (one byte per dimension, ¼ of
    float32): for high-dimensional descriptors (4096-D) where product quantisation is slow
    to train and loses too much. Trained like `FaissIVFPQIndex`.

    Args:
        num_lists: inverted lists; default `4·√N` of the first batch added.
        num_probes: lists visited per query (default 16).

    Example:
    >>> points = np.random.default_rng(0).normal(size=(300, 8)).astype("float32")
    >>> index = FaissIVFSQ8Index(dim=8)
    >>> index.add(points)
    >>> index.search(points[:1], k=1)[1].tolist()
    [[0]]
    """

    backend = "faiss_ivfsq8"
    _parameter_names = ("num_lists", "num_probes")

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None,
                 num_lists: int | None = None, num_probes: int = 16):
        super().__init__(dim, metric, model_name, num_lists, num_probes)

    def _encoding(self) -> str:
        return "SQ8"


@register_index("hnsw")
class FaissHNSWIndex(_FaissIndex):
    """A navigable small-world graph (`IndexHNSWFlat`): fast exact-vector search, no training.

    Args:
        neighbors: graph degree M (default 32).
        ef_search: candidates explored per query (default 128): higher is slower and closer
            to exact.
        ef_construction: candidates explored while building (default 200).

    Example:
    >>> index = FaissHNSWIndex(dim=2)
    >>> index.add(np.array([[0, 0], [1, 0], [5, 5]]))
    >>> index.search(np.array([[4.0, 4.0]]), k=1)[1].tolist()
    [[2]]
    """

    backend = "faiss_hnsw"
    _parameter_names = ("neighbors", "ef_search", "ef_construction")

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None,
                 neighbors: int = 32, ef_search: int = 128, ef_construction: int = 200):
        super().__init__(dim, metric, model_name)
        self.neighbors, self.ef_search, self.ef_construction = neighbors, ef_search, ef_construction
        self._index = faiss.IndexHNSWFlat(self.dim, neighbors, self._faiss_metric())
        self._index.hnsw.efConstruction = ef_construction
        self._index.hnsw.efSearch = ef_search

    def _after_load(self):
        self._index.hnsw.efSearch = self.ef_search
