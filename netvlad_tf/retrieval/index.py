"""Nearest-neighbour search over descriptors behind one small interface: add, search, save, load."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import keras
import numpy as np

from netvlad_tf.staging import atomic_directory

METRICS = ("l2", "ip")
METADATA_FILE = "index.json"


class DescriptorIndex:
    """Base of the search backends. Distances are squared L2 (`"l2"`, smaller is better) or
    inner products (`"ip"`, larger is better); on L2-normalised descriptors both rank alike.

    Args:
        dim: descriptor length.
        metric: `"l2"` or `"ip"`.
        model_name: the model that made the descriptors, recorded when saved.
    """

    backend = ""

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; use one of {METRICS}.")
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        self.dim = int(dim)
        self.metric = metric
        self.model_name = model_name

    @property
    def size(self) -> int:
        raise NotImplementedError

    def add(self, descriptors: np.ndarray) -> None:
        """Appends `(N, dim)` descriptors; their indices continue from `size`."""
        self._add(self._checked(descriptors, "descriptors"))

    def search(
        self, queries: np.ndarray, k: int, batch_size: int = 1024, verbose: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest database entries of each query, best first.

        Returns:
            `(distances, indices)`, each `(Q, min(k, size))`.
        """
        queries = self._checked(queries, "queries")
        if self.size == 0:
            raise ValueError("The index is empty; add descriptors first.")
        k = min(int(k), self.size)
        progress = keras.utils.Progbar(len(queries), unit_name="query", verbose=1 if verbose else 0)
        distances, indices = [], []
        for start in range(0, len(queries), batch_size):
            batch_distances, batch_indices = self._search(queries[start : start + batch_size], k)
            distances.append(batch_distances)
            indices.append(batch_indices)
            progress.update(min(start + batch_size, len(queries)))
        return np.concatenate(distances), np.concatenate(indices)

    def save(self, directory) -> None:
        """Writes the index to `directory` atomically (a failure leaves nothing behind)."""
        with atomic_directory(directory) as staging:
            self.save_into(staging)

    def save_into(self, directory) -> None:
        """Writes the index files into an existing folder (used inside atomic writes)."""
        directory = Path(directory)
        self._save_data(directory)
        metadata = {"backend": self.backend, "dim": self.dim, "metric": self.metric,
                    "model_name": self.model_name, "size": self.size, **self._parameters()}
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))

    def _checked(self, vectors, role: str) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"{role} must have shape (N, {self.dim}), got {vectors.shape}.")
        if not np.all(np.isfinite(vectors)):
            raise ValueError(f"{role} contain NaN or infinite values.")
        return vectors

    def _parameters(self) -> dict:
        return {}

    def _add(self, descriptors: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _save_data(self, directory: Path) -> None:
        raise NotImplementedError


class NumpyIndex(DescriptorIndex):
    """Exact brute-force search in NumPy: the reference the faiss backends are tested against.

    Example:
    >>> index = NumpyIndex(dim=2)
    >>> index.add(np.array([[0, 0], [1, 0], [5, 5]]))
    >>> index.search(np.array([[0.9, 0.1]]), k=2)[1].tolist()
    [[1, 0]]
    """

    backend = "numpy"

    def __init__(self, dim: int, metric: str = "l2", model_name: str | None = None):
        super().__init__(dim, metric, model_name)
        self._database = np.zeros((0, self.dim), dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self._database)

    def _add(self, descriptors):
        self._database = np.concatenate([self._database, descriptors])

    def _search(self, queries, k):
        database = self._database.astype(np.float64)
        products = queries.astype(np.float64) @ database.T
        if self.metric == "ip":
            scores = -products
        else:
            scores = (queries.astype(np.float64) ** 2).sum(1)[:, None] - 2 * products + (database**2).sum(1)[None]
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        return (-best if self.metric == "ip" else best).astype(np.float32), order.astype(np.int64)

    def _save_data(self, directory):
        np.save(directory / "database.npy", self._database)

    @classmethod
    def _from_saved(cls, directory: Path, metadata: dict) -> "NumpyIndex":
        index = cls(metadata["dim"], metadata["metric"], metadata["model_name"])
        index.add(np.load(directory / "database.npy"))
        return index


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
        index = faiss.index_factory(self.dim, f"IVF{self.num_lists},{self._encoding()}", self._faiss_metric())
        sample = max(10_000, 39 * self.num_lists)
        index.train(descriptors[:sample])
        index.nprobe = self.num_probes
        self._index = index

    def _search(self, queries, k):
        if self._index is None:
            raise ValueError("The index is empty; add descriptors first.")
        return super()._search(queries, k)

    def _after_load(self):
        self._index.nprobe = self.num_probes


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


BACKENDS = {cls.backend: cls for cls in (NumpyIndex, FaissFlatIndex, FaissIVFPQIndex, FaissIVFSQ8Index,
                                          FaissHNSWIndex)}
INDEX_KINDS = {"numpy": NumpyIndex, "flat": FaissFlatIndex, "ivfpq": FaissIVFPQIndex,
               "ivfsq8": FaissIVFSQ8Index, "hnsw": FaissHNSWIndex}


def create_index(kind: str, dim: int, metric: str = "l2", model_name: str | None = None) -> DescriptorIndex:
    """A new empty index: `"flat"` (exact, faiss), `"ivfpq"`, `"ivfsq8"`, `"hnsw"` or `"numpy"`.

    Example:
    >>> create_index("hnsw", 8).backend
    'faiss_hnsw'
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown index kind {kind!r}; use one of {sorted(INDEX_KINDS)}.")
    return INDEX_KINDS[kind](dim, metric, model_name)


def load_index(directory, expected_dim: int | None = None) -> DescriptorIndex:
    """Loads an index saved with `save`; `expected_dim` guards against another model's index.

    Example:
    >>> import tempfile, pathlib
    >>> index = NumpyIndex(dim=2, model_name="demo")
    >>> index.add(np.eye(2))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "index"
    >>> index.save(path)
    >>> load_index(path, expected_dim=2).size
    2
    """
    directory = Path(directory)
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved index (no {METADATA_FILE}).")
    try:
        metadata = json.loads(metadata_path.read_text())
        backend = BACKENDS[metadata["backend"]]
        index = backend._from_saved(directory, metadata)
    except (KeyError, ValueError, RuntimeError, OSError) as error:
        raise ValueError(f"{directory}: the saved index is corrupt or incomplete ({error}).") from None
    if index.size != metadata["size"]:
        raise ValueError(f"{directory}: the index holds {index.size} vectors, its metadata says {metadata['size']}.")
    if expected_dim is not None and index.dim != expected_dim:
        raise ValueError(
            f"{directory} holds {index.dim}-D descriptors (model {index.model_name!r}) but the "
            f"model gives {expected_dim}-D ones; rebuild the index with this model."
        )
    return index
