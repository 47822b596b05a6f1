"""The faiss search backends: exact (Flat), IVF-PQ, IVF-SQ8 and HNSW, each registered as a kind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from netvlad_tf.retrieval.index import DescriptorIndex, register_index

INDEX_FILE = "index.faiss"
# The inverted lists of an on-disk IVF index, kept beside INDEX_FILE.
ON_DISK_LISTS_FILE = "index.ivfdata"


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
        faiss.write_index(self._index, str(directory / INDEX_FILE))

    @classmethod
    def _from_saved(cls, directory: Path, metadata: dict):
        parameters = {key: metadata[key] for key in cls._parameter_names}
        index = cls(metadata["dim"], metadata["metric"], metadata["model_name"], **parameters)
        # An on-disk index finds its inverted lists beside its own file (not where they were
        # written), so its folder can be moved. Not IO_FLAG_MMAP: faiss 1.15 crashes searching it.
        index._index = faiss.read_index(str(directory / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
        if index._index.d != index.dim:
            raise ValueError(f"{directory / INDEX_FILE} holds {index._index.d}-D vectors, its metadata says "
                             f"{index.dim}-D")
        index._after_load(directory)
        return index

    _parameter_names: tuple[str, ...] = ()

    def _parameters(self) -> dict:
        return {key: getattr(self, key) for key in self._parameter_names}

    def _after_load(self, directory: Path) -> None:
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
    """Inverted lists over compressed vectors; subclasses name the compression (`_encoding`).

    Besides `add`, a trained index can be filled from parts built elsewhere (Ray tasks, one per
    descriptor shard: `trained_state` → `write_ivf_part`) and merged in RAM or into inverted
    lists on disk (`merge_parts`), for databases whose index is larger than RAM.
    """

    needs_training = True
    builds_in_parts = True

    def __init__(self, dim: int, metric: str, model_name: str | None, num_lists: int | None, num_probes: int):
        super().__init__(dim, metric, model_name)
        self.num_lists = num_lists
        self.num_probes = num_probes
        self._index = None
        self._on_disk_lists: Path | None = None

    @property
    def size(self) -> int:
        return 0 if self._index is None else self._index.ntotal

    def _encoding(self) -> str:
        raise NotImplementedError

    @property
    def can_add(self) -> bool:
        return self._on_disk_lists is None

    def retrain_advice(self) -> str | None:
        advised = _default_num_lists(self.size, self.size)
        if self.num_lists is None or 2 * self.num_lists >= advised:
            return None
        return (f"The index holds {self.size} vectors in {self.num_lists} inverted lists, under half the "
                f"{advised} that 4·√N advises: rebuild it (without --update) to retrain it for its size.")

    def _factory_encoding(self) -> str:
        """The encoding as `faiss.index_factory` spells it, with its build options."""
        return self._encoding()

    def _add(self, descriptors):
        if self._index is None:
            self._train(descriptors, len(descriptors))
        self._index.add(descriptors)

    def _train(self, descriptors, database_size):
        if self._index is not None:
            raise ValueError("The index is trained already.")
        if self.num_lists is None:
            self.num_lists = _default_num_lists(database_size, len(descriptors))
        if len(descriptors) < max(self.num_lists, 256):
            raise ValueError(
                f"IVF-{self._encoding()} needs at least {max(self.num_lists, 256)} descriptors in its "
                f"first add to train, got {len(descriptors)}; use the flat index for small databases."
            )
        index = faiss.index_factory(self.dim, f"IVF{self.num_lists},{self._factory_encoding()}", self._faiss_metric())
        index.train(descriptors[:self.training_sample_size(len(descriptors))])
        index.nprobe = self.num_probes
        self._index = index

    def _after_load(self, directory):
        self._index.nprobe = self.num_probes
        if (directory / ON_DISK_LISTS_FILE).is_file():
            self._on_disk_lists = directory / ON_DISK_LISTS_FILE

    def training_sample_size(self, database_size: int) -> int:
        """How many descriptors training uses: `max(10 000, 39·num_lists)`, at most all (faiss
        wants at least 39 per list)."""
        lists = self.num_lists or _default_num_lists(database_size, database_size)
        return min(database_size, max(10_000, 39 * lists))

    def trained_state(self) -> bytes:
        """The trained, empty index serialised: what `write_ivf_part` fills elsewhere."""
        if self._index is None or self._index.ntotal:
            raise ValueError("trained_state needs a trained index that holds no vectors yet.")
        return faiss.serialize_index(self._index).tobytes()

    def merge_parts(self, part_paths, on_disk_lists=None) -> None:
        """Moves the vectors of parts written by `write_ivf_part` into this (trained, empty)
        index, in the order given: in RAM, or, with `on_disk_lists`, into inverted lists in that
        file (faiss' `merge_ondisk`; the part files are memory-mapped, so the index may exceed
        RAM). An on-disk index is saved by moving that file beside the index file.

        Args:
            part_paths: part files, each holding its vectors under their global ids.
            on_disk_lists: a new `.ivfdata` file for on-disk inverted lists (None: in RAM).
        """
        self.trained_state()  # checks trained and empty
        if on_disk_lists is None:
            for path in part_paths:
                self._index.merge_from(faiss.read_index(str(path)), 0)
            return
        merge_ondisk(self._index, [str(path) for path in part_paths], str(on_disk_lists))
        self._on_disk_lists = Path(on_disk_lists)

    def _save_data(self, directory):
        super()._save_data(directory)
        if self._on_disk_lists is None:
            return
        if not self._on_disk_lists.is_file():
            raise ValueError(f"The on-disk lists {self._on_disk_lists} are gone (an on-disk index is "
                             "saved once: its lists move with it); load the saved index instead.")
        target = directory / ON_DISK_LISTS_FILE
        try:
            os.replace(self._on_disk_lists, target)  # the open memory map stays valid
        except OSError:
            shutil.move(self._on_disk_lists, target)
        self._on_disk_lists = target


def _default_num_lists(database_size: int, sample_size: int) -> int:
    """`4·√N` inverted lists for N database vectors, at most one per 39 training vectors."""
    return int(np.clip(4 * np.sqrt(database_size), 1, max(1, sample_size // 39)))


def write_ivf_part(trained_state: bytes, descriptors: np.ndarray, ids: np.ndarray, path) -> None:
    """Adds `descriptors` under `ids` to a copy of a trained IVF index (`trained_state`) and
    writes it to `path`: one part for `_FaissIVFIndex.merge_parts`.

    Args:
        trained_state: `trained_state()` of the index the parts are merged into.
        descriptors: `(n, dim)` float32.
        ids: `(n,)` their global row numbers.
        path: the part file to write.
    """
    index = faiss.deserialize_index(np.frombuffer(trained_state, dtype=np.uint8))
    index.add_with_ids(np.ascontiguousarray(descriptors, np.float32), np.asarray(ids, np.int64))
    faiss.write_index(index, str(path))


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

    def _after_load(self, directory):
        self._index.hnsw.efSearch = self.ef_search
