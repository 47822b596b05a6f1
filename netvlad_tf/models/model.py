"""The place-recognition model: backbone → pooling (NetVLAD) → optional PCA whitening + L2."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf
from keras import ops

from netvlad_tf.backbones import get_backbone
from netvlad_tf.io.keras_archive import MODEL_FILE
from netvlad_tf.layers.normalization import L2Normalization
from netvlad_tf.layers.pooling import get_pooling
from netvlad_tf.layers.whitening import PCAWhitening
from netvlad_tf.models.frozen_trunk import FrozenSplit, split_frozen_trunk
from netvlad_tf.models.keras_compat import MultiWorkerFit
from netvlad_tf.models.losses import RankingLoss
from netvlad_tf.models.preset_folders import write_preset_folder
from netvlad_tf.models.preset_loading import load_preset
from netvlad_tf.models.tuple_batch import FEATURE_KEYS, IMAGE_KEYS, tuple_batch
from netvlad_tf.version import __version__

WHITENING_LAYER = "whitening"
# `trainable_from` value that leaves each backbone's own freezing policy in place.
BACKBONE_DEFAULT = "backbone_default"


@keras.saving.register_keras_serializable(package="netvlad_tf")
class PlaceRecognitionModel(MultiWorkerFit, keras.Model):
    """Maps RGB images in 0–255, `(B, H, W, 3)` of any size, to L2-normalised descriptors.

    Args:
        backbone: a functional model from images to local descriptors `(B, H', W', D)`.
        pooling: a layer from `(B, H', W', D)` to an L2-normalised `(B, P)` vector, e.g.
            `NetVLAD` (P = K·D) or `MACPooling` (P = D).
        whitening_dim: when set, a frozen `Dense(whitening_dim)` holding the PCA whitening
            (`with_whitening` gives a model with one learned) followed by L2 normalisation.

    Example:
    >>> from netvlad_tf import NetVLAD, vgg16_conv5_3
    >>> model = PlaceRecognitionModel(vgg16_conv5_3(weights=None), NetVLAD(num_clusters=4))
    >>> model.output.shape
    (None, 2048)
    """

    def __init__(
        self,
        backbone: keras.Model,
        pooling: keras.layers.Layer,
        whitening_dim: int | None = None,
        **kwargs,
    ):
        images = keras.Input((None, None, 3), name="images")
        descriptors = pooling(backbone(images))
        pooled_dim = descriptors.shape[-1]
        if whitening_dim is not None:
            if int(whitening_dim) != whitening_dim or not 1 <= whitening_dim <= pooled_dim:
                raise ValueError(
                    f"whitening_dim must be an integer in [1, {pooled_dim}] (the pooled "
                    f"dimension), got {whitening_dim!r}."
                )
            whitening_dim = int(whitening_dim)
            whitened = keras.layers.Dense(whitening_dim, trainable=False, name=WHITENING_LAYER, dtype="float32")(
                descriptors
            )
            descriptors = L2Normalization(name="whitening_l2", dtype="float32")(whitened)
        super().__init__(inputs=images, outputs=descriptors, **kwargs)
        self.backbone = backbone
        self.pooling = pooling
        self.whitening_dim = whitening_dim
        self.ranking_loss_tracker = keras.metrics.Mean(name="ranking_loss")
        self.ranking_loss = None
        self._frozen_split: FrozenSplit | None = None

    def frozen_split(self) -> FrozenSplit | None:
        """This model as a frozen trunk and a trainable head (see `split_frozen_trunk`), or
        None when the backbone trains from its first layer. Built once, after which the split
        follows this model's trainable flags as they were then.

        Example:
        >>> from netvlad_tf import build_netvlad_model
        >>> build_netvlad_model(weights=None, num_clusters=4).frozen_split().cut_layer
        'block5_conv1'
        """
        if self._frozen_split is None:
            self._frozen_split = split_frozen_trunk(self)
        return self._frozen_split

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """As `keras.Model.compile`; a `RankingLoss` is kept for the tuple `train_step`.

        The ranking loss is held apart from Keras' compiled loss so that Keras never tries to
        build it by calling the model on a tuple batch (it does so under `tf.distribute`).
        """
        self.ranking_loss = loss if isinstance(loss, RankingLoss) else None
        super().compile(optimizer=optimizer, loss=None if self.ranking_loss else loss, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.ranking_loss is not None:
            config = {**config, "loss": keras.saving.serialize_keras_object(self.ranking_loss)}
        return config

    def compile_from_config(self, config):
        """Compiles a loaded model as it was saved (optimizer, ranking loss), ready to train on."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        """One step of the paper's weakly supervised training on a batch of tuples.

        `data` is a dict with `query` `(B, H, W, 3)`, `positives` `(B, P, H, W, 3)`,
        `negatives` `(B, N, H, W, 3)`, `positive_mask` `(B, P)` and `negative_mask`
        `(B, N)` (see `netvlad_tf.training.tuple_dataset`); compile with
        `loss=RankingLoss(...)`. A batch may instead hold the frozen trunk's features of
        those images under `query_features`, `positive_features` and `negative_features`
        (see `frozen_split`): then only the trainable head runs, with the same loss and
        gradients. Any other batch takes Keras' ordinary supervised step.
        """
        tuples = tuple_batch(data)
        if tuples is None:
            return self.multi_worker_logs(super().train_step(data))
        with tf.GradientTape() as tape:
            # Under tf.distribute this is the replica's share of the global batch's loss (its
            # normaliser counts the whole batch): Keras sums the shares' gradients.
            loss = self._ranking_loss(tuples, training=True)
            # Under a float16 policy Keras' LossScaleOptimizer unscales the gradients it
            # applies, so they must come from the scaled loss (other optimizers: unchanged).
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.ranking_loss_tracker.update_state(_global_sum(loss))
        return self.multi_worker_logs({"loss": self.ranking_loss_tracker.result()})

    def test_step(self, data):
        """The ranking loss of a batch of tuples without updating weights."""
        tuples = tuple_batch(data)
        if tuples is None:
            return self.multi_worker_logs(super().test_step(data))
        self.ranking_loss_tracker.update_state(_global_sum(self._ranking_loss(tuples, training=False)))
        return self.multi_worker_logs({"loss": self.ranking_loss_tracker.result()})

    def _ranking_loss(self, data, training: bool):
        if self.ranking_loss is None:
            raise ValueError(
                "Training on tuples needs model.compile(optimizer, loss=netvlad_tf.RankingLoss())."
            )
        if FEATURE_KEYS[0] in data:
            query, positives, negatives = (data[key] for key in FEATURE_KEYS)
            forward = self.frozen_split().head
        else:
            query, positives, negatives = (data[key] for key in IMAGE_KEYS)
            forward = self
        batch = ops.shape(query)[0]
        num_positives, num_negatives = positives.shape[1], negatives.shape[1]
        tuple_size = 1 + num_positives + num_negatives
        images = ops.concatenate([query[:, None], positives, negatives], axis=1)
        # One forward pass for every image of every tuple.
        images = ops.reshape(images, (-1, *ops.shape(query)[1:]))
        # Distances and the loss in float32 even when the layers compute in bfloat16.
        descriptors = ops.cast(forward(images, training=training), "float32")
        packed = ops.reshape(descriptors, (batch, tuple_size, -1))
        # The loss gets the positives and negatives apart: P is this batch's, never assumed.
        return self.ranking_loss.tuple_loss(
            packed[:, 0], packed[:, 1 : 1 + num_positives], packed[:, 1 + num_positives :],
            positive_mask=data["positive_mask"], negative_mask=data["negative_mask"],
        )

    @property
    def descriptor_dim(self) -> int:
        """Length of the descriptors the model outputs."""
        return int(self.output.shape[-1])

    @property
    def pooled_model(self) -> keras.Model:
        """A model sharing these weights that stops after pooling, before the whitening: what
        `fit_pca_whitening` learns from.

        Example:
        >>> from netvlad_tf import MACPooling, vgg16_conv5_3
        >>> model = PlaceRecognitionModel(vgg16_conv5_3(weights=None), MACPooling(), 8)
        >>> model.pooled_model.output.shape
        (None, 512)
        """
        return keras.Model(self.input, self.pooling.output, name=f"{self.name}_pooled")

    def with_pooling(self, pooling: str) -> PlaceRecognitionModel:
        """This model's backbone (shared weights) under another pooling: the paper's baselines.

        Args:
            pooling: `"mac"`, `"avg"`, `"gem"` (or `"netvlad"` for a fresh, uninitialised layer).

        Returns:
            A `PlaceRecognitionModel` without whitening.

        Example:
        >>> from netvlad_tf import build_netvlad_model
        >>> build_netvlad_model(weights=None, num_clusters=4).with_pooling("mac").descriptor_dim
        512

        Reference: arXiv 1511.07247, Sec. 5 (max pooling, "fmax", and average pooling baselines).
        """
        return PlaceRecognitionModel(self.backbone, get_pooling(pooling, name=pooling), name=f"{self.name}_{pooling}")

    def with_whitening(self, whitening: PCAWhitening) -> PlaceRecognitionModel:
        """This model (shared backbone and pooling) ending in the PCA whitening `whitening` + L2:
        the paper whitens after training (`fit_pca_whitening` of `pooled_model`'s outputs, or
        `netvlad_tf.with_learned_whitening` from images).

        Args:
            whitening: a `PCAWhitening` from the pooled dimension to any smaller one.

        Returns:
            A new `PlaceRecognitionModel` whose descriptors are the whitened, L2-normalised ones.

        Example:
        >>> import numpy as np
        >>> from netvlad_tf import MACPooling, fit_pca_whitening, vgg16_conv5_3
        >>> model = PlaceRecognitionModel(vgg16_conv5_3(weights=None), MACPooling())
        >>> model.with_whitening(fit_pca_whitening(np.random.rand(20, 512), output_dim=4)).descriptor_dim
        4

        Reference: arXiv 1511.07247, Sec. 5.2 (PCA whitening of the NetVLAD vector).
        """
        pooled_dim = self.pooling.output.shape[-1]
        if whitening.projection.shape[0] != pooled_dim:
            raise ValueError(f"The whitening maps {whitening.projection.shape[0]} → {whitening.output_dim} "
                             f"dimensions; this model's pooling gives {pooled_dim}.")
        whitened = PlaceRecognitionModel(self.backbone, self.pooling, whitening_dim=whitening.output_dim,
                                         name=self.name)
        whitened.get_layer(WHITENING_LAYER).set_weights(whitening.dense_weights())
        return whitened

    def with_dims(self, dims: int) -> PlaceRecognitionModel:
        """A compact copy: the first `dims` whitened dimensions, L2-normalised again (the
        authors' `cropToDim`). PCA orders the whitened dimensions by variance, so the first ones
        keep most of the descriptor; the whitening matrix itself is cut to `dims` columns, so
        the saved and exported model is smaller and its output equals cropping the full
        descriptor and normalising it again.

        Args:
            dims: dimensions to keep, 1 … `whitening_dim`.

        Returns:
            A new `PlaceRecognitionModel` sharing this model's backbone and pooling.

        Raises:
            ValueError: the model has no PCA whitening (cropping a NetVLAD vector before
                whitening keeps a few clusters' residuals, not its strongest directions), or
                `dims` out of range.

        Example:
        >>> import numpy as np
        >>> from netvlad_tf import MACPooling, fit_pca_whitening, vgg16_conv5_3
        >>> model = PlaceRecognitionModel(vgg16_conv5_3(weights=None), MACPooling())
        >>> model = model.with_whitening(fit_pca_whitening(np.random.rand(20, 512), output_dim=8))
        >>> model.with_dims(4).descriptor_dim
        4

        Reference: arXiv 1511.07247, Sec. 5.2 and Fig. 5 (PCA-whitened NetVLAD cut to 128…4096-D).
        """
        if self.whitening_dim is None:
            raise ValueError(f"{self.name} has no PCA whitening: keeping the first D dimensions only makes sense "
                             "after whitening, which orders them by variance; learn one first (`netvlad-tf pca`).")
        if int(dims) != dims or not 1 <= dims <= self.whitening_dim:
            raise ValueError(f"dims must be an integer in [1, {self.whitening_dim}] (the whitened dimension), "
                             f"got {dims!r}.")
        dims = int(dims)
        compact = PlaceRecognitionModel(self.backbone, self.pooling, whitening_dim=dims,
                                        name=self.name if dims == self.whitening_dim else f"{self.name}_{dims}d")
        kernel, bias = self.get_layer(WHITENING_LAYER).get_weights()
        compact.get_layer(WHITENING_LAYER).set_weights([kernel[:, :dims], bias[:dims]])
        return compact

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "pooling": keras.saving.serialize_keras_object(self.pooling),
            "whitening_dim": self.whitening_dim,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_preset(cls, preset: str, dims: int | None = None, *, released_file: str | os.PathLike | None = None,
                    backbone_weights: str | os.PathLike | None = None, **overrides) -> PlaceRecognitionModel:
        """The model a preset names, keras-hub's way: a built-in name (`PRESETS`), a preset
        folder (`save_to_preset`), `hf://owner/repo[@revision]` or
        `kaggle://owner/model/keras/variant` (resolved, downloaded and converted by
        `netvlad_tf.models.preset_loading`).

        Args:
            preset: the name, folder or hub handle.
            dims: keep only the first `dims` whitened dimensions (`with_dims`); the preset must
                carry PCA whitening.
            released_file: for a converted built-in preset, a local copy of its released file
                (needed where it has no public address; else it is downloaded on first use).
            backbone_weights: for a built preset, the backbone's weights instead of its own
                (e.g. a local VGG16 `.h5`).
            **overrides: further `build_netvlad_model` arguments for built presets
                (e.g. `num_clusters=32`, `whitening_dim=256`).

        Returns:
            A `PlaceRecognitionModel`.

        Example:
        >>> model = PlaceRecognitionModel.from_preset("efficientnet_lite0_imagenet", num_clusters=8)
        >>> model.descriptor_dim
        896
        """
        model = load_preset(preset, released_file, backbone_weights, overrides, build=build_netvlad_model)
        if not isinstance(model, cls):
            raise ValueError(f"{preset}: {MODEL_FILE} holds a Keras {type(model).__name__}, not a {cls.__name__}.")
        return model if dims is None else model.with_dims(dims)

    def save_to_preset(self, preset_dir, image_size: tuple[int, int] | None = None,
                       max_side: int | None = 640, training_data: str = "", results: dict | None = None,
                       licence: str = "unknown", overwrite: bool = False) -> Path:
        """Writes a preset folder that `from_preset` reads (locally, or once uploaded to the
        Hugging Face Hub or Kaggle): `model.keras`, `metadata.json` (package version, input
        policy, descriptor dimension and layout, whitening, training data, results, licence)
        and a `README.md` model card with the Hub's front matter (`library_name: keras`).

        Args:
            preset_dir: the folder to create (atomically).
            image_size: `(H, W)` the model was trained and evaluated at; None: native sizes.
            max_side: without `image_size`, the longest side images were capped at.
            training_data: what the weights were trained on.
            results: e.g. `{"Pitts30k-test R@1": 0.84}`.
            licence: the weights' licence (a Hub licence id such as `"mit"`, `"cc-by-4.0"`).
            overwrite: replace an existing folder.

        Returns:
            The folder.

        Example:
        >>> import tempfile, pathlib
        >>> model = build_netvlad_model(weights=None, pooling="mac")
        >>> folder = model.save_to_preset(pathlib.Path(tempfile.mkdtemp()) / "mac")
        >>> PlaceRecognitionModel.from_preset(str(folder)).descriptor_dim
        512
        """
        metadata = {
            "netvlad_tf_version": __version__,
            "input": {"color": "RGB", "range": [0, 255], "dtype": "float32",
                      "image_size": list(image_size) if image_size else None, "max_side": max_side},
            "descriptor": {"dimension": self.descriptor_dim, "pooling": type(self.pooling).__name__,
                           "layout": getattr(self.pooling, "output_layout", None), "whitening": self.whitening_dim,
                           "normalization": "L2"},
            "training_data": training_data,
            "results": results or {},
            "licence": licence,
        }
        return write_preset_folder(self, preset_dir, metadata, overwrite)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["pooling"] = keras.saving.deserialize_keras_object(config["pooling"])
        return cls(**config)


def build_netvlad_model(
    backbone: str = "vgg16",
    weights: str | None = "imagenet",
    num_clusters: int = 64,
    whitening_dim: int | None = None,
    pooling: str = "netvlad",
    trainable_from: str | None = BACKBONE_DEFAULT,
    output_layout: str = "matlab",
    normalize_input: bool = True,
    backbone_options: dict | None = None,
) -> PlaceRecognitionModel:
    """Builds the paper's model: VGG16 conv5_3 (pre-ReLU) + NetVLAD (+ PCA whitening + L2).

    Args:
        backbone: a name registered in `netvlad_tf.backbones` (`"vgg16"`,
            `"efficientnet_lite0"`).
        weights: the backbone's weights: `"imagenet"`, `None` or a local file path.
        num_clusters: K of NetVLAD (ignored by the other poolings).
        whitening_dim: output size of the PCA whitening (the paper: 4096), or None for the
            raw pooled descriptor.
        pooling: `"netvlad"`, or the baselines `"mac"`, `"avg"`, `"gem"`.
        trainable_from: first trainable backbone layer; `"backbone_default"` keeps the
            backbone's own policy (VGG16: conv5_1 as in the paper), `None` trains all.
        output_layout: NetVLAD's output order, `"matlab"` or `"cluster_major"`.
        normalize_input: L2-normalise local descriptors inside NetVLAD.
        backbone_options: further keyword arguments of the backbone builder, e.g.
            `{"cut": "stride32"}` for EfficientNet-Lite0.

    Returns:
        A `PlaceRecognitionModel`. Initialise NetVLAD with
        `netvlad_tf.initialize_clusters`; add learned whitening with `with_whitening`.

    Example:
    >>> model = build_netvlad_model(weights=None, num_clusters=8)
    >>> model.descriptor_dim
    4096
    """
    options = dict(backbone_options or {})
    if trainable_from != BACKBONE_DEFAULT:
        options["trainable_from"] = trainable_from
    backbone_model = get_backbone(backbone, weights=weights, **options)
    # The head computes in float32 under any global mixed-precision policy (`train
    # --mixed_precision`): its softmax, residual sums and normalisations need float32, and cost
    # nothing beside the backbone (see netvlad_tf.inference.precision).
    if pooling == "netvlad":
        pooling_layer = get_pooling(
            "netvlad",
            num_clusters=num_clusters,
            output_layout=output_layout,
            normalize_input=normalize_input,
            name="netvlad",
            dtype="float32",
        )
    else:
        pooling_layer = get_pooling(pooling, name=pooling, dtype="float32")
    return PlaceRecognitionModel(
        backbone_model,
        pooling_layer,
        whitening_dim=whitening_dim,
        name=f"{backbone}_{pooling}",
    )


def _global_sum(replica_value):
    """The sum of `replica_value` over the replicas of a `tf.distribute` step (itself on one device)."""
    replica_context = tf.distribute.get_replica_context()
    if replica_context is None or replica_context.num_replicas_in_sync == 1:
        return replica_value
    return replica_context.all_reduce(tf.distribute.ReduceOp.SUM, replica_value)
