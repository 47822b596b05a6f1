"""The paper's training recipe around `model.fit`: SGD, halving LR, mining, checkpoints."""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras

from netvlad_tf.data.geo_dataset import GeoDataset
from netvlad_tf.io.atomic_writes import save_model_atomically, write_bytes_atomically
from netvlad_tf.io.progress import fit_verbosity
from netvlad_tf.models.keras_compat import in_multi_worker_mode
from netvlad_tf.models.losses import DEFAULT_MARGIN, RankingLoss
from netvlad_tf.models.model import PlaceRecognitionModel
from netvlad_tf.training.callbacks import CacheRefresh, EpochHistory, RecallEvaluation
from netvlad_tf.training.frozen_features import FrozenFeatureStore, PoolFeatureStore
from netvlad_tf.training.mining import FULL_MINING_LIMIT, HardNegativeMiner
from netvlad_tf.training.multi_worker import chief_weights
from netvlad_tf.training.overlap import ValidationOverlapWarning, validation_overlap
from netvlad_tf.training.tuple_sources import ImageSource
from netvlad_tf.training.tuples import tuple_dataset, tuple_steps_per_epoch

BEST_MODEL_FILE = "best.keras"
LAST_MODEL_FILE = "last.keras"
FROZEN_FEATURES_DIR = "frozen_features"
POOL_FEATURES_DIR = "pool_features"
EPOCH_LOGS_FILE = "epoch_logs.json"
BACKUP_DIR = "backup"
HISTORY_FILE = "history.json"
# Under a multi-worker strategy each worker but the chief writes its files here, in a folder of
# its own (removed when the run finishes): the run folder holds the chief's only.
WORKERS_DIR = "workers"


@dataclass(frozen=True)
class TrainingRun:
    """Where a run wrote its files, and the logs of every epoch it finished (resumed ones too).

    Attributes:
        run_dir: the run folder.
        history: `{metric: [value per epoch]}` plus `dropped_queries_without_positive`.
        chief: whether this process wrote the run folder's files (False on the other workers
            of a multi-worker strategy).
    """

    run_dir: Path
    history: dict
    chief: bool = True


def new_run_dir(output_root, run_name: str = "netvlad") -> Path:
    """Creates and returns a new folder `output_root/<run_name>-<UTC time>[-n]`; never reuses one."""
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = output_root / (f"{run_name}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not create a new run folder under {output_root}.")


