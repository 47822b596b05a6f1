"""Where a candidate's patch features come from when they were not stored: computed from its image.

Stored patch features (`netvlad-tf embed --patch_features`) are read from the descriptor folder
(`netvlad_tf.database.patch_shards`); without them each candidate's image is read and described
when it is first needed, and kept (up to a memory bound) for the next query that names it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.reranking.patch_descriptors import PatchDescriber, PatchFeatures

# Patch features kept for later queries, in bytes (least recently used dropped first).
DEFAULT_KEPT_BYTES = 1 << 30


class ComputedPatches:
    """Patch features of database images computed on demand, the most recent kept.

    Args:
        describer: the `PatchDescriber` of the model and settings.
        image_paths: the database images, by database index.
        image_size, max_side: the image policy the database was embedded with.
        kept_bytes: how many bytes of features to keep for later queries.

    Example:
    >>> import numpy as np
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).database_paths[:3]
    >>> describer = PatchDescriber(build_netvlad_model("efficientnet_lite0", weights=None, num_clusters=4),
    ...                            "speed")
    >>> patches = ComputedPatches(describer, paths, image_size=(96, 128))
    >>> [features.descriptors[0].shape for features in patches.features([2, 0])]
    [(8, 448), (8, 448)]
    """

    def __init__(self, describer: PatchDescriber, image_paths: Sequence[str], image_size=None,
                 max_side: int | None = DEFAULT_MAX_SIDE, kept_bytes: int = DEFAULT_KEPT_BYTES):
        self.describer = describer
        self.image_paths = list(image_paths)
        self.image_size = image_size
        self.max_side = max_side
        self.kept_bytes = kept_bytes
        self._kept: OrderedDict[int, PatchFeatures] = OrderedDict()
        self._bytes = 0

    def features(self, database_indices: Sequence[int]) -> list[PatchFeatures]:
        """The patch features of these database images, in this order."""
        wanted = [int(index) for index in database_indices]
        missing = sorted({index for index in wanted if index not in self._kept})
        computed = {}
        if missing:
            for position, features in self.describer.describe_images([self.image_paths[i] for i in missing],
                                                                      self.image_size, self.max_side):
                computed[missing[position]] = features
        result = [computed[index] if index in computed else self._kept[index] for index in wanted]
        for index in wanted:
            if index in self._kept:
                self._kept.move_to_end(index)
        for index, features in computed.items():
            self._kept[index] = features
            self._bytes += features.nbytes
        while self._bytes > self.kept_bytes and self._kept:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= dropped.nbytes
        return result
