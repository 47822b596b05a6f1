"""The frozen trunk's features of training images, kept on disk.

With the paper's recipe only conv5 and NetVLAD train: conv1–conv4 give the same output for an
image at every step. Storing that output (pool4: 1/16 of the image side, 512 channels) turns a
training step into conv5 + NetVLAD on 12 stored feature maps. `FrozenFeatureStore` computes it
once for every training image, and a descriptor-cache refresh becomes the head over the stored
features. With a mining pool, `PoolFeatureStore` keeps only the current refresh's images: its
disk follows the pool, not the database.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.data.images import indexed_image_batches
from netvlad_tf.inference.embedding import array_batches, predict_all, predict_batches
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.models.tuple_batch import FEATURE_KEYS
from netvlad_tf.training.refresh_plan import PARTS, RefreshPlan
from netvlad_tf.training.tuple_sources import TupleSource

FEATURE_DTYPES = ("float16", "float32")
# Without a budget, the store may take at most this fraction of the free disk space.
DEFAULT_BUDGET_FRACTION = 0.5
METADATA_FILE = "metadata.json"
# Stored feature maps per forward pass of the head at a refresh.
HEAD_BATCH_SIZE = 32
# A pool store's features of one refresh, numbered.
REFRESH_FOLDER = "refresh-{:06d}"
# A refresh, or the staging folder a killed write of one leaves (`atomic_directory`).
REFRESH_FOLDER_PATTERN = re.compile(r"\.?refresh-\d{6}(\..*)?")


class FrozenFeatureStore(TupleSource):
    """Trunk features of a dataset's database and query images at one image size: a
    `TupleSource` whose tuples hold features and whose refreshes run only the model's head.

    Build it with `FrozenFeatureStore.build`; `database` and `queries` are read-only
    memory-mapped arrays `(N, h, w, C)` in the order of the dataset's paths.

    Example:
    >>> import tempfile
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> full = read_csv_dataset(nordland_csv("test"))
    >>> dataset = GeoDataset("few", full.database_paths[:6], full.database_utm[:6],
    ...                      full.query_paths[:6], full.query_utm[:6])
    >>> model = build_netvlad_model(weights=None, num_clusters=4)
    >>> store = FrozenFeatureStore.build(model, dataset, (32, 64), tempfile.mkdtemp() + "/f",
    ...                                  verbose=False)
    >>> store.database.shape, store.bytes_per_image
    ((6, 2, 4, 512), 8192)
    """

    keys = FEATURE_KEYS

    def __init__(self, directory):
        directory = Path(directory)
        self.directory = directory
        self.metadata = json.loads((directory / METADATA_FILE).read_text())
        self.database = np.load(directory / "database.npy", mmap_mode="r")
        self.queries = np.load(directory / "queries.npy", mmap_mode="r")
        self.input_shape = self.feature_shape
        self.dataset_size = (len(self.database), len(self.queries))

    def __repr__(self) -> str:
        return (f"FrozenFeatureStore({str(self.directory)!r}, {len(self.database)} database + "
                f"{len(self.queries)} query images, {self.database.shape[1:]} {self.database.dtype})")

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape `(h, w, C)` of one image's features."""
        return tuple(self.database.shape[1:])

    @property
    def bytes_per_image(self) -> int:
        """Bytes stored per image."""
        return int(np.prod(self.feature_shape)) * self.database.dtype.itemsize

    def query_input(self, index: int) -> np.ndarray:
        """The stored features `(h, w, C)` of query image `index` of the dataset."""
        return self.queries[index]

    def database_input(self, index: int) -> np.ndarray:
        """The stored features `(h, w, C)` of database image `index` of the dataset."""
        return self.database[index]

    def prepare(self, plan: RefreshPlan, verbose: bool = False) -> RefreshPlan:
        """The plan itself: every image's features are stored already."""
        return plan

    @classmethod
    def build(
        cls,
        model,
        dataset: GeoDataset,
        image_size: tuple[int, int],
        directory,
        dtype: str = "float16",
        batch_size: int = 8,
        verbose: bool = True,
        budget_gb: float | None = None,
    ) -> FrozenFeatureStore:
        """Runs the model's frozen trunk over every database and query image into `directory`.

        A directory already holding features of the same cut, images, size and dtype is
        reused: a resumed run, whose weights `BackupAndRestore` brings back only once `fit`
        starts, so the stored features (not the model's weights at this point) are the ones
        of the run. One holding anything else is an error. The
        arrays are written in a hidden staging folder beside it (`atomic_directory`) and renamed when complete, so an
        interrupted build leaves nothing at `directory`.

        Args:
            model: a `PlaceRecognitionModel` whose backbone has frozen layers
                (`model.frozen_split()` is not None).
            dataset: the training `GeoDataset`.
            image_size: `(height, width)` every image is resized to, as in the tuples.
            directory: where the `.npy` arrays and `metadata.json` go.
            dtype: `"float16"` (half the disk; descriptors moved by < 1e-6 in
                `benchmarks/bench_training.py`) or `"float32"` (exact).
            batch_size: images per forward pass.
            verbose: show progress.
            budget_gb: the most disk the store may take; None: half the free space. The size
                is estimated before anything is written and a store above the budget refused.
        """
        split = _checked_split(model, image_size, dtype)
        directory = Path(directory)
        metadata = {
            "cut_layer": split.cut_layer,
            "image_size": [int(side) for side in image_size],
            "dtype": dtype,
            "num_database": dataset.num_database,
            "num_queries": dataset.num_queries,
            "images_sha1": _paths_digest(dataset),
        }
        if directory.exists():
            metadata_path = directory / METADATA_FILE
            found = json.loads(metadata_path.read_text()) if metadata_path.exists() else None
            if found != metadata:
                raise ValueError(
                    f"{directory} exists but does not hold this model's frozen features for these "
                    f"images at {image_size} in {dtype} (found {found}); remove it or choose "
                    "another directory."
                )
            return cls(directory)
        feature_shape = _trunk_output_shape(split.trunk, image_size)
        num_images = dataset.num_database + dataset.num_queries
        needed = num_images * int(np.prod(feature_shape)) * np.dtype(dtype).itemsize
        _require_disk_space(directory, needed, budget_gb)
        if verbose:
            print(f"{num_images} images × {tuple(feature_shape)} {dtype}: {needed / 1e9:.2f} GB "
                  f"into {directory}", flush=True)
        with atomic_directory(directory) as staging:
            for part, paths in zip(PARTS, (dataset.database_paths, dataset.query_paths)):
                _write_features(split.trunk, paths, image_size, staging / f"{part}.npy", dtype,
                                batch_size, verbose)
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        return cls(directory)

    def descriptors(self, model, prepared: RefreshPlan, part: str, verbose: bool = False) -> np.ndarray:
        """The descriptors `(N, dim)` float32 of `model`'s head over the stored features of the
        plan's `"database"` or `"queries"` images, in the plan's order."""
        return _head_descriptors(model, getattr(self, part), verbose, prepared.ids(part))


