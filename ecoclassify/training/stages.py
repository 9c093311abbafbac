"""The stage loop: freeze, recompile and fit once per ``training.stages`` entry.

Follows the keras-io transfer-learning recipe: the freezing policy is applied and the model
recompiled at every stage change (Keras reads trainable flags at compile time), epochs are
numbered across stages, and one best-model checkpoint watches the whole run. Head-only
stages train on cached backbone features when that gives the same result (see
:mod:`ecoclassify.training.feature_cache`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ecoclassify.training.callbacks import (
    BestModelCheckpoint, EpochBackup, best_in_history, monitor_mode, save_weights_atomically,
)
from ecoclassify.config import Config, StageConfig
from ecoclassify.data.pipeline import make_dataset
from ecoclassify.errors import RunError
from ecoclassify.training.feature_cache import compute_features, feature_dataset, split_model, stage_uses_cache
from ecoclassify.models.build import build_model
from ecoclassify.models.freezing import apply_trainable
from ecoclassify.files import BACKUP_DIR, HISTORY_FILE, MODEL_FILE, STATE_FILE, write_json

log = logging.getLogger("ecoclassify.training.session")


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's retracing warning: every stage recompiles, so new traces are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def class_weights(config: Config, labels: np.ndarray, classes: list[str]) -> Optional[np.ndarray]:
    """Per-class loss weights from ``training.class_weight`` (``None`` for no weighting)."""
    setting = config.training.class_weight
    if setting == "none":
        return None
    if setting == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = np.ones(len(classes))
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return weights
    return np.array([float(setting.get(name, 1.0)) for name in classes])


class _Data:
    """The splits as image datasets, plus cached features once a head-only stage needs them."""

    def __init__(self, config: Config, samples: pd.DataFrame, classes: list[str], verbose: Union[int, str] = 0) -> None:
        index = {name: i for i, name in enumerate(classes)}
        self.frames = {name: samples[samples["split"] == name] for name in ("train", "val", "test")}
        self.labels = {name: frame["label"].map(index).to_numpy() for name, frame in self.frames.items()}
        self.num_classes = len(classes)
        weights = class_weights(config, self.labels["train"], classes)
        self.sample_weights = None if weights is None else weights[self.labels["train"]]
        self.config = config
        self.verbose = verbose  # Keras's, for the progress of the feature pass
        self._features: Optional[dict[str, np.ndarray]] = None

    def images(self, split: str, shuffle: bool = False) -> Optional[tf.data.Dataset]:
        frame = self.frames[split]
        if frame.empty:
            return None
        training = self.config.training
        return make_dataset(frame["filepath"], tuple(self.config.data.image_size), training.batch_size,
                            labels=self.labels[split], num_classes=self.num_classes,
                            sample_weights=self.sample_weights if split == "train" else None,
                            shuffle=shuffle, seed=self.config.experiment.seed,
                            max_pixels=self.config.data.max_image_pixels,
                            boxes=frame.get("box"), crops=self.config.data.crops)

    def features(self, extractor: keras.Model, split: str, shuffle: bool = False) -> Optional[tf.data.Dataset]:
        if self._features is None:
            log.info("computing backbone features once for the frozen stage(s) (training.cache_features): "
                     "%d train and %d validation images", len(self.frames["train"]), len(self.frames["val"]))
            self._features = {name: compute_features(extractor, dataset, self.verbose)
                              for name in ("train", "val") if (dataset := self.images(name)) is not None}
        if split not in self._features:
            return None
        onehot = np.eye(self.num_classes, dtype="float32")[self.labels[split]]
        return feature_dataset(self._features[split], onehot, self.config.training.batch_size,
                               sample_weights=self.sample_weights if split == "train" else None,
                               shuffle=shuffle, seed=self.config.experiment.seed)


def fit_stages(config: Config, run_dir: Path, samples: pd.DataFrame, classes: list[str], state: dict,
               extra_callbacks: list[Any], verbose: Union[int, str]
               ) -> tuple[keras.Model, dict, int, Optional[float], bool]:
    """Run every stage not yet completed according to ``state``.

    Returns:
        ``(model, frames per split, epochs done, best monitored value, holds best)``; ``holds
        best`` is true when the model was given the weights of ``model.keras`` in memory (the
        best epoch was in this session), so the caller need not load the file back.
    """
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _ExpectedRetracing) for f in tf_logger.filters):
        tf_logger.addFilter(_ExpectedRetracing())
    keras.utils.set_random_seed(config.experiment.seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config)
    with strategy.scope(), _precision(config):
        return _fit_in_scope(config, run_dir, samples, classes, state, extra_callbacks, verbose)


def make_strategy(config: Config) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``training.distribution``.

    ``mirrored`` replicates the model on every local GPU (or on ``training.devices``);
    ``multi_worker`` spans machines described by the ``TF_CONFIG`` environment variable
    (see README, "Training on several GPUs or a SLURM cluster"). ``training.batch_size`` is
    the global batch, split across replicas.
    """
    training = config.training
    if training.distribution == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=training.devices)
    elif training.distribution == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        return tf.distribute.get_strategy()
    log.info("distribution %s: training on %d replica(s) %s", training.distribution,
             strategy.num_replicas_in_sync, list(getattr(strategy.extended, "worker_devices", [])))
    return strategy


