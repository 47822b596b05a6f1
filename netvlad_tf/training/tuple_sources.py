"""What training tuples are made of, behind one interface: the images themselves, or the
frozen trunk's output stored on disk (`FrozenFeatureStore`, `PoolFeatureStore`).

A descriptor-cache refresh (`HardNegativeMiner.refresh_from`, arXiv 1511.07247 Sec. 4 and
Appendix A) asks the source for the model's descriptors of a plan's images; the tuple stream
(`tuple_dataset`) asks it for each tuple image's model input.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.data.images import load_image
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.models.tuple_batch import IMAGE_KEYS
from netvlad_tf.training.refresh_plan import RefreshPlan


class TupleSource(abc.ABC):
    """The model input of every image of a training dataset, and the model's descriptors of a
    refresh plan's images.

    At a refresh the miner calls `prepare(plan)` (the slow work, while training goes on with
    the previous plan: a pool store runs the frozen layers here), `descriptors` of the
    prepared database and query images, then `activate(prepared)` under its lock, together
    with the cache swap. The tuple stream reads `database_input`/`query_input` under the same
    lock, so a tuple is read under the plan it was mined with.

    Attributes:
        keys: the batch keys of query, positives and negatives (`IMAGE_KEYS` or `FEATURE_KEYS`
            of `netvlad_tf.models.tuple_batch`).
        input_shape: shape of one image's input, `(H, W, 3)` or the trunk output `(h, w, C)`.
        dataset_size: `(database images, query images)` of the dataset it serves.
    """

    keys: tuple[str, str, str]
    input_shape: tuple[int, ...]
    dataset_size: tuple[int, int]

    @abc.abstractmethod
    def prepare(self, plan: RefreshPlan, verbose: bool = False) -> Any:
        """Whatever `descriptors` and `activate` need for `plan` (outside the miner's lock)."""

    @abc.abstractmethod
    def descriptors(self, model, prepared, part: str, verbose: bool = False) -> np.ndarray:
        """`model`'s descriptors `(N, dim)` float32 of the prepared plan's `part` images
        (`"database"` or `"queries"`), rows in the plan's order."""

    def activate(self, prepared) -> None:  # noqa: B027  (most sources have nothing to swap)
        """Makes the prepared plan's inputs the ones read (called under the miner's lock)."""

    @abc.abstractmethod
    def database_input(self, index: int) -> np.ndarray:
        """The model input of database image `index` of the dataset (one of the active plan)."""

    @abc.abstractmethod
    def query_input(self, index: int) -> np.ndarray:
        """The model input of query image `index` of the dataset (one of the active plan)."""


class ImageSource(TupleSource):
    """The dataset's images, resized: tuples hold images and a refresh runs the whole model.

    Args:
        dataset: the training `GeoDataset`.
        image_size: `(H, W)` every image is resized to.
        batch_size: images per forward pass at a refresh.

    Example:
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> source = ImageSource(read_csv_dataset(nordland_csv("test")), (32, 64))
    >>> source.query_input(0).shape, source.keys[0]
    ((32, 64, 3), 'query')
    """

    keys = IMAGE_KEYS

    def __init__(self, dataset: GeoDataset, image_size: tuple[int, int], batch_size: int = 8):
        if image_size is None or len(image_size) != 2:
            raise ValueError(f"image_size must be (height, width): tuples are batched, got {image_size!r}.")
        self.dataset = dataset
        self.image_size = tuple(int(side) for side in image_size)
        self.batch_size = batch_size
        self.input_shape = (*self.image_size, 3)
        self.dataset_size = (dataset.num_database, dataset.num_queries)

    def __repr__(self) -> str:
        return f"ImageSource({self.dataset.name!r} at {self.image_size})"

    def prepare(self, plan: RefreshPlan, verbose: bool = False) -> RefreshPlan:
        return plan

    def descriptors(self, model, prepared: RefreshPlan, part: str, verbose: bool = False) -> np.ndarray:
        paths = self.dataset.database_paths if part == "database" else self.dataset.query_paths
        return embed_images(model, [paths[i] for i in prepared.ids(part)], self.image_size, batch_size=self.batch_size,
                            verbose=verbose)

    def database_input(self, index: int) -> np.ndarray:
        return load_image(self.dataset.database_paths[index], self.image_size).numpy()

    def query_input(self, index: int) -> np.ndarray:
        return load_image(self.dataset.query_paths[index], self.image_size).numpy()


def as_tuple_source(source, dataset: GeoDataset, batch_size: int = 8) -> TupleSource:
    """`source` itself, or for an image size `(H, W)` the `ImageSource` of `dataset` at it."""
    if isinstance(source, TupleSource):
        return source
    return ImageSource(dataset, source, batch_size=batch_size)
