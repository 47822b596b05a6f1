"""A tiny registered test backbone: four narrow 3×3 convolutions of stride 2 (stride 16).

It stands in for VGG16 in tests that are not about VGG16 itself: same contract (RGB images in
0–255 of any size → `(B, H/16, W/16, D)` linear local descriptors, a frozen trunk before its
last convolution), 1/5000 of the parameters.
"""

from __future__ import annotations

import keras

from netvlad_tf.backbones.freezing import freeze_before
from netvlad_tf.backbones.registry import BACKBONES, register_backbone

TINY_BACKBONE = "tiny_test"
TINY_DIM = 16


def tiny_backbone(weights=None, trainable_from: str | None = "tiny_conv4", name: str = "tiny_backbone") -> keras.Model:
    """`(B, H, W, 3) → (B, H/16, W/16, 16)`; the last convolution is linear, like conv5_3's cut."""
    if weights is not None:
        raise ValueError("The tiny test backbone has no pretrained weights.")
    images = keras.Input((None, None, 3), name="images")
    features = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="tiny_scale")(images)
    for index, width in enumerate((8, 8, 16), start=1):
        features = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
                                       name=f"tiny_conv{index}")(features)
    features = keras.layers.Conv2D(TINY_DIM, 3, strides=2, padding="same", name="tiny_conv4")(features)
    backbone = keras.Model(images, features, name=name)
    freeze_before(backbone, trainable_from, "a tiny test backbone layer")
    return backbone


if TINY_BACKBONE not in BACKBONES:
    register_backbone(TINY_BACKBONE)(tiny_backbone)


def clustered_tiny_model(num_clusters: int = 4, alpha: float = 20.0, seed: int = 0):
    """A NetVLAD model on the tiny backbone with a fixed soft assignment (unit-length random
    centres, `alpha`): patches and matches that depend on the image, as after k-means."""
    import numpy as np

    from netvlad_tf import build_netvlad_model

    model = build_netvlad_model(TINY_BACKBONE, weights=None, num_clusters=num_clusters)
    directions = np.random.default_rng(seed).normal(size=(num_clusters, TINY_DIM))
    model.pooling.set_clusters(directions / np.linalg.norm(directions, axis=1, keepdims=True), alpha=alpha)
    return model
