"""A searchable index of geotagged images: "where was this photo taken?"."""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.database.descriptor_folder import SOURCE_KEYS, DescriptorFolder
from netvlad_tf.database.embed import dataset_rows, embed_database
from netvlad_tf.database.index_build import add_shards, build_index_from_shards
from netvlad_tf.database.patch_shards import PATCHES_FOLDER, StoredPatches, settings_of
from netvlad_tf.database.shards import SHARDS_FOLDER
from netvlad_tf.inference.precision import PRECISIONS, choose_precision
from netvlad_tf.inference.runner import INT8_MODEL_FILE, ModelRunner
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.io.json_files import read_json_object
from netvlad_tf.io.keras_archive import MODEL_FILE
from netvlad_tf.io.progress import Progress
from netvlad_tf.reranking.candidate_patches import ComputedPatches
from netvlad_tf.reranking.reranker import DEFAULT_RERANK_TOP_K, Reranker
from netvlad_tf.reranking.settings import PatchSettings
from netvlad_tf.retrieval import DescriptorIndex, load_index

PLACES_FILE = "places.json"
INDEX_FOLDER = "index"
# Where re-ranking reads candidates' patch features (see `PlaceIndex.query`).
PATCH_SOURCES = ("auto", "stored", "computed")


@dataclass
class PlaceMatch:
    """One retrieved database image."""

    rank: int
    image_path: str
    easting: float | None  # None: the image was indexed by a place label, without coordinates
    northing: float | None
    distance: float
    # With re-ranking: the spatial check's score in [0, 1] (`Verification.score`); None without.
    verification: float | None = None


