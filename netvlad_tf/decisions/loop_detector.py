"""Loop closure on a stream: "have I been here before, and where?", frame by frame.

A robot adds each new frame; the detector answers with the earlier frame it revisits, or None.
Only frames at least `min_frame_gap` frames old can be matched (the last few frames always look
alike: they are where the robot is, not where it was), so they enter the searchable index only
once they are that old. The index is a faiss inner-product index that grows as frames come.

With `sequence_length` L > 1 a match must hold for L consecutive frames, scored as
`sequence_similarities` scores them: the mean similarity along the diagonal ending at
(this frame, the candidate), a missing earlier database frame counting as the query frame's
mean similarity over the searchable frames (`x · ȳ`, exact from a running sum). Candidates are
the faiss neighbours of the last L frames, each moved along its diagonal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.images import DEFAULT_MAX_SIDE, resize_array
from netvlad_tf.database.patch_shards import PATCHES_FOLDER, patch_manifest, read_patch_shard, settings_of, write_patch_shard
from netvlad_tf.inference.precision import choose_precision
from netvlad_tf.inference.runner import ModelRunner
from netvlad_tf.io.atomic_writes import atomic_directory
from netvlad_tf.io.keras_archive import MODEL_FILE
from netvlad_tf.reranking.patch_descriptors import PatchFeatures
from netvlad_tf.reranking.reranker import Reranker
from netvlad_tf.reranking.settings import PatchSettings
from netvlad_tf.retrieval import DescriptorIndex, create_index, load_index

STATE_FILE = "loop_detector.json"
DESCRIPTORS_FILE = "descriptors.npy"
INDEX_FOLDER = "index"
# Index kinds that take vectors one at a time without training on the first ones.
GROWING_INDEX_KINDS = ("flat", "hnsw", "numpy")
DEFAULT_CANDIDATES = 20
# The verification score a loop needs by default with `verify`: the 99 %-precision point of `speed`
# re-ranking on the bundled 640×360 Nordland stretch (Lite0 ImageNet + k-means; correct best
# matches scored 0.050–0.5, wrong ones at most 0.056; docs/benchmarks.md). Calibrate on your data.
DEFAULT_VERIFY_THRESHOLD = 0.06


@dataclass(frozen=True)
class LoopClosure:
    """A revisit: `frame` (numbered in stream order from 0) shows the place of `matched_frame`."""

    frame: int
    matched_frame: int
    similarity: float
    # With `verify`: the spatial check's score (0–1) that accepted it.
    verification: float | None = None


class LoopDetector:
    """Detects revisits in a stream of frames with NetVLAD descriptors.

    Args:
        model: maps images to L2-normalised descriptors (a Keras model, or a `ModelRunner`
            prepared already, e.g. int8 calibrated on frames like the stream's:
            `ModelRunner.prepare(model, "int8", calibration_paths=...)`); None when only
            descriptors are added (`add_descriptors`).
        threshold: the similarity (cosine) a best match needs to count as a loop; take
            `threshold_at_99_precision` from `netvlad-tf evaluate` on data like yours.
        min_frame_gap: frames closer than this in the stream are never matched (≥ 1).
        sequence_length: consecutive frames a match must hold for (1: single frames).
        image_size, max_side: the image policy of `add` and `add_images`.
        num_candidates: faiss neighbours taken per frame of the sequence before scoring (and,
            with `verify`, re-ranked by the spatial check).
        index_kind: `"flat"` (exact), `"hnsw"` or `"numpy"`.
        verify: accept a loop only after Patch-NetVLAD's spatial check (`"speed"`, `"storage"`,
            `"performance"` or a `PatchSettings`): single frames re-rank their candidates by it and
            take the best; a sequence's match is checked on its newest frame. Each frame's patch
            features are kept (frames must come as images: `add`, `add_images`).
        verify_threshold: the verification score (`Verification.score`, 0–1) a loop needs; take
            `threshold_at_99_precision` of `netvlad-tf evaluate --rerank` on data like yours.
        precision: what frames are embedded in: `"float32"`, `"bfloat16"`, `"float16"` or
            `"auto"` (`netvlad_tf.inference.precision`); int8 needs calibration images, so it
            comes as a prepared `ModelRunner` instead. Patch features stay float32.

    Example:
    >>> import numpy as np
    >>> route = np.eye(6, dtype="float32")                  # six distinct places
    >>> stream = np.concatenate([route, route[:3]])         # then three of them again
    >>> detector = LoopDetector(None, threshold=0.9, min_frame_gap=3)
    >>> [(loop.frame, loop.matched_frame) for loop in detector.add_descriptors(stream) if loop]
    [(6, 0), (7, 1), (8, 2)]

    Reference: the decision of a loop closer over VPR descriptors, as in pyslam's
    `loop_detector_vpr.py`; sequences after SeqSLAM (Milford & Wyeth, ICRA 2012).
    """

    def __init__(self, model: keras.Model | None, threshold: float, min_frame_gap: int, *, sequence_length: int = 1,
                 image_size: tuple[int, int] | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                 num_candidates: int = DEFAULT_CANDIDATES, index_kind: str = "flat",
                 verify: str | PatchSettings | None = None, verify_threshold: float = DEFAULT_VERIFY_THRESHOLD,
                 precision: str = "float32"):
        if not (np.isfinite(threshold) and -1 <= threshold <= 1):
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}.")
        if verify is not None and model is None:
            raise ValueError("A loop detector that verifies needs the model: the spatial check matches its patch "
                             "descriptors.")
        if not 0 <= verify_threshold <= 1:
            raise ValueError(f"verify_threshold is a verification score in [0, 1], got {verify_threshold!r}.")
        if int(min_frame_gap) != min_frame_gap or min_frame_gap < 1:
            raise ValueError(f"min_frame_gap must be a positive number of frames, got {min_frame_gap!r}.")
        if int(sequence_length) != sequence_length or sequence_length < 1:
            raise ValueError(f"sequence_length must be a positive number of frames, got {sequence_length!r}.")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be at least 1, got {num_candidates!r}.")
        if index_kind not in GROWING_INDEX_KINDS:
            raise ValueError(f"A loop detector's index grows a frame at a time: use one of {GROWING_INDEX_KINDS}, "
                             f"not {index_kind!r} (the IVF kinds train on the first vectors added).")
        self.runner = _runner(model, precision)
        self.threshold = float(threshold)
        self.min_frame_gap = int(min_frame_gap)
        self.sequence_length = int(sequence_length)
        self.image_size = tuple(image_size) if image_size else None
        self.max_side = max_side
        self.num_candidates = int(num_candidates)
        self.index_kind = index_kind
        self._descriptors = np.zeros((0, 0), np.float32)
        self._num_frames = 0
        self._searchable_sum = None
        self.index: DescriptorIndex | None = None
        self.verify = verify
        self.verify_threshold = float(verify_threshold)
        self.reranker = Reranker(self.model, verify) if verify is not None else None
        self._patches: list[PatchFeatures] = []

    @property
    def model(self) -> keras.Model | None:
        """The float32 model (saved with the detector; patch features come from it), or None."""
        return self.runner.model if self.runner is not None else None

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self._num_frames

    @property
    def descriptors(self) -> np.ndarray:
        """`(num_frames, dim)` descriptors of every frame added, in stream order."""
        return self._descriptors[: self._num_frames]

    def add(self, image) -> LoopClosure | None:
        """Adds one frame (an image file, or an RGB array `(H, W, 3)` in 0–255) and returns the
        loop it closes, or None."""
        if self.model is None:
            raise ValueError("This detector has no model: add descriptors with add_descriptors.")
        if isinstance(image, (str, Path)):
            descriptors = self.runner.embed([str(image)], self.image_size, self.max_side, verbose=False)
            if self.reranker is not None:
                self._patches += [features for _, features in self.reranker.describer.describe_images(
                    [str(image)], self.image_size, self.max_side)]
        else:
            pixels = resize_array(image, self.image_size, self.max_side)  # the policy a file is read with
            descriptors = self.runner.embed_arrays(pixels[None].numpy())
            if self.reranker is not None:
                self._patches += self.reranker.describer.describe_arrays(pixels[None].numpy())
        return self._add(descriptors)[0]

    def add_images(self, paths, batch_size: int = 8, verbose: bool = True) -> list[LoopClosure | None]:
        """Adds image files as consecutive frames (embedded in batches); one answer per frame."""
        if self.model is None:
            raise ValueError("This detector has no model: add descriptors with add_descriptors.")
        descriptors = self.runner.embed(list(paths), self.image_size, self.max_side, batch_size, verbose)
        if self.reranker is not None:
            described = dict(self.reranker.describer.describe_images(list(paths), self.image_size, self.max_side))
            self._patches += [described[position] for position in range(len(paths))]
        return self._add(descriptors)

    def add_descriptors(self, descriptors) -> list[LoopClosure | None]:
        """Adds `(n, dim)` L2-normalised descriptors as the next n frames; one answer per frame.

        Raises:
            ValueError: a dimension other than the earlier frames', or non-finite values, or a
                detector that verifies (it needs the frames' images).
        """
        if self.reranker is not None:
            raise ValueError("This detector verifies loops by patch matching: add frames as images (add, add_images).")
        return self._add(descriptors)

    def _add(self, descriptors) -> list[LoopClosure | None]:
        descriptors = np.ascontiguousarray(np.atleast_2d(np.asarray(descriptors, np.float32)))
        if descriptors.ndim != 2 or (self._num_frames and descriptors.shape[1] != self._descriptors.shape[1]):
            raise ValueError(f"descriptors must be (n, {self._descriptors.shape[1] or 'dim'}), got {descriptors.shape}.")
        if not np.all(np.isfinite(descriptors)):
            raise ValueError("descriptors contain NaN or infinite values.")
        if self.index is None:
            self._start(descriptors.shape[1])
        answers = []
        for descriptor in descriptors:
            self._append(descriptor)
            answers.append(self._closure(self._num_frames - 1))
        return answers

    def _start(self, dim: int) -> None:
        self.index = create_index(self.index_kind, dim, metric="ip",
                                  model_name=self.model.name if self.model is not None else None)
        self._descriptors = np.zeros((0, dim), np.float32)
        self._searchable_sum = np.zeros(dim, np.float64)

    def _append(self, descriptor: np.ndarray) -> None:
        if self._num_frames == len(self._descriptors):  # grow by doubling: amortised O(1) per frame
            grown = np.zeros((max(64, 2 * len(self._descriptors)), self._descriptors.shape[1]), np.float32)
            grown[: self._num_frames] = self._descriptors[: self._num_frames]
            self._descriptors = grown
        self._descriptors[self._num_frames] = descriptor
        self._num_frames += 1
        # Frames old enough to be matched become searchable.
        newest_searchable = self._num_frames - 1 - self.min_frame_gap
        if newest_searchable >= self.index.size:
            ready = self._descriptors[self.index.size: newest_searchable + 1]
            self.index.add(ready)
            self._searchable_sum += ready.sum(axis=0)

    def _closure(self, frame: int) -> LoopClosure | None:
        searchable = self.index.size
        if searchable == 0:
            return None
        steps = min(self.sequence_length, frame + 1)
        recent = self._descriptors[frame - steps + 1: frame + 1][::-1]  # frame, frame − 1, …
        if steps == 1 and self.reranker is not None:
            return self._verified_closure(frame, recent[0], searchable)
        if steps == 1:
            similarities, matches = self.index.search(recent[:1], 1)
            best, similarity = int(matches[0, 0]), float(similarities[0, 0])
        else:
            best, similarity = self._best_sequence(recent, searchable)
        if similarity < self.threshold:
            return None
        if self.reranker is not None:
            verification = self.reranker.verify(self._patches[frame], [self._patches[best]])[0]
            if verification.score < self.verify_threshold:
                return None
            return LoopClosure(frame, best, similarity, verification.score)
        return LoopClosure(frame, best, similarity)

    def _verified_closure(self, frame: int, descriptor: np.ndarray, searchable: int) -> LoopClosure | None:
        """The best of the frame's candidates above `threshold` after re-ranking by the spatial
        check, if it passes `verify_threshold`."""
        similarities, matches = self.index.search(descriptor[None], min(self.num_candidates, searchable))
        above = similarities[0] >= self.threshold
        candidates, similarities = matches[0][above], similarities[0][above]
        if len(candidates) == 0:
            return None
        reranking = self.reranker.rerank(self._patches[frame], [self._patches[int(c)] for c in candidates])
        best = int(reranking.order[0])
        score = reranking.verifications[best].score
        if score < self.verify_threshold:
            return None
        return LoopClosure(frame, int(candidates[best]), float(similarities[best]), score)

    def _best_sequence(self, recent: np.ndarray, searchable: int) -> tuple[int, float]:
        """The candidate diagonal end with the highest mean similarity over `recent` (newest first)."""
        _, neighbours = self.index.search(recent, min(self.num_candidates, searchable))
        steps = np.arange(len(recent))
        candidates = np.unique((neighbours + steps[:, None]).ravel())
        candidates = candidates[candidates < searchable]
        if candidates.size == 0:
            return -1, -np.inf
        database_frames = candidates[:, None] - steps[None, :]  # (candidates, steps)
        exists = database_frames >= 0
        matched = self._descriptors[np.where(exists, database_frames, 0)]
        frame_similarities = np.einsum("csd,sd->cs", matched.astype(np.float64), recent.astype(np.float64))
        unrelated = recent.astype(np.float64) @ (self._searchable_sum / searchable)
        scores = np.where(exists, frame_similarities, unrelated[None, :]).mean(axis=1)
        best = int(np.argmax(scores))
        return int(candidates[best]), float(scores[best])

    def save(self, directory, overwrite: bool = False) -> None:
        """Writes the detector (settings, every frame's descriptor, the index, the model) into
        `directory`, atomically; `LoopDetector.load` continues the stream where it stopped."""
        with atomic_directory(directory, overwrite) as staging:
            state = {"threshold": self.threshold, "min_frame_gap": self.min_frame_gap,
                     "sequence_length": self.sequence_length, "num_candidates": self.num_candidates,
                     "index_kind": self.index_kind, "num_frames": self._num_frames,
                     "image_size": list(self.image_size) if self.image_size else None, "max_side": self.max_side,
                     "verify": self.verify if self.verify is None or isinstance(self.verify, str) else
                     patch_manifest(self.verify, None, self.reranker.describer.dims, "float16"),
                     "verify_threshold": self.verify_threshold,
                     "precision": self.runner.precision if self.runner is not None else "float32"}
            (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
            np.save(staging / DESCRIPTORS_FILE, self.descriptors)
            if self.index is not None:
                (staging / INDEX_FOLDER).mkdir()
                self.index.save_into(staging / INDEX_FOLDER)
            if self.runner is not None:
                self.runner.save_into(staging)
            if self.reranker is not None:
                write_patch_shard(staging / PATCHES_FOLDER, 0, self._patches, "float16")

    @classmethod
    def load(cls, directory) -> LoopDetector:
        """Reads a detector written by `save`; a folder whose parts disagree is a one-line error."""
        directory = Path(directory)
        if not (directory / STATE_FILE).is_file():
            raise FileNotFoundError(f"{directory} is not a saved loop detector (no {STATE_FILE}).")
        try:
            state = json.loads((directory / STATE_FILE).read_text())
            descriptors = np.load(directory / DESCRIPTORS_FILE, allow_pickle=False)
            model = (ModelRunner.open(directory, state.get("precision", "float32"))
                     if (directory / MODEL_FILE).is_file() else None)
            verify = state.get("verify")
            detector = cls(model, state["threshold"], state["min_frame_gap"],
                           sequence_length=state["sequence_length"], image_size=state["image_size"],
                           max_side=state["max_side"], num_candidates=state["num_candidates"],
                           index_kind=state["index_kind"], verify=settings_of(verify) if isinstance(verify, dict) else verify,
                           verify_threshold=state.get("verify_threshold", DEFAULT_VERIFY_THRESHOLD))
            if verify is not None:
                detector._patches = read_patch_shard(directory / PATCHES_FOLDER, 0)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{directory}: the saved loop detector is damaged ({error}).") from None
        if descriptors.ndim != 2 or len(descriptors) != state["num_frames"] or (
                detector.reranker is not None and len(detector._patches) != len(descriptors)):
            raise ValueError(f"{directory}: {DESCRIPTORS_FILE} holds {len(descriptors)} frames, {STATE_FILE} says "
                             f"{state['num_frames']}.")
        if len(descriptors):
            detector._start(descriptors.shape[1])
            detector.index = load_index(directory / INDEX_FOLDER, expected_dim=descriptors.shape[1])
            detector._descriptors = descriptors.astype(np.float32)
            detector._num_frames = len(descriptors)
            expected_searchable = max(0, len(descriptors) - detector.min_frame_gap)
            if detector.index.size != expected_searchable:
                raise ValueError(f"{directory}: {INDEX_FOLDER}/ holds {detector.index.size} frames, the stream of "
                                 f"{len(descriptors)} frames with a gap of {detector.min_frame_gap} needs "
                                 f"{expected_searchable}.")
            detector._searchable_sum = descriptors[:expected_searchable].astype(np.float64).sum(axis=0)
        return detector


def _runner(model, precision: str) -> ModelRunner | None:
    """The detector's runner: `model` as given when prepared already, else in `precision`."""
    if model is None or isinstance(model, ModelRunner):
        if precision != "float32":
            raise ValueError(f"precision={precision!r} applies to a Keras model; a ModelRunner (or no model) "
                             "runs as it was prepared.")
        return model
    resolved = choose_precision(precision)[0]
    if resolved == "int8":
        raise ValueError("int8 is calibrated on images like the stream's: pass ModelRunner.prepare(model, 'int8', "
                         "calibration_paths=...) as the model.")
    return ModelRunner(model, resolved)