def train(
    model: PlaceRecognitionModel,
    train_dataset: GeoDataset,
    image_size: tuple[int, int],
    run_dir,
    *,
    val_dataset: GeoDataset | None = None,
    epochs: int = 30,
    steps_per_epoch: int | None = None,
    learning_rate: float = 1e-3,
    lr_halving_epochs: int = 5,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    batch_size: int = 4,
    num_negatives: int = 10,
    num_sampled_negatives: int = 1000,
    refresh_every: int = 1000,
    mining_pool: int | None = None,
    margin: float = DEFAULT_MARGIN,
    normalization: str = "violating",
    cache_encoding: str = "sq8",
    frozen_features: bool = True,
    frozen_feature_dtype: str = "float16",
    frozen_feature_budget_gb: float | None = None,
    seed: int = 0,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 1,
    strategy=None,
) -> TrainingRun:
    """Trains `model` (clusters already initialised) with the paper's recipe.

    An epoch is one batch per `batch_size` training queries unless `steps_per_epoch` is set.
    Defaults are the paper's: SGD with momentum 0.9, weight decay 1e-3, learning rate 1e-3
    halved every 5 epochs, 30 epochs, 4 tuples per batch, 10 hard negatives from 1000
    sampled ones, the cache refreshed every 1000 queries, margin 0.1. `run_dir` receives
    `best.keras` (by validation Recall@5, with `val_dataset`), `last.keras`, `history.json`,
    TensorBoard logs under `logs/` and a `backup/` that lets a killed run resume: call
    `train` again with the same `run_dir` and it continues from its last finished epoch.

    With `frozen_features` (the default) the output of the backbone's frozen layers (VGG16:
    conv1–conv4) is computed once for every training image and stored in
    `run_dir/frozen_features/` (`frozen_feature_dtype`); training steps and cache
    refreshes then run only the trainable layers. A resumed run reuses the stored features;
    a finished run deletes them. With a `mining_pool` only each refresh's images are stored
    (`run_dir/pool_features/`, see `PoolFeatureStore`): every refresh runs the frozen layers
    over its images once, the steps until the next refresh only the trainable ones. It is
    skipped when the backbone trains from its first layer.

    Keras' `SGD(weight_decay=...)` decays weights directly (decoupled), where the authors
    add `weight_decay·w` to the gradient; with momentum the two differ slightly.

    Args:
        model: the model to train, NetVLAD initialised (`initialize_clusters`).
        train_dataset: training database and queries with coordinates.
        image_size: `(H, W)` every training image is resized to (tuples are batched).
        run_dir: the run folder (created; an existing one resumes its run).
        val_dataset: validation data for `val_recall@N` each epoch and `best.keras`; a
            `ValidationOverlapWarning` names how many of its queries overlap the training data.
        epochs, steps_per_epoch: length of training (default: one pass over the queries).
        learning_rate, lr_halving_epochs, momentum, weight_decay: SGD (Sec. 4 of the paper).
        batch_size: tuples per step.
        num_negatives, num_sampled_negatives: hard negatives per tuple, chosen among this many
            random definite negatives.
        refresh_every: training queries between descriptor-cache refreshes.
        mining_pool: embed only this many random database images at each refresh (plus the
            upcoming queries' potential positives and remembered negatives) and sample
            negatives among them; None: every database image, the paper's full mining
            (suggested in the log above 50 000 database images).
        margin, normalization: of the ranking loss (Eq. 7; see `RankingLoss`).
        cache_encoding: how the mining cache stores descriptors: `"sq8"` (faiss' 8-bit scalar
            quantiser, ¼ of float32) or `"float32"`.
        frozen_features, frozen_feature_dtype: store the frozen layers' output once.
        frozen_feature_budget_gb: the most disk that store may take (None: half the free
            space); its size is estimated first (with a pool: at each refresh) and a larger
            store refused.
        seed: tuple order and negative sampling.
        extra_callbacks: more Keras callbacks.
        verbose: Keras' verbosity (1: a bar on a terminal, a line per epoch in a log).
        strategy: a `tf.distribute` strategy: `tf.distribute.MirroredStrategy()` over the
            local GPUs or logical CPUs, or `multi_worker_strategy()` (from `TF_CONFIG`) in
            each of several processes or machines, every one calling `train` with the same
            arguments. The model is rebuilt and compiled inside its scope, trained there, and
            its weights are copied back into `model`. Each batch of `batch_size` tuples is
            split over the replicas; every worker mines the same tuples (same seed, same
            weights) and trains on its share. Only the chief writes `run_dir`'s files; the
            other workers keep their backup, frozen features and logs under
            `run_dir/workers/<task>/` while the run is resumable. None: the default device.

    Returns:
        A `TrainingRun`: the run folder and every finished epoch's logs.

    Reference: arXiv 1511.07247, Sec. 4 (weakly supervised training).

    Example (a few seconds on random weights)::

        run = train(model, read_csv_dataset(nordland_csv("train")), (64, 128), "runs/demo",
                    epochs=1, num_sampled_negatives=50, refresh_every=100)
    """
    run_dir = Path(run_dir)
    chief = strategy is None or strategy.extended.should_checkpoint
    files_dir = run_dir if chief else _worker_dir(run_dir, strategy)
    files_dir.mkdir(parents=True, exist_ok=True)
    if val_dataset is not None:
        overlap = validation_overlap(train_dataset, val_dataset).message(val_dataset.num_queries)
        if overlap:
            warnings.warn(overlap, ValidationOverlapWarning, stacklevel=2)
    miner = HardNegativeMiner(
        train_dataset,
        num_negatives=num_negatives,
        num_sampled_negatives=num_sampled_negatives,
        margin=margin,
        cache_encoding=cache_encoding,
        seed=seed,
        mining_pool=mining_pool,
    )
    if verbose and mining_pool is None and train_dataset.num_database > FULL_MINING_LIMIT:
        print(f"Every refresh embeds all {train_dataset.num_database} database images; a mining pool "
              "(--mining_pool=N, mining_pool=N) bounds its time and memory by N instead.", flush=True)
    caller_model, model = model, _built_in_scope(model, strategy)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay),
            loss=RankingLoss(margin=margin, normalization=normalization),
        )
    store = None  # a feature store, deleted when the run finishes
    if frozen_features and model.frozen_split() is not None and miner.mining_pool is not None:
        if verbose:
            print(f"Frozen layers (up to {model.frozen_split().cut_layer}): their output is stored for "
                  "each refresh's images", flush=True)
        store = PoolFeatureStore(model, train_dataset, image_size, files_dir / POOL_FEATURES_DIR,
                                 frozen_feature_dtype, budget_gb=frozen_feature_budget_gb)
    elif frozen_features and model.frozen_split() is not None:
        if verbose:
            print(f"Frozen layers (up to {model.frozen_split().cut_layer}): their output is stored "
                  "once per training image", flush=True)
        store = FrozenFeatureStore.build(model, train_dataset, image_size, files_dir / FROZEN_FEATURES_DIR,
                                         frozen_feature_dtype, verbose=bool(verbose),
                                         budget_gb=frozen_feature_budget_gb)
    source = store or ImageSource(train_dataset, image_size)
    cache_refresh = CacheRefresh(miner, source, refresh_every, verbose=bool(verbose))
    # Filled before `fit`: under a tf.distribute strategy Keras mines the first batch before the
    # callbacks start.
    cache_refresh.set_model(model)
    cache_refresh.refresh()
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.BackupAndRestore(str(files_dir / BACKUP_DIR)),
        keras.callbacks.LearningRateScheduler(
            lambda epoch, _: learning_rate * 0.5 ** (epoch // lr_halving_epochs)
        ),
        cache_refresh,
    ]
    if val_dataset is not None:
        callbacks += [
            RecallEvaluation(val_dataset, image_size, verbose=bool(verbose)),
            keras.callbacks.ModelCheckpoint(
                str(files_dir / BEST_MODEL_FILE), monitor="val_recall@5", mode="max", save_best_only=True
            ),
        ]
    epoch_history = EpochHistory(files_dir / EPOCH_LOGS_FILE)
    callbacks += [keras.callbacks.TensorBoard(str(files_dir / "logs")), epoch_history]
    callbacks += extra_callbacks or []
    model.fit(
        tuple_dataset(miner, source, batch_size, placeholder_first_iterator=strategy is not None),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch or tuple_steps_per_epoch(miner, batch_size),
        shuffle=False,  # the tuple stream shuffles the queries itself
        callbacks=callbacks,
        verbose=fit_verbosity(verbose),
    )
    if model is not caller_model:
        caller_model.set_weights(model.get_weights())
    save_model_atomically(model, files_dir / LAST_MODEL_FILE, overwrite=True)
    if store is not None:  # kept only while the run may be resumed
        shutil.rmtree(store.directory)
    summary = epoch_history.history()
    summary["dropped_queries_without_positive"] = miner.num_dropped
    write_bytes_atomically(files_dir / HISTORY_FILE, json.dumps(summary, indent=2).encode(), overwrite=True)
    if not chief:
        shutil.rmtree(files_dir)
        with contextlib.suppress(OSError):  # another worker's folder may still be there
            files_dir.parent.rmdir()
    return TrainingRun(run_dir=run_dir, history=summary, chief=chief)


def _worker_dir(run_dir: Path, strategy) -> Path:
    """The folder of a worker that is not the chief: `run_dir/workers/<task type>-<index>`."""
    resolver = strategy.cluster_resolver
    return run_dir / WORKERS_DIR / f"{resolver.task_type}-{resolver.task_id}"


def _built_in_scope(model: PlaceRecognitionModel, strategy) -> PlaceRecognitionModel:
    """`model` itself without a strategy; with one, the same model rebuilt from its config
    inside the strategy's scope (its variables mirrored) with the same weights (across
    several workers: the chief's)."""
    if strategy is None:
        return model
    with strategy.scope():
        replica = PlaceRecognitionModel.from_config(model.get_config())
    weights = model.get_weights()
    replica.set_weights(chief_weights(weights, strategy) if in_multi_worker_mode(strategy) else weights)
    return replica