@dataclass
class PlaceIndex:
    """A model, the descriptors of geotagged database images and their coordinates.

    Example:
    >>> import tempfile, pathlib
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> dataset = read_csv_dataset(nordland_csv("test"))
    >>> small = GeoDataset("db", dataset.database_paths[:5], dataset.database_utm[:5], [], [])
    >>> places = PlaceIndex.build(build_netvlad_model(weights=None, pooling="mac"), small,
    ...                           image_size=(32, 64), verbose=False)
    >>> places.query([dataset.database_paths[3]], top_k=1)[0][0].image_path == dataset.database_paths[3]
    True
    """

    # The model and the precision the database was embedded in (with int8 its calibrated model):
    # queries are embedded the same way unless `query` is told otherwise.
    runner: ModelRunner
    index: DescriptorIndex
    image_paths: list[str]
    coordinates: np.ndarray
    image_size: tuple[int, int] | None
    max_side: int | None = DEFAULT_MAX_SIDE
    # The descriptor folder's identity (`SOURCE_KEYS`) when built from one: what `add_appended` checks.
    source: dict | None = None
    # Stored patch features (`embed --patch_features`): their manifest record, the folder of
    # patch shards, each indexed image's plan row and the first row of each shard.
    patch_features: dict | None = None
    patch_folder: Path | None = None
    patch_rows: np.ndarray | None = None
    patch_shard_starts: list[int] | None = None
    # The similarity a best match needs to count as "seen before", with the precision it gives and
    # where that was measured (`set_threshold`); None: no decision threshold travels with the index.
    threshold: dict | None = None
    _query_runners: dict = field(default_factory=dict, repr=False, compare=False)
    _rerankers: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def model(self) -> keras.Model:
        """The float32 model (saved with the index; patch features come from it)."""
        return self.runner.model

    @classmethod
    def build(cls, model, dataset: GeoDataset, *, index_kind: str = "flat", image_size=None,
              max_side: int | None = DEFAULT_MAX_SIDE, batch_size: int = 8,
              verbose: bool = True, precision: str = "float32", patch_features=None,
              patch_dtype: str = "float16", threshold: float | None = None, threshold_source: str = "",
              **parameters) -> PlaceIndex:
        """Embeds the database images of `dataset` into a new index; queries are later read
        with the same image policy (`image_size`, `max_side`).

        Args:
            model: maps images to descriptors (a `PlaceRecognitionModel` or a loaded `.keras`).
            dataset: its database images and coordinates are indexed (queries are ignored).
            index_kind: a kind of `create_index` (`"flat"`, `"ivfpq"`, `"ivfsq8"`, `"hnsw"`).
            image_size: `(H, W)` every image is resized to; None keeps native sizes.
            max_side: without `image_size`, the longest side allowed (None: uncapped).
            batch_size: images per forward pass.
            verbose: show a progress bar.
            precision: what the database (and later the queries) are embedded in
                (`netvlad_tf.inference.precision`; int8 is calibrated on the database).
            patch_features: also store the database's Patch-NetVLAD patch features (`"speed"`,
                `"storage"`, `"performance"` or a `PatchSettings`), so `query(rerank=...)` reads them.
            patch_dtype: `"float16"` or `"float32"` for them.
            threshold, threshold_source: the 99 %-precision similarity to record with the index
                and where it was measured (`set_threshold`); what `netvlad-tf serve` decides by.
            **parameters: the index kind's options (e.g. `num_lists`).

        It takes the city-scale path in small: the descriptors are streamed into a temporary
        descriptor folder and the index is built from it (`from_descriptors`).
        """
        if threshold is not None:  # a wrong one is refused before the embedding, not after
            _threshold_record(threshold, 0.99, threshold_source)
        resolved, reason = choose_precision(precision)
        if verbose and precision != "float32":
            print(reason, flush=True)
        paths, coordinates = dataset_rows(dataset, "database")
        runner = ModelRunner.prepare(model, resolved, calibration_paths=paths, image_size=image_size,
                                     max_side=max_side, verbose=verbose)
        work = Path(tempfile.mkdtemp(prefix="netvlad_tf_index_"))
        try:
            descriptors = embed_database(runner, paths, coordinates, work / "descriptors", image_size=image_size,
                                         max_side=max_side, batch_size=batch_size, verbose=verbose,
                                         patch_features=patch_features, patch_dtype=patch_dtype)
            places = cls.from_descriptors(descriptors, index_kind=index_kind, verbose=verbose, runner=runner,
                                          **parameters)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if threshold is not None:
            places.set_threshold(threshold, 0.99, threshold_source)
        # The folder keeps the model file `save` copies (and the patch shards) while the index
        # lives, and goes with it; its descriptors are in the index now.
        shutil.rmtree(descriptors / SHARDS_FOLDER)
        weakref.finalize(places, shutil.rmtree, work, ignore_errors=True)
        return places

    @classmethod
    def from_descriptors(cls, directory, *, index_kind: str = "flat", work_dir=None, on_disk: bool = False,
                         num_workers: int = 0, ray_address: str | None = None, verbose: bool = True,
                         runner: ModelRunner | None = None, **parameters) -> PlaceIndex:
        """A place index over a descriptor folder (`netvlad-tf embed`), built a shard at a time
        (`build_index_from_shards`); queries are read with the folder's image policy.

        Args:
            directory: the finished descriptor folder.
            index_kind: a kind of `create_index`.
            work_dir: a folder for index parts and on-disk lists (with `on_disk`/`num_workers`).
            on_disk: keep an IVF index's inverted lists on disk.
            num_workers: build IVF parts as this many Ray tasks at a time (0: here).
            ray_address: an existing Ray cluster (None: a local one).
            verbose: show a progress bar.
            runner: the folder's model in its precision, when prepared already (None: opened
                from the folder, `DescriptorFolder.runner`).
            **parameters: the index kind's options (e.g. `num_lists`).

        Returns:
            The `PlaceIndex` (save it with `save`); rows whose image could not be read are
            not in it.

        A flat index reads each shard once: the places (image paths, coordinates, plan rows)
        are kept from the shards as they are added.
        """
        folder = DescriptorFolder.of(directory)
        image_paths: list[str] = []
        coordinates: list[np.ndarray] = []
        kept: list[np.ndarray] = []

        def keep_places(shard) -> None:
            image_paths.extend(shard.image_paths)
            coordinates.append(shard.coordinates)
            kept.append(shard.row_ids)

        index = build_index_from_shards(folder, index_kind, work_dir, on_disk, num_workers, ray_address, verbose,
                                        on_shard=keep_places, **parameters)
        patches = folder.patch_features
        rows = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        runner = runner.saved_in(folder.model_path) if runner is not None else folder.runner()
        return cls(runner, index, image_paths, np.concatenate(coordinates) if coordinates else
                   np.zeros((0, 2)), folder.image_size, folder.max_side, folder.source_record(), patches,
                   folder.patches_folder if patches else None, rows if patches else None,
                   [shard_rows.start for shard_rows in folder.shard_ranges] if patches else None)

    def add_appended(self, directory, verbose: bool = True) -> int:
        """Adds the rows appended to the descriptor folder this index was built from (`embed`
        with the same list and images appended) without rebuilding: the new shards go into
        the index as they are (an IVF index into its trained lists), so exact kinds search
        exactly as a rebuilt index would.

        Args:
            directory: the descriptor folder, finished, holding this index's rows first.
            verbose: show a progress line over the new shards.

        Returns:
            How many images were added.

        Raises:
            ValueError: the index was not built from a descriptor folder, or `directory` is
                another folder (model, dimension or first rows differ), or the index cannot
                grow (IVF lists on disk).
        """
        folder = DescriptorFolder.open(directory)
        if self.source is None:
            raise ValueError("This place index was not built from a descriptor folder (`netvlad-tf index "
                             "--descriptors`), so rows cannot be added to it; rebuild it.")
        different = folder.differs_from(self.source)
        if different:
            raise ValueError(f"{directory} was embedded with another {different[0]} than this index's folder; "
                             "rebuild the index from it instead.")
        indexed = self.source["num_rows"]
        if folder.num_rows < indexed or folder.plan_prefix_checksum(indexed) != self.source["rows_sha256"]:
            raise ValueError(f"The first {indexed} rows of {directory} are not the ones this index holds; "
                             "rebuild the index from it instead.")
        if sum(row.row_id < indexed for row in folder.missing_rows()) != self.source["num_missing"]:
            raise ValueError(f"Missing rows of {directory} were embedded (--retry_missing) since this index was "
                             "built; rebuild the index from it instead.")
        if not self.index.can_add:
            raise ValueError(f"A {self.index.backend} index with its inverted lists on disk cannot grow; "
                             "rebuild it from the descriptor folder.")
        new_shards = [shard for shard, rows in enumerate(folder.shard_ranges) if rows.start >= indexed]
        new_paths: list[str] = []
        new_coordinates = [self.coordinates]

        def shards():  # one shard in memory at a time; its places kept as it is added
            for shard in new_shards:
                rows = folder.read_shard(shard)
                new_paths.extend(rows.image_paths)
                new_coordinates.append(rows.coordinates)
                yield rows

        added = add_shards(self.index, shards(), Progress(len(new_shards), "shard", verbose, "indexing"))
        self.image_paths = self.image_paths + new_paths
        self.coordinates = np.concatenate(new_coordinates)
        self.source = folder.source_record()
        return added

    def set_threshold(self, similarity: float, precision: float = 0.99, source: str = "") -> None:
        """Records the decision threshold that travels with this index (`save` keeps it): a best
        match with at least this cosine similarity is "seen before", at `precision` measured on
        `source` (e.g. `threshold_at_99_precision` of an evaluation on data like the queries).

        Raises:
            ValueError: a similarity outside [-1, 1] or a precision outside (0, 1].

        Example:
        >>> index = PlaceIndex(None, None, [], np.zeros((0, 2)), None)
        >>> index.set_threshold(0.62, source="nordland_test")
        >>> index.threshold["similarity"]
        0.62
        """
        self.threshold = _threshold_record(similarity, precision, source)

    def save(self, directory, overwrite: bool = False) -> None:
        """Writes the model, the index and the places into `directory`, atomically."""
        with atomic_directory(directory, overwrite) as staging:
            self.runner.save_into(staging)
            (staging / INDEX_FOLDER).mkdir()
            self.index.save_into(staging / INDEX_FOLDER)
            if self.patch_folder is not None:
                shutil.copytree(self.patch_folder, staging / PATCHES_FOLDER)
            places = {
                "image_paths": [str(Path(p).resolve()) for p in self.image_paths],
                # Strict JSON: an image without coordinates (a place-labelled set) has null.
                "coordinates": [[None if np.isnan(value) else value for value in pair]
                                for pair in self.coordinates.tolist()],
                "image_size": list(self.image_size) if self.image_size else None,
                "max_side": self.max_side,
                "descriptor_folder": self.source,
                "precision": self.runner.precision,
                "threshold": self.threshold,
                **({"patch_features": self.patch_features, "patch_rows": self.patch_rows.tolist(),
                    "patch_shard_starts": self.patch_shard_starts} if self.patch_folder is not None else {}),
            }
            (staging / PLACES_FILE).write_text(json.dumps(places, allow_nan=False))

    @classmethod
    def load(cls, directory) -> PlaceIndex:
        """Reads a saved place index: whatever model it was built with (a netvlad_tf model or any
        Keras model from images to descriptors), its index and places. A model whose descriptor
        size is not the index's, or places that are not one per indexed image, are one-line errors."""
        directory = Path(directory)
        if not (directory / PLACES_FILE).is_file() or not (directory / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{directory} is not a place index (made by `netvlad-tf index`).")
        places = _read_places(directory / PLACES_FILE)
        runner = ModelRunner.open(directory, places["precision"])
        index = load_index(directory / INDEX_FOLDER, expected_dim=runner.descriptor_dim)
        if len(places["image_paths"]) != index.size:
            raise ValueError(f"{directory}: {PLACES_FILE} lists {len(places['image_paths'])} places but "
                             f"{INDEX_FOLDER}/ holds {index.size} descriptors.")
        patches = places["patch_features"]
        return cls(runner, index, places["image_paths"], places["coordinates"], places["image_size"],
                   places["max_side"], places["descriptor_folder"], patches,
                   directory / PATCHES_FOLDER if patches else None, places["patch_rows"], places["patch_shard_starts"],
                   places["threshold"])

    def query(self, photo_paths: Sequence[str], top_k: int = 5, precision: str | None = None, *,
              rerank: str | PatchSettings | None = None, rerank_top_k: int = DEFAULT_RERANK_TOP_K,
              patches: str = "auto") -> list[list[PlaceMatch]]:
        """The `top_k` database images nearest to each photo, with their coordinates.

        Args:
            photo_paths: the photos.
            top_k: matches per photo.
            precision: what the photos are embedded in; None: as the database was.
            rerank: re-rank the `rerank_top_k` nearest by Patch-NetVLAD (`"speed"`, `"storage"`,
                `"performance"` or a `PatchSettings`); each match then carries its `verification`.
            rerank_top_k: candidates re-ranked per photo.
            patches: where the candidates' patch features come from: `"stored"` (the index's,
                from `embed --patch_features` with the same patch sizes and dims), `"computed"`
                (from their images now, slower), `"auto"` (stored when they fit, else computed).

        Raises:
            FileNotFoundError: a photo that does not exist.
            ValueError: `rerank_top_k` < 1, or `patches="stored"` on an index without fitting ones.

        Example (re-ranking):
        `places.query(["photo.jpg"], top_k=5, rerank="speed", rerank_top_k=100)`.

        Reference: Hausler et al., CVPR 2021 (re-ranking), arXiv 1511.07247 (the global search).
        """
        missing = [p for p in photo_paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"Photo {missing[0]!r} does not exist.")
        if rerank is not None and (int(rerank_top_k) != rerank_top_k or rerank_top_k < 1):
            raise ValueError(f"rerank_top_k must be at least 1 candidate, got {rerank_top_k!r}.")
        precision = choose_precision(precision or self.runner.precision)[0]
        if precision not in self._query_runners:
            self._query_runners[precision] = self.runner.in_precision(precision)
        descriptors = self._query_runners[precision].embed(list(photo_paths), self.image_size, self.max_side,
                                                           verbose=False)
        depth = top_k if rerank is None else max(top_k, min(int(rerank_top_k), self.index.size))
        distances, indices = self.index.search(descriptors, depth)
        verifications = [{} for _ in photo_paths]
        if rerank is not None:
            reranker, source = self._reranking(rerank, patches)
            for position, features in reranker.describer.describe_images(list(photo_paths), self.image_size,
                                                                         self.max_side):
                candidates = indices[position, :rerank_top_k]
                candidates = candidates[candidates >= 0]
                reranking = reranker.rerank_stored(features, source, candidates)
                order = np.concatenate([reranking.order, np.arange(len(candidates), depth)])
                indices[position], distances[position] = indices[position, order], distances[position, order]
                verifications[position] = {int(candidate): verification.score
                                           for candidate, verification in zip(candidates, reranking.verifications)}
        return [
            [
                PlaceMatch(rank + 1, self.image_paths[i], *_known(self.coordinates[i]), float(d), checked.get(int(i)))
                for rank, (i, d) in enumerate(zip(row_indices[:top_k], row_distances[:top_k]))
            ]
            for row_indices, row_distances, checked in zip(indices, distances, verifications)
        ]

    def stored_patches_fit(self, rerank: str | PatchSettings) -> bool:
        """Whether this index's stored patch features serve re-ranking with `rerank` (the same
        patch sizes, strides and dimensions; the weights and the spatial check may differ)."""
        if self.patch_features is None:
            return False
        wanted = self._reranker(rerank).describer
        stored = settings_of(self.patch_features)
        return (stored.patch_sizes, stored.strides, self.patch_features["dims"]) == (
            wanted.settings.patch_sizes, wanted.settings.strides, wanted.dims)

    def _reranker(self, rerank) -> Reranker:
        key = rerank if isinstance(rerank, str) else repr(rerank)
        if key not in self._rerankers:
            self._rerankers[key] = Reranker(self.model, rerank)
        return self._rerankers[key]

    def _reranking(self, rerank, patches: str):
        """The reranker and where its candidates' patch features come from."""
        if patches not in PATCH_SOURCES:
            raise ValueError(f"patches must be one of {PATCH_SOURCES}, got {patches!r}.")
        reranker = self._reranker(rerank)
        fits = self.stored_patches_fit(rerank)
        if patches == "stored" and not fits:
            have = ("no stored patch features" if self.patch_features is None else
                    f"stored patch features of sizes {self.patch_features['patch_sizes']} in "
                    f"{self.patch_features['dims']} dims")
            raise ValueError(f"This place index has {have}; re-ranking with {rerank!r} from storage needs "
                             f"sizes {list(reranker.settings.patch_sizes)} in {reranker.describer.dims} dims: embed "
                             f"with --patch_features={rerank if isinstance(rerank, str) else 'the same settings'} "
                             "and index again, or compute them (patches='computed').")
        if fits and patches != "computed":
            return reranker, StoredPatches(self.patch_folder, self.patch_rows, self.patch_shard_starts)
        key = ("computed", id(reranker))
        if key not in self._rerankers:
            self._rerankers[key] = ComputedPatches(reranker.describer, self.image_paths, self.image_size, self.max_side)
        return reranker, self._rerankers[key]


def _threshold_record(similarity: float, precision: float, source: str) -> dict:
    """What `set_threshold` records, checked: one line for a value out of range."""
    if not (np.isfinite(similarity) and -1 <= similarity <= 1):
        raise ValueError(f"A threshold is a cosine similarity in [-1, 1], got {similarity!r}.")
    if not 0 < precision <= 1:
        raise ValueError(f"A threshold's precision is in (0, 1], got {precision!r}.")
    return {"similarity": float(similarity), "precision": float(precision), "source": str(source)}


def _known(pair: np.ndarray) -> tuple[float | None, float | None]:
    return tuple(None if np.isnan(value) else float(value) for value in pair)


def _read_places(path: Path) -> dict:
    """`places.json` checked field by field: one line naming the file and what is wrong."""
    places = read_json_object(path)
    missing = [key for key in ("image_paths", "coordinates") if key not in places]
    if missing:
        raise ValueError(f"{path} has no {' or '.join(repr(key) for key in missing)}.")
    paths = places["image_paths"]
    if not isinstance(paths, list) or not all(isinstance(item, str) for item in paths):
        raise ValueError(f"{path}: 'image_paths' must be a list of strings.")
    try:
        coordinates = np.asarray([[np.nan if value is None else value for value in pair]
                                  for pair in places["coordinates"]], dtype=np.float64)
    except (TypeError, ValueError):
        coordinates = None
    if coordinates is None or coordinates.shape != (len(paths), 2):
        raise ValueError(f"{path}: 'coordinates' must be {len(paths)} [easting, northing] pairs (null where "
                         "unknown), one per image path.")
    size = places.get("image_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2
                             or not all(isinstance(side, int) and side > 0 for side in size)):
        raise ValueError(f"{path}: 'image_size' must be null or [height, width] in pixels, got {size!r}.")
    max_side = places.get("max_side", DEFAULT_MAX_SIDE)
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"{path}: 'max_side' must be null or a positive number of pixels, got {max_side!r}.")
    source = places.get("descriptor_folder")
    if source is not None and (not isinstance(source, dict) or any(key not in source for key in SOURCE_KEYS)):
        raise ValueError(f"{path}: 'descriptor_folder' must be null or an object with {', '.join(SOURCE_KEYS)}.")
    precision = places.get("precision", "float32")
    if precision not in PRECISIONS or precision == "auto":
        raise ValueError(f"{path}: 'precision' must be one of float32, bfloat16, float16, int8, got {precision!r}.")
    if precision == "int8" and not (path.parent / INT8_MODEL_FILE).is_file():
        raise ValueError(f"{path} says int8 but {path.parent / INT8_MODEL_FILE} is missing.")
    patches, patch_rows, shard_starts = places.get("patch_features"), places.get("patch_rows"), places.get("patch_shard_starts")
    if patches is not None:
        if not isinstance(patch_rows, list) or len(patch_rows) != len(paths) or not isinstance(shard_starts, list):
            raise ValueError(f"{path}: 'patch_features' needs 'patch_rows' (one per image) and 'patch_shard_starts'.")
        if not (path.parent / PATCHES_FOLDER).is_dir():
            raise ValueError(f"{path} records patch features but {path.parent / PATCHES_FOLDER} is missing.")
        patch_rows = np.asarray(patch_rows, np.int64)
    threshold = places.get("threshold")
    if threshold is not None and (not isinstance(threshold, dict) or not isinstance(threshold.get("similarity"), (int, float))
                                  or not -1 <= threshold["similarity"] <= 1):
        raise ValueError(f"{path}: 'threshold' must be null or an object with a 'similarity' in [-1, 1], got {threshold!r}.")
    return {"image_paths": paths, "coordinates": coordinates, "image_size": tuple(size) if size else None,
            "max_side": max_side, "descriptor_folder": source, "precision": precision, "patch_features": patches,
            "patch_rows": patch_rows, "patch_shard_starts": shard_starts, "threshold": threshold}
