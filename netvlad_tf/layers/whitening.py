"""PCA whitening learned from database descriptors, as the authors do after training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The paper learns whitening from at most this many training-database descriptors.
MAX_WHITENING_SAMPLES = 10_000
# Eigenvalues below this fraction of the largest one are numerically zero: they bound the rank.
RANK_TOLERANCE = 1e-10
# How each principal direction is scaled (λ: its variance):
#   "authors":   1/√(λ + ε), the paper's whitening (ε tiny);
#   "shrinkage": 1/√(λ + λ̄), λ̄ the mean variance: the covariance shrunk toward λ̄·I before
#                whitening (Ledoit & Wolf, J. Multivariate Analysis 2004), which stops the noisy
#                small variances of a few hundred or thousand samples from being amplified;
#   "none":      1, PCA projection only.
WHITENING_METHODS = ("authors", "shrinkage", "none")
# Shrinkage by default: on the bundled Nordland data (779 training images, 7168-D) it keeps more
# recall than the authors' whitening at every dimension (benchmarks/bench_whitening.py, README);
# method="authors" is the paper's exact recipe (10 000 Pittsburgh images).
DEFAULT_WHITENING_METHOD = "shrinkage"


@dataclass(frozen=True)
class PCAWhitening:
    """A learned whitening `y = (x − mean) @ projection`.

    Attributes:
        mean: `(D,)` mean of the fitted descriptors.
        projection: `(D, output_dim)` principal directions scaled by `1/√(λ + ε)`.
        eigenvalues: `(output_dim,)` variances `λ` along those directions, largest first.
    """

    mean: np.ndarray
    projection: np.ndarray
    eigenvalues: np.ndarray

    @property
    def output_dim(self) -> int:
        """Dimension of the whitened descriptor."""
        return self.projection.shape[1]

    def dense_weights(self) -> list[np.ndarray]:
        """`[kernel, bias]` of the `Dense` layer computing the same map."""
        return [self.projection, -self.mean @ self.projection]

    def transform(self, descriptors: np.ndarray) -> np.ndarray:
        """Whitens `(N, D)` descriptors (without the final L2 normalisation)."""
        return (np.asarray(descriptors) - self.mean) @ self.projection


def fit_pca_whitening(
    descriptors: np.ndarray, output_dim: int, epsilon: float = 1e-9, method: str = DEFAULT_WHITENING_METHOD
) -> PCAWhitening:
    """Learns PCA whitening to `output_dim` dimensions from `(N, D)` descriptors.

    The covariance is `X̃ᵀX̃ / N` for the centred descriptors `X̃`. When `N < D` (the paper:
    10 000 descriptors of 32 768-D) the eigenvectors come from the `N × N` Gram matrix
    `X̃X̃ᵀ / N` instead, `u = X̃ᵀv / √(Nλ)`, so the `D × D` covariance is never formed.

    Args:
        descriptors: `(N, D)` descriptors of training-database images (at most 10 000 are
            needed; the paper samples that many).
        output_dim: number of kept dimensions; at most the rank of the centred data.
        epsilon: added to each eigenvalue before `1/√(λ + ε)`, so tiny variances do not
            blow up.
        method: `"authors"` (`1/√(λ + ε)`), `"shrinkage"` (`1/√(λ + λ̄)`, λ̄ the mean of all
            non-zero eigenvalues) or `"none"` (projection only); see `WHITENING_METHODS`.

    Returns:
        A `PCAWhitening`. With `"authors"` its `transform` has identity covariance on the
        fitted data; with `"shrinkage"` the variance along direction i is `λ_i / (λ_i + λ̄)`.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> whitening = fit_pca_whitening(rng.normal(size=(50, 8)), output_dim=4)
    >>> whitening.projection.shape
    (8, 4)

    Reference: arXiv 1511.07247, Sec. 5 ("PCA ... followed by whitening and L2").
    """
    data = np.asarray(descriptors, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"descriptors must be a 2-D array (N, D), got shape {data.shape}.")
    if not np.all(np.isfinite(data)):
        raise ValueError("descriptors contain NaN or infinite values.")
    if method not in WHITENING_METHODS:
        raise ValueError(f"Unknown whitening method {method!r}; use one of {WHITENING_METHODS}.")
    if int(output_dim) != output_dim or output_dim < 1:
        raise ValueError(f"output_dim must be a positive integer, got {output_dim!r}.")
    num_samples, dim = data.shape
    mean = data.mean(axis=0)
    centred = data - mean
    if num_samples < dim:
        gram_eigenvalues, gram_vectors = np.linalg.eigh(centred @ centred.T / num_samples)
        eigenvalues, order = _descending_nonzero(gram_eigenvalues)
        directions = centred.T @ gram_vectors[:, order]
        directions /= np.sqrt(num_samples * eigenvalues)[None]
    else:
        covariance_eigenvalues, covariance_vectors = np.linalg.eigh(
            centred.T @ centred / num_samples
        )
        eigenvalues, order = _descending_nonzero(covariance_eigenvalues)
        directions = covariance_vectors[:, order]
    rank = eigenvalues.size
    if output_dim > rank:
        raise ValueError(
            f"output_dim={output_dim} exceeds the rank {rank} of the centred descriptors "
            f"({num_samples} samples of dimension {dim}); use at most {rank} or fit on more "
            "descriptors."
        )
    kept_eigenvalues = eigenvalues[:output_dim]
    offset = {"authors": epsilon, "shrinkage": float(eigenvalues.mean()), "none": None}[method]
    scale = 1.0 if offset is None else 1.0 / np.sqrt(kept_eigenvalues + offset)
    projection = directions[:, :output_dim] * np.broadcast_to(scale, (output_dim,))[None]
    return PCAWhitening(mean=mean, projection=projection, eigenvalues=kept_eigenvalues)


def _descending_nonzero(eigenvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(eigenvalues)[::-1]
    largest = max(float(eigenvalues[order[0]]), 0.0)
    order = order[eigenvalues[order] > RANK_TOLERANCE * largest]
    if largest == 0.0:
        order = order[:0]
    return eigenvalues[order], order
