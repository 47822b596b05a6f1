"""Adding learned PCA whitening to a trained model (the paper whitens after training)."""

from __future__ import annotations

from collections.abc import Sequence

from netvlad_tf.data.images import DEFAULT_MAX_SIDE
from netvlad_tf.data.sampling import evenly_spaced
from netvlad_tf.inference.embedding import embed_images
from netvlad_tf.layers.whitening import DEFAULT_WHITENING_METHOD, MAX_WHITENING_SAMPLES, fit_pca_whitening
from netvlad_tf.models.model import PlaceRecognitionModel


def with_learned_whitening(
    model: PlaceRecognitionModel,
    database_paths: Sequence[str],
    whitening_dim: int,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    verbose: bool = True,
    max_side: int | None = DEFAULT_MAX_SIDE,
    method: str = DEFAULT_WHITENING_METHOD,
) -> PlaceRecognitionModel:
    """A model sharing `model`'s backbone and pooling, ending in PCA whitening to
    `whitening_dim` learned from at most 10 000 of `database_paths` (evenly spaced) + L2
    (paper Sec. 5: whitening after training).

    Args:
        model: the trained model.
        database_paths: images to learn the whitening from.
        whitening_dim: output dimension.
        image_size, max_side: the image policy (see `netvlad_tf.data.images`).
        batch_size: images per forward pass.
        verbose: show a progress bar.
        method: how principal directions are scaled (`netvlad_tf.layers.whitening.WHITENING_METHODS`).

    Returns:
        The whitened `PlaceRecognitionModel`.

    Example:
    >>> from netvlad_tf import build_netvlad_model
    >>> from netvlad_tf.data import read_csv_dataset
    >>> from netvlad_tf.sample_data import nordland_csv
    >>> paths = read_csv_dataset(nordland_csv("test")).database_paths[:12]
    >>> model = build_netvlad_model(weights=None, pooling="mac")
    >>> with_learned_whitening(model, paths, 8, (32, 64), verbose=False).descriptor_dim
    8
    """
    sample = evenly_spaced(database_paths, MAX_WHITENING_SAMPLES)
    pooled = embed_images(model.pooled_model, sample, image_size, max_side, batch_size, verbose)
    return model.with_whitening(fit_pca_whitening(pooled, whitening_dim, method=method))
