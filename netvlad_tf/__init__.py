"""netvlad_tf: NetVLAD place recognition for Keras 3 / TensorFlow.

Example:
>>> import netvlad_tf
>>> model = netvlad_tf.build_netvlad_model(weights=None, num_clusters=8)
>>> model.descriptor_dim
4096
"""

from netvlad_tf.backbones import (
    BACKBONES,
    efficientnet_lite0,
    get_backbone,
    register_backbone,
    vgg16_conv5_3,
)
from netvlad_tf.clustering import initialize_clusters, kmeans_centroids, sample_local_descriptors
from netvlad_tf.database import embed_database, read_descriptors
from netvlad_tf.evaluation.evaluate import EvaluationResult, evaluate
from netvlad_tf.losses import RankingLoss, ranking_loss_terms, reduce_ranking_loss
from netvlad_tf.model import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.netvlad import NetVLAD
from netvlad_tf.normalization import L2Normalization, l2_normalize
from netvlad_tf.pooling import AveragePooling, GeMPooling, MACPooling, get_pooling
from netvlad_tf.weights import PRESETS, from_preset
from netvlad_tf.whitening import PCAWhitening, fit_pca_whitening

# keras-hub style: `PlaceRecognitionModel.from_preset("efficientnet_lite0_imagenet")`, and the
# same through `build_netvlad_model.from_preset`. Attached here because the presets build models.
PlaceRecognitionModel.from_preset = classmethod(lambda cls, name, weights=None, **overrides:
                                                from_preset(name, weights, **overrides))
build_netvlad_model.from_preset = from_preset

__version__ = "0.1.0"

__all__ = [
    "AveragePooling",
    "BACKBONES",
    "EvaluationResult",
    "GeMPooling",
    "L2Normalization",
    "MACPooling",
    "NetVLAD",
    "PRESETS",
    "PCAWhitening",
    "PlaceRecognitionModel",
    "RankingLoss",
    "build_netvlad_model",
    "efficientnet_lite0",
    "embed_database",
    "evaluate",
    "fit_pca_whitening",
    "from_preset",
    "get_backbone",
    "get_pooling",
    "initialize_clusters",
    "kmeans_centroids",
    "l2_normalize",
    "ranking_loss_terms",
    "read_descriptors",
    "reduce_ranking_loss",
    "register_backbone",
    "sample_local_descriptors",
    "vgg16_conv5_3",
]
