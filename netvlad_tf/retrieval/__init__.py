"""Search backends for descriptor retrieval."""

from netvlad_tf.retrieval.index import DescriptorIndex, FaissFlatIndex, NumpyIndex, load_index

__all__ = ["DescriptorIndex", "FaissFlatIndex", "NumpyIndex", "load_index"]
