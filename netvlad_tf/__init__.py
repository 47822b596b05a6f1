"""netvlad_tf: NetVLAD place recognition for Keras 3 / TensorFlow.

The face holds the task's objects: the layer and the model, cluster initialisation and learned
whitening, training, evaluation, the descriptor database and the place index, and the decisions
over scores. Everything else is importable from its module (`netvlad_tf.layers`,
`netvlad_tf.backbones`, `netvlad_tf.training`, …).

Example:
>>> import netvlad_tf
>>> model = netvlad_tf.build_netvlad_model(weights=None, num_clusters=8)
>>> model.descriptor_dim
4096
"""

import netvlad_tf.converters  # noqa: E402,F401  (registers the converters of released weights)
from netvlad_tf.backbones import efficientnet_lite0, vgg16_conv5_3
from netvlad_tf.database import embed_database, read_descriptors
from netvlad_tf.database.place_index import PlaceIndex, PlaceMatch
from netvlad_tf.decisions.loop_detector import LoopClosure, LoopDetector
from netvlad_tf.decisions.precision_recall import PrecisionRecall, best_match_precision_recall
from netvlad_tf.decisions.sequences import sequence_similarities
from netvlad_tf.evaluation.evaluate import EvaluationResult, evaluate
from netvlad_tf.initialization.clustering import initialize_clusters
from netvlad_tf.initialization.learned_whitening import with_learned_whitening
from netvlad_tf.layers.netvlad import NetVLAD
from netvlad_tf.layers.normalization import L2Normalization
from netvlad_tf.layers.pooling import AveragePooling, GeMPooling, MACPooling
from netvlad_tf.layers.whitening import PCAWhitening, fit_pca_whitening
from netvlad_tf.models.losses import RankingLoss
from netvlad_tf.models.model import PlaceRecognitionModel, build_netvlad_model
from netvlad_tf.models.presets import PRESETS
from netvlad_tf.training.train import train
from netvlad_tf.version import __version__  # noqa: F401  (netvlad_tf.__version__)

__all__ = [
    "AveragePooling",
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
    "initialize_clusters",
    "read_descriptors",
    "sequence_similarities",
    "train",
    "vgg16_conv5_3",
    "with_learned_whitening",
]