class PoolFeatureStore(TupleSource):
    """The frozen trunk's features of the current refresh's images only (with a mining pool):
    a `TupleSource` whose disk follows the pool, not the database.

    At each cache refresh `prepare(plan)` runs the trunk over the plan's images (the pool, the
    upcoming queries and their positives and remembered negatives) into a new folder; the head
    over those features gives the refresh's descriptors, and `activate` makes them the features
    the tuples read, deleting the refresh's before. The refresh needs those trunk outputs
    anyway; the training steps between refreshes then run only the head. Disk: at most two
    refreshes' images (the old one until the new one is active), checked against the budget
    before each refresh writes anything.

    Args:
        model: a `PlaceRecognitionModel` whose backbone has frozen layers.
        dataset: the training `GeoDataset` the plans index.
        image_size: `(height, width)` every image is resized to, as in the tuples.
        directory: the store's folder; the refreshes an earlier run left there are removed, and a
            folder holding anything else is refused.
        dtype: `"float16"` or `"float32"`, as in `FrozenFeatureStore.build`.
        batch_size: images per forward pass.
        budget_gb: the most disk the store may take; None: half the free space.

    Example:
    >>> import tempfile
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> from netvlad_tf.training.mining import HardNegativeMiner
    >>> dataset = read_csv_dataset(nordland_csv("test"))
    >>> model = build_netvlad_model(weights=None, num_clusters=4)
    >>> store = PoolFeatureStore(model, dataset, (32, 64), tempfile.mkdtemp() + "/pool")
    >>> plan = HardNegativeMiner(dataset, mining_pool=5).plan_refresh(2)
    >>> store.activate(store.prepare(plan))
    >>> store.database_input(int(plan.database_ids[0])).shape
    (2, 4, 512)
    """

    keys = FEATURE_KEYS

    def __init__(self, model, dataset: GeoDataset, image_size: tuple[int, int], directory,
                 dtype: str = "float16", batch_size: int = 8, budget_gb: float | None = None):
        split = _checked_split(model, image_size, dtype)
        self.directory = Path(directory)
        if self.directory.exists():
            foreign = [entry.name for entry in self.directory.iterdir()
                       if not REFRESH_FOLDER_PATTERN.fullmatch(entry.name)]
            if foreign:
                raise ValueError(f"{self.directory} holds {foreign[0]!r}, which is not a refresh of a pool "
                                 "feature store; choose another directory.")
            shutil.rmtree(self.directory)  # an earlier (killed) run's refreshes only
        self.directory.mkdir(parents=True)
        self.dataset = dataset
        self.image_size = tuple(image_size)
        self.dtype = dtype
        self.batch_size = batch_size
        self.budget_gb = budget_gb
        self._trunk = split.trunk
        self.feature_shape = self.input_shape = _trunk_output_shape(self._trunk, image_size)
        self.dataset_size = (dataset.num_database, dataset.num_queries)
        self._active: PlanFeatures | None = None
        self._refreshes = 0

    def __repr__(self) -> str:
        return f"PoolFeatureStore({str(self.directory)!r}, {self.feature_shape} {self.dtype})"

    @property
    def bytes_per_image(self) -> int:
        """Bytes stored per image."""
        return int(np.prod(self.feature_shape)) * np.dtype(self.dtype).itemsize

    def prepare(self, plan: RefreshPlan, verbose: bool = False) -> PlanFeatures:
        """Runs the trunk over `plan`'s images into a new folder (not yet the active one).

        Raises:
            OSError: the active refresh's features and these together exceed the budget.
        """
        active_bytes = 0 if self._active is None else self._active.plan.num_images * self.bytes_per_image
        needed = plan.num_images * self.bytes_per_image
        _require_disk_space(self.directory, active_bytes + needed, self.budget_gb)
        self._refreshes += 1
        target = self.directory / REFRESH_FOLDER.format(self._refreshes)
        if verbose:
            print(f"Frozen layers' output of {plan.num_images} images: {needed / 1e9:.2f} GB into {target}", flush=True)
        with atomic_directory(target) as staging:
            for part, ids, paths in (("database", plan.database_ids, self.dataset.database_paths),
                                     ("queries", plan.query_ids, self.dataset.query_paths)):
                _write_features(self._trunk, [paths[i] for i in ids], self.image_size, staging / f"{part}.npy",
                                self.dtype, self.batch_size, verbose)
        return PlanFeatures(plan, target)

    def descriptors(self, model, prepared: PlanFeatures, part: str, verbose: bool = False) -> np.ndarray:
        """The descriptors `(N, dim)` float32 of `model`'s head over the prepared features of the
        plan's `"database"` or `"queries"` images, in the plan's order."""
        prepared.plan.ids(part)  # a known part
        return _head_descriptors(model, getattr(prepared, part), verbose)

    def activate(self, prepared: PlanFeatures) -> None:
        """Makes the prepared features the ones the tuples read and deletes the refresh's before
        (the miner calls it under its lock, with its cache swap to the same plan)."""
        features = prepared
        previous, self._active = self._active, features
        if previous is not None:
            shutil.rmtree(previous.directory)

    def query_input(self, index: int) -> np.ndarray:
        """A copy of the features `(h, w, C)` of query image `index` of the dataset (a planned
        one); a copy, as the next refresh deletes these files."""
        active = self._active_features()
        return np.array(active.queries[active.plan.query_rows([index])[0]])

    def database_input(self, index: int) -> np.ndarray:
        """A copy of the features `(h, w, C)` of database image `index` of the dataset (a
        planned one)."""
        active = self._active_features()
        return np.array(active.database[active.plan.database_rows([index])[0]])

    def _active_features(self) -> PlanFeatures:
        if self._active is None:
            raise RuntimeError("The pool's features are computed at the first cache refresh; refresh first.")
        return self._active


