"""Search backends for descriptor retrieval."""

from netvlad_tf.retrieval.faiss_backends import (
    FaissFlatIndex,
    FaissHNSWIndex,
    FaissIVFPQIndex,
    FaissIVFSQ8Index,
)
from netvlad_tf.retrieval.index import (
    INDEX_KINDS,
    DescriptorIndex,
    NumpyIndex,
    create_index,
    load_index,
)

__all__ = [
    "DescriptorIndex",
    "FaissFlatIndex",
    "FaissHNSWIndex",
    "FaissIVFPQIndex",
    "FaissIVFSQ8Index",
    "INDEX_KINDS",
    "NumpyIndex",
    "create_index",
    "load_index",
]
