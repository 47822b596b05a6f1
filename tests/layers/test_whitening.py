"""PCA whitening: identity covariance after the Dense layer, both eigen-solvers agree."""

import keras
import numpy as np
import pytest
from sklearn.decomposition import PCA

from netvlad_tf import fit_pca_whitening


def correlated_data(rng, num_samples, dim):
    return rng.normal(size=(num_samples, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)


@pytest.mark.parametrize("num_samples, dim", [(400, 12), (30, 64)])  # covariance / Gram path
def test_whitened_covariance_is_identity_through_dense(rng, num_samples, dim):
    data = correlated_data(rng, num_samples, dim)
    output_dim = 10
    whitening = fit_pca_whitening(data, output_dim, method="authors")
    dense = keras.layers.Dense(output_dim, dtype="float64")
    dense.build((None, dim))
    dense.set_weights(whitening.dense_weights())
    whitened = np.array(dense(data))
    np.testing.assert_allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(output_dim), atol=1e-6)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-8)


@pytest.mark.parametrize("num_samples, dim", [(400, 12), (30, 64)])
def test_matches_sklearn_pca(rng, num_samples, dim):
    data = correlated_data(rng, num_samples, dim)
    whitening = fit_pca_whitening(data, 6, epsilon=0.0, method="authors")
    reference = PCA(n_components=6, svd_solver="full").fit(data)
    # sklearn divides by N − 1; the paper's covariance divides by N.
    np.testing.assert_allclose(
        whitening.eigenvalues, reference.explained_variance_ * (num_samples - 1) / num_samples, rtol=1e-8
    )
    directions = whitening.projection * np.sqrt(whitening.eigenvalues)[None]
    cosines = np.abs(np.sum(directions * reference.components_.T, axis=0))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-6)


def test_output_dim_above_rank_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="exceeds the rank 19"):
        fit_pca_whitening(rng.normal(size=(20, 50)), output_dim=25)


@pytest.mark.parametrize(
    "descriptors, output_dim, message",
    [(np.zeros(5), 1, "2-D"), (np.full((4, 2), np.nan), 1, "NaN"), (np.ones((4, 2)), 0, "positive")],
)
def test_bad_input(descriptors, output_dim, message):
    with pytest.raises(ValueError, match=message):
        fit_pca_whitening(descriptors, output_dim)


def test_shrinkage_whitening_shrinks_toward_the_mean_variance(rng):
    """Known covariance: independent axes with variances 9, 4, 1, 0.25, 0.01, rotated. Shrinkage
    whitening leaves direction i with variance λ_i / (λ_i + λ̄) (λ_i the sample eigenvalues,
    λ̄ their mean), the authors' whitening with 1, plain PCA with λ_i."""
    true_variances = np.array([9.0, 4.0, 1.0, 0.25, 0.01])
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    data = (rng.normal(size=(40_000, 5)) * np.sqrt(true_variances)) @ rotation.T + 3.0
    sample_eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(data.T, bias=True)))[::-1]
    np.testing.assert_allclose(sample_eigenvalues, true_variances, rtol=0.05)
    expected = {
        "shrinkage": sample_eigenvalues / (sample_eigenvalues + sample_eigenvalues.mean()),
        "authors": np.ones(5),
        "none": sample_eigenvalues,
    }
    for method, variances in expected.items():
        transformed = fit_pca_whitening(data, 5, method=method).transform(data)
        covariance = np.cov(transformed.T, bias=True)
        np.testing.assert_allclose(np.diag(covariance), variances, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-8)
    with pytest.raises(ValueError, match="Unknown whitening method"):
        fit_pca_whitening(data, 2, method="zca")
