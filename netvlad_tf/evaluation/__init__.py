"""Place-recognition evaluation: Recall@N and the raw-pixel baseline."""

from netvlad_tf.evaluation.pixels import pixel_descriptors
from netvlad_tf.evaluation.recall import DEFAULT_NS, recall_at_n

__all__ = ["DEFAULT_NS", "pixel_descriptors", "recall_at_n"]