class PlanFeatures:
    """Trunk features of one refresh plan's images, rows in the plan's order (memory-mapped).

    Attributes:
        plan: the `RefreshPlan`.
        directory: the folder of `database.npy` and `queries.npy`.
    """

    def __init__(self, plan: RefreshPlan, directory: Path):
        self.plan = plan
        self.directory = directory
        self.database = np.load(directory / "database.npy", mmap_mode="r")
        self.queries = np.load(directory / "queries.npy", mmap_mode="r")


def _checked_split(model, image_size, dtype: str):
    """The model's frozen split, once `image_size` and `dtype` are known to be usable."""
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}.")
    if image_size is None or len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(
            f"image_size must be (height, width): every image is stored at one size, got {image_size!r}."
        )
    split = model.frozen_split()
    if split is None:
        raise ValueError("The model trains from its first layer: it has no frozen trunk to store.")
    return split


def _trunk_output_shape(trunk, image_size) -> tuple[int, ...]:
    """`(h, w, C)` of the trunk's output for one image of `image_size`."""
    return tuple(trunk(np.zeros((1, *image_size, 3), np.float32), training=False).shape[1:])


def _head_descriptors(model, features: np.ndarray, verbose: bool, rows=None) -> np.ndarray:
    """The model's trainable head over stored `features` (at `rows`; None: all)."""
    count = len(features) if rows is None else len(rows)
    return predict_all(model.frozen_split().head, array_batches(features, HEAD_BATCH_SIZE, rows), count, verbose)