@contextlib.contextmanager
def _precision(config: Config) -> Iterator[None]:
    """Mixed float16 compute for the duration of training (the output layer stays float32)."""
    if not config.training.mixed_precision:
        yield
        return
    if not tf.config.list_physical_devices("GPU"):
        log.warning("training.mixed_precision is on without a GPU: float16 is emulated and much slower on CPUs")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _fit_in_scope(config: Config, run_dir: Path, samples: pd.DataFrame, classes: list[str], state: dict,
                  extra_callbacks: list[Any], verbose: Union[int, str]
                  ) -> tuple[keras.Model, dict, int, Optional[float], bool]:
    data = _Data(config, samples, classes, verbose)
    log.info("building the model: %s backbone, weights %s", config.model.backbone, config.model.weights)
    model = build_model(config, len(classes))
    monitor = config.training.monitor
    best_value, best_loss = best_in_history(run_dir / HISTORY_FILE, monitor)
    checkpoint = BestModelCheckpoint(run_dir / MODEL_FILE, monitor, initial_best=best_value, target=model,
                                     initial_loss=best_loss)
    csv_logger = keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True)
    stages = config.training.stages or []
    epoch = int(state["next_epoch"])
    if state["completed_stages"]:
        _load_stage_end(model, run_dir / BACKUP_DIR / f"stage-{state['completed_stages']}-end.weights.h5")
    for number, stage in enumerate(stages, start=1):
        if number <= state["completed_stages"]:
            continue
        summary = apply_trainable(model, stage.trainable, f"training.stages[{number - 1}].trainable")
        cached = stage_uses_cache(config, stage, model)
        if cached:
            extractor, fit_model = split_model(model)
            train_ds, val_ds = data.features(extractor, "train", shuffle=True), data.features(extractor, "val")
        else:
            fit_model, train_ds, val_ds = model, data.images("train", shuffle=True), data.images("val")
        steps = max(1, -(-len(data.frames["train"]) // config.training.batch_size))
        _compile(fit_model, config, stage, steps)
        label = stage.name or f"stage {number}"
        log.info("stage %d/%d (%s): %d epoch(s) at learning rate %g%s; %s", number, len(stages), label,
                 stage.epochs, stage.learning_rate, " on cached features" if cached else "", summary.describe())
        backup = EpochBackup(run_dir / BACKUP_DIR / f"stage-{number}")
        resume_at = backup.restore(fit_model, epoch, run_dir / HISTORY_FILE)
        callbacks = _stage_callbacks(config, stage, [csv_logger, checkpoint, backup])
        history = fit_model.fit(train_ds, validation_data=val_ds, initial_epoch=resume_at,
                                epochs=epoch + stage.epochs, callbacks=callbacks + list(extra_callbacks),
                                verbose=verbose, shuffle=False)
        epoch = (history.epoch[-1] + 1) if history.epoch else epoch + stage.epochs
        save_weights_atomically(model, run_dir / BACKUP_DIR / f"stage-{number}-end.weights.h5")
        write_json(run_dir / STATE_FILE, {"completed_stages": number, "next_epoch": epoch, "finished": False})
        shutil.rmtree(backup.backup_dir, ignore_errors=True)  # the stage is done; its epoch backups are not needed
        log.info("stage %d/%d (%s) done after epoch %d; best %s so far: %s", number, len(stages), label,
                 epoch, monitor, f"{checkpoint.best:.4f}" if checkpoint.best is not None else "n/a")
    if checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)
        log.info("keeping the best model (epoch %d, %s %.4f)", checkpoint.best_epoch + 1, monitor, checkpoint.best)
    return model, data.frames, epoch, checkpoint.best, checkpoint.best_weights is not None


def _compile(model: keras.Model, config: Config, stage: StageConfig, steps_per_epoch: int) -> None:
    model.compile(
        optimizer=_optimizer(stage, steps_per_epoch),
        jit_compile=config.training.jit_compile,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.training.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.F1Score(average="macro", name="macro_f1")],
    )


def _load_stage_end(model: keras.Model, path: Path) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise OSError, ValueError, KeyError... for a damaged file
        raise RunError(
            f"the weights saved at the end of a finished stage, {path}, cannot be read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}), so this run cannot be "
            "resumed. Start a new run with the same config") from None


def _stage_callbacks(config: Config, stage: StageConfig, shared: list[Any]) -> list[Any]:
    monitor = config.training.monitor
    callbacks = list(shared)
    stopping = config.training.early_stopping
    if stopping.enabled:
        callbacks.insert(0, keras.callbacks.EarlyStopping(
            monitor=monitor, mode=monitor_mode(monitor), patience=stopping.patience,
            min_delta=stopping.min_delta, restore_best_weights=True))
    if stage.schedule == "reduce_on_plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=monitor_mode(monitor),
                                                           factor=0.2, patience=2))
    return callbacks


def _optimizer(stage: StageConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: Any = stage.learning_rate
    if stage.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(stage.learning_rate, decay_steps=stage.epochs * steps_per_epoch)
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if stage.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=stage.weight_decay if stage.weight_decay is not None else 1e-4)
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=stage.momentum, weight_decay=stage.weight_decay)
    return keras.optimizers.RMSprop(rate, weight_decay=stage.weight_decay)
