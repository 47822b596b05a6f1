"""How closely an exported artefact reproduces the Keras model's descriptors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
        return asdict(self)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.artefact:<22} {self.size_bytes / 1e6:9.1f} MB  max|Δ| {self.max_abs_diff:.2e}  "
                f"cos {self.min_cosine:.5f}  {self.latency_ms:8.1f} ms/image  [{self.bar}: {verdict}]")


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
