"""How closely an exported artefact reproduces the Keras model's descriptors."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class ParityReport:
    """Size, fidelity and speed of one exported artefact, and whether it met its bar."""

    artefact: str
    path: str
    size_bytes: int
    max_abs_diff: float
    min_cosine: float
    latency_ms: float
    bar: str
    passed: bool

    def as_dict(self) -> dict:
        """The report's fields as a dict (for model cards and JSON)."""
        return asdict(self)

    def line(self) -> str:
        """One table row: artefact, size, max|Δ|, cosine and the verdict."""
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.artefact:<22} {self.size_bytes / 1e6:9.1f} MB  max|Δ| {self.max_abs_diff:.2e}  "
                f"cos {self.min_cosine:.5f}  {self.latency_ms:8.1f} ms/image  [{self.bar}: {verdict}]")


def measure_parity(artefact: str, path, model, images: np.ndarray, run: Callable[[np.ndarray], np.ndarray],
                   bar: str, meets: Callable[[float, float], bool]) -> ParityReport:
    """Runs an exported artefact (`run(images) → descriptors`) once to warm up, then on all
    `images`, and compares with the Keras model's descriptors.

    Args:
        artefact: its name in the report (`"onnx"`, `"tflite/int8"`, …).
        path: the artefact's file or folder (its size is measured).
        model: the Keras model.
        images: `(B, H, W, 3)` images in 0–255 (cast as `run` needs).
        run: the artefact's inference.
        bar: the bar, in words; `meets(max_abs_diff, min_cosine)` says whether it is met.

    Returns:
        The `ParityReport`.
    """
    import keras

    reference = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    run(images[:1])
    start = time.perf_counter()
    exported = run(images)
    latency_ms = 1000 * (time.perf_counter() - start) / len(images)
    max_abs_diff, cosine = compare_descriptors(reference, exported)
    path = Path(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return ParityReport(artefact, str(path), size, max_abs_diff, cosine, latency_ms, bar, meets(max_abs_diff, cosine))


def compare_descriptors(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """`(max |reference − candidate|, min cosine per row)`.

    Example:
    >>> compare_descriptors(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))
    (0.0, 1.0)
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"Descriptor shapes differ: {reference.shape} vs {candidate.shape}.")
    cosine = (reference * candidate).sum(1) / np.maximum(
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1), 1e-30
    )
    return float(np.abs(reference - candidate).max()), float(cosine.min())
