"""netvlad_tf: NetVLAD place recognition for Keras 3 / TensorFlow.

Example:
>>> import netvlad_tf
>>> model = netvlad_tf.build_netvlad_model(weights=None, num_clusters=8)
>>> model.descriptor_dim
4096
"""

import netvlad_tf.converters  # noqa: E402,F401  (registers the converters of released weights)
from netvlad_tf.backbones import (
    BACKBONES,
    efficientnet_lite0,
    get_backbone,
    register_backbone,
    vgg16_conv5_3,
)
from netvlad_tf.database import embed_database, read_descriptors
from netvlad_tf.database.place_index import PlaceIndex, PlaceMatch
from netvlad_tf.decisions.loop_detector import LoopClosure, LoopDetector
from netvlad_tf.decisions.precision_recall import PrecisionRecall, best_match_precision_recall
from netvlad_tf.decisions.sequences import sequence_similarities
from netvlad_tf.evaluation.evaluate import EvaluationResult, evaluate
from netvlad_tf.initialization.clustering import initialize_clusters, kmeans_centroids, sample_local_descriptors
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.layers.normalization import L2Normalization, l2_normalize
from netvlad_tf.layers.pooling import AveragePooling, GeMPooling, MACPooling, get_pooling
from netvlad_tf.layers.whitening import PCAWhitening, fit_pca_whitening
from netvlad_tf.models.losses import RankingLoss, ranking_loss_terms, reduce_ranking_loss
from netvlad_tf.models.model import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.models.presets import PRESETS
from netvlad_tf.training.train import train
from netvlad_tf.version import __version__  # noqa: F401  (netvlad_tf.__version__)

__all__ = [
    "AveragePooling",
    "BACKBONES",
    "EvaluationResult",
    "GeMPooling",
    "L2Normalization",
    "LoopClosure",
    "LoopDetector",
    "MACPooling",
    "NetVLAD",
    "PRESETS",
    "PCAWhitening",
    "PlaceIndex",
    "PlaceMatch",
    "PlaceRecognitionModel",
    "PrecisionRecall",
    "RankingLoss",
    "best_match_precision_recall",
    "build_netvlad_model",
    "efficientnet_lite0",
    "embed_database",
    "evaluate",
    "fit_pca_whitening",
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
    "sequence_similarities",
    "train",
    "vgg16_conv5_3",
]