def _require_disk_space(directory: Path, needed: int, budget_gb: float | None) -> None:
    existing = next(parent for parent in (directory, *directory.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    budget = free * DEFAULT_BUDGET_FRACTION if budget_gb is None else budget_gb * 1e9
    if needed > min(budget, free):
        limit = (f"the budget of {budget / 1e9:.1f} GB ({'half the free space' if budget_gb is None else 'asked'}; "
                 f"{free / 1e9:.1f} GB free)")
        raise OSError(
            f"Storing the frozen layers' output needs {needed / 1e9:.1f} GB under {directory.parent}, over "
            f"{limit}. Raise it with --frozen_features_budget_gb (frozen_feature_budget_gb=), train at a "
            "smaller image size, or recompute from the images (--nofrozen_features, frozen_features=False)."
        )


def _write_features(trunk, paths, image_size, path: Path, dtype: str, batch_size: int, verbose: bool) -> None:
    if len(paths) == 0:
        raise ValueError(f"No images to store for {path.stem}.")
    array = None
    batches = indexed_image_batches(list(paths), image_size, batch_size=batch_size)
    for indices, (computed,) in predict_batches(trunk, batches, len(paths), verbose):
        with np.errstate(over="ignore"):  # an overflow is reported below, by name
            features = computed.astype(dtype)
        if not np.isfinite(features).all():
            raise ValueError(
                f"The frozen layers' output of the batch holding {paths[indices[0]]} is not finite in "
                f"{dtype} (largest magnitude {np.abs(computed).max():.3g}); store it in float32."
            )
        if array is None:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                              shape=(len(paths), *features.shape[1:]))
        array[indices] = features
    array.flush()


def _paths_digest(dataset: GeoDataset) -> str:
    digest = hashlib.sha1()
    for path in (*dataset.database_paths, *dataset.query_paths):
        digest.update(str(path).encode() + b"\0")
    return digest.hexdigest()
