"""What embeds images: a float32 model and the number format it runs in, decided once.

`embed_database`, `evaluate`, `PlaceIndex` and `LoopDetector` each hold a `ModelRunner` (after
`precision.choose_precision` resolves `"auto"`); none of them makes a low-precision copy, calibrates
or opens an int8 model itself. The float32 model stays the one that is
saved and the one patch features come from (`netvlad_tf.reranking`); `forward` is what the
images run through: that model, its bfloat16/float16 copy (`precision.low_precision_model`), or
its calibrated int8 copy on ONNX Runtime (`int8.OnnxRuntimeModel`).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.inference.embedding import Embedder, embed_images
from netvlad_tf.inference.precision import PRECISIONS, low_precision_model
from netvlad_tf.io.keras_archive import MODEL_FILE
from netvlad_tf.models.model_files import open_model

# The calibrated int8 model's file beside `model.keras` in a saved folder.
INT8_MODEL_FILE = "model_int8.onnx"


class ModelRunner:
    """A float32 model and the precision its images are embedded in (resolved: float32,
    bfloat16, float16 or int8).

    Args:
        model: the float32 model (a netvlad_tf model, or for float32 any Keras model from
            images to descriptors).
        precision: `"float32"`, `"bfloat16"`, `"float16"` or `"int8"` (`"auto"` is resolved
            first, by `precision.choose_precision`).
        int8_model: with int8, the calibrated model (`prepare` makes one, `open` reads one).
        model_file: the `.keras` file `model` was read from or saved to, which `save_into`
            copies instead of saving the model again (None: saved).

    Raises:
        ValueError: an unknown precision, int8 without its model, or a low precision for a
            model that is not a netvlad_tf model.

    Example:
    >>> from netvlad_tf import build_netvlad_model
    >>> runner = ModelRunner(build_netvlad_model(weights=None, num_clusters=4), "bfloat16")
    >>> runner.precision, runner.forward.backbone.layers[-1].compute_dtype
    ('bfloat16', 'bfloat16')

    Reference: arXiv 1511.07247, Sec. 3 (the NetVLAD head runs in float32 in every precision).
    """

    def __init__(self, model: keras.Model, precision: str = "float32", int8_model=None, model_file=None):
        if precision not in PRECISIONS or precision == "auto":
            raise ValueError(f"A runner's precision is float32, bfloat16, float16 or int8, got {precision!r}.")
        if precision == "int8" and int8_model is None:
            raise ValueError("An int8 runner needs its calibrated model (ModelRunner.prepare makes one).")
        self.model = model
        self.precision = precision
        self.int8_model = int8_model
        self.model_file = Path(model_file) if model_file is not None else None
        self.forward = int8_model if precision == "int8" else low_precision_model(model, precision)

    @classmethod
    def prepare(cls, model: keras.Model, precision: str = "float32", *, calibration_paths: Sequence[str] = (),
                image_size: tuple[int, int] | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                int8_path=None, verbose: bool = True) -> ModelRunner:
        """The runner of `model` in `precision`, int8 calibrated on `calibration_paths` (images
        spread over the database) and checked on others (`int8.calibrated_int8_model`).

        Args:
            model: the float32 model.
            precision: a resolved precision (`choose_precision`).
            calibration_paths: int8: the images to be embedded.
            image_size, max_side: int8: their image policy.
            int8_path: int8: where the quantised model is kept and reused (None: a temporary file).
            verbose: int8: print the parity line.
        """
        if precision != "int8":
            return cls(model, precision)
        from netvlad_tf.inference.int8 import calibrated_int8_model

        paths = list(calibration_paths)
        if int8_path is not None:
            return cls(model, "int8", calibrated_int8_model(model, paths, int8_path, image_size, max_side, verbose))
        with tempfile.TemporaryDirectory() as work:  # the session keeps the model once it is made
            int8 = calibrated_int8_model(model, paths, Path(work) / INT8_MODEL_FILE, image_size, max_side, verbose)
        return cls(model, "int8", int8)

    @classmethod
    def open(cls, directory, precision: str = "float32") -> ModelRunner:
        """The runner a saved folder holds (`save_into`): its `model.keras` and, with int8, its
        `model_int8.onnx`.

        Args:
            directory: the folder (a descriptor folder, a place index, a loop detector).
            precision: the precision the folder records.

        Raises:
            FileNotFoundError, ModelFileError: a missing or bad model file (named).
        """
        directory = Path(directory)
        model = open_model(directory / MODEL_FILE)
        int8_model = None
        if precision == "int8":
            from netvlad_tf.inference.int8 import OnnxRuntimeModel

            int8_model = OnnxRuntimeModel(directory / INT8_MODEL_FILE, name=f"{model.name}_int8")
        return cls(model, precision, int8_model, directory / MODEL_FILE)

    def saved_in(self, model_file) -> ModelRunner:
        """This runner, knowing that its model was saved to `model_file` (what `save_into` copies);
        the model, precision and forward pass are shared, not made again."""
        known = copy.copy(self)
        known.model_file = Path(model_file)
        return known

    def save_into(self, directory) -> None:
        """Writes `model.keras` (and with int8 `model_int8.onnx`) into an existing folder: the
        model's own file copied where it still exists, else the model saved."""
        directory = Path(directory)
        if self.model_file is not None and self.model_file.is_file():
            shutil.copyfile(self.model_file, directory / MODEL_FILE)
        else:
            self.model.save(directory / MODEL_FILE)
        if self.int8_model is not None:
            (directory / INT8_MODEL_FILE).write_bytes(self.int8_model.onnx_bytes)

    def in_precision(self, precision: str) -> ModelRunner:
        """This model in another resolved precision; int8 only where this runner holds one.

        Raises:
            ValueError: int8 asked of a runner without an int8 model.
        """
        if precision == self.precision:
            return self
        if precision == "int8" and self.int8_model is None:
            raise ValueError(f"{self.model.name} holds no int8 model (none was calibrated); build or embed with "
                             "--precision=int8 to run it in int8.")
        return ModelRunner(self.model, precision, self.int8_model, self.model_file)

    @property
    def descriptor_dim(self) -> int:
        """The length of the descriptors it makes."""
        return int(self.model.output.shape[-1])

    def embed(self, paths: Sequence[str], image_size: tuple[int, int] | None = None,
              max_side: int | None = DEFAULT_MAX_SIDE, batch_size: int = 8, verbose: bool = True) -> np.ndarray:
        """`(N, dim)` float32 descriptors of the images at `paths` (`embedding.embed_images`)."""
        return embed_images(self.forward, paths, image_size, max_side, batch_size, verbose)

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """`(B, dim)` float32 descriptors of a batch of RGB images `(B, H, W, 3)` in 0–255."""
        return Embedder(self.forward)(images)[0]
