"""Nearest-neighbour search over descriptors behind one small interface (add, search, save, load),
the NumPy brute-force oracle, and the one registry of index kinds (the faiss backends register
themselves in `faiss_backends.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netvlad_tf.common.registries import registering
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.io.progress import Progress

METRICS = ("l2", "ip")
METADATA_FILE = "index.json"
# kind (what users ask for: "flat", "ivfpq", …) → index class; each class also names its
# `backend`, recorded in saved indices.
INDEX_KINDS: dict[str, type] = {}


def register_index(kind: str):
    """Class decorator adding an index class to `INDEX_KINDS` under `kind`.

    Example:
    >>> sorted(INDEX_KINDS)[:2]
    ['flat', 'hnsw']
    """
    return registering(INDEX_KINDS, kind, "index kind")


class DescriptorIndex:
    """Base of the search backends. Distances are squared L2 (`"l2"`, smaller is better) or
    inner products (`"ip"`, larger is better); on L2-normalised descriptors both rank alike.

    Args:
        dim: descriptor length.
        metric: `"l2"` or `"ip"`.
        model_name: the model that made the descriptors, recorded when saved.
    """

    backend = ""
    # Capabilities a database build reads: a kind that trains on a sample of the database first
    # (`training_sample_size`), and one that can be filled from parts built elsewhere
    # (`trained_state`, `merge_parts`).
    needs_training = False
    builds_in_parts = False

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
        """Number of descriptors added."""
        raise NotImplementedError

    def add(self, descriptors: np.ndarray) -> None:
        """Appends `(N, dim)` descriptors; their indices continue from `size`."""
        self._add(self._checked(descriptors, "descriptors"))

    @property
    def can_add(self) -> bool:
        """Whether descriptors can still be added (an IVF index with its lists on disk cannot)."""
        return True

    def retrain_advice(self) -> str | None:
        """One line advising a rebuild when the index has outgrown its training (IVF lists
        sized for a much smaller database), else None."""
        return None

    def train(self, sample: np.ndarray, database_size: int | None = None) -> None:
        """Trains the index on `(n, dim)` sample descriptors before anything is added (the IVF
        kinds; the others need no training and ignore it). Without it the first `add` trains.

        Args:
            sample: descriptors spread over the database (not only its first rows).
            database_size: how many descriptors will be added in all (sets default sizes such
                as the number of inverted lists); None: the sample's size.
        """
        self._train(self._checked(sample, "sample"), database_size or len(sample))

    def _train(self, sample: np.ndarray, database_size: int) -> None:
        pass

    def search(
        self, queries: np.ndarray, k: int, batch_size: int = 1024, verbose: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest database entries of each query, best first.

        Args:
            queries: `(Q, dim)` descriptors.
            k: neighbours per query (at most `size` are returned).
            batch_size: queries searched at once (bounds the memory of a search).
            verbose: show a progress bar over the queries.

        Returns:
            `(distances, indices)`, each `(Q, min(k, size))`.
        """
        queries = self._checked(queries, "queries")
        if self.size == 0:
            raise ValueError("The index is empty; add descriptors first.")
        k = min(int(k), self.size)
        progress = Progress(len(queries), "query", verbose, "searching")
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


@register_index("numpy")
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
    def _from_saved(cls, directory: Path, metadata: dict) -> NumpyIndex:
        index = cls(metadata["dim"], metadata["metric"], metadata["model_name"])
        index.add(np.load(directory / "database.npy"))
        return index


def create_index(kind: str, dim: int, metric: str = "l2", model_name: str | None = None,
                 **parameters) -> DescriptorIndex:
    """A new empty index of a registered kind: `"flat"` (exact, faiss), `"ivfpq"`, `"ivfsq8"`,
    `"hnsw"` or `"numpy"`; `parameters` go to its constructor (e.g. `num_probes=32`).

    Args:
        kind: a registered kind (`register_index`).
        dim: the descriptors' dimension.
        metric: `"l2"` or `"ip"` (inner product).
        model_name: the model whose descriptors it holds, kept to refuse another model's.

    Returns:
        An empty `DescriptorIndex`.

    Example:
    >>> create_index("hnsw", 8, ef_search=64).ef_search
    64
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown index kind {kind!r}; use one of {sorted(INDEX_KINDS)}.")
    return INDEX_KINDS[kind](dim, metric, model_name, **parameters)


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
        if not isinstance(metadata, dict):
            raise ValueError(f"{METADATA_FILE} must hold a JSON object")
        backend = next((cls for cls in INDEX_KINDS.values() if cls.backend == metadata.get("backend")), None)
        if backend is None:
            raise ValueError(f"unknown backend {metadata.get('backend')!r}")
        index = backend._from_saved(directory, metadata)
        expected_size = int(metadata["size"])
    except (KeyError, ValueError, TypeError, RuntimeError, OSError) as error:
        detail = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{directory}: the saved index is corrupt or incomplete ({detail}).") from None
    if index.size != expected_size:
        raise ValueError(f"{directory}: the index holds {index.size} vectors, its metadata says {expected_size}.")
    if expected_dim is not None and index.dim != expected_dim:
        raise ValueError(
            f"{directory} holds {index.dim}-D descriptors (model {index.model_name!r}) but the "
            f"model gives {expected_dim}-D ones; rebuild the index with this model."
        )
    return index
