"""``ecoclassify train``: transfer learning and fine-tuning in stages, the keras-io way.

Flow: config -> prepared data (scan, split) -> run folder -> tf.data pipelines -> model
(backbone + head + in-model preprocessing) -> one compile + fit per stage (freezing policy
applied and the model recompiled at every stage change, epochs numbered across stages) ->
best model evaluated on the test split -> ``metrics.json``.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ecoclassify.config import Config, StageConfig, load_config
from ecoclassify.data.prepare import prepare_data
from ecoclassify.errors import ConfigError, RunError
from ecoclassify.metrics import headline_metrics
from ecoclassify.run import (
    BACKUP_DIR, CONFIG_FILE, EXCLUDED_FILE, HISTORY_FILE, LABELS_FILE, METRICS_FILE, MODEL_FILE, SPLITS_FILE,
    STATE_FILE, Run, new_run_dir, provenance, read_json, write_csv, write_json, write_text,
)

log = logging.getLogger(__name__)


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's retracing warning: every stage recompiles, so new traces are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


class TrainingInterrupted(RunError):
    """Training stopped by Ctrl-C; the run folder can be resumed."""

    exit_code = 130


def train(
    config: Union[Config, str, Path, None] = None,
    *,
    resume: Optional[Path] = None,
    callbacks: Sequence[Any] = (),
    verbose: Union[int, str, None] = None,
) -> Run:
    """Train the model described by ``config`` and write a new run folder.

    Args:
        config: A :class:`Config` or the path of a YAML config. With ``resume`` it may be
            omitted (the run's own ``config.yaml`` is used) or must equal the run's config.
        resume: An interrupted run folder to continue from its last finished epoch.
        callbacks: Extra Keras callbacks added to every stage's ``fit``.
        verbose: Keras ``fit`` verbosity; by default a progress bar on a terminal and one line
            per epoch otherwise (log files, SLURM jobs).

    Returns:
        The finished :class:`Run` (folder, classes, test metrics, history).

    Raises:
        ConfigError: The config is invalid or asks for a metric that will not be logged.
        DataError: The data cannot be used (see ``ecoclassify validate``).
        RunError: ``resume`` names no resumable run or the config changed since.
        TrainingInterrupted: Ctrl-C; the message says how to resume.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if resume is not None:
        run_dir, config, samples, classes, state = _open_for_resume(Path(resume), config)
    else:
        if config is None:
            raise ConfigError("train needs a config (or resume=RUN_DIR)")
        run_dir, samples, classes = _start_run(config)
        state = {"completed_stages": 0, "next_epoch": 0, "finished": False}
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        return _fit_stages(config, run_dir, samples, classes, state, list(callbacks), verbose)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training interrupted; the run folder {run_dir} keeps the last finished epoch. "
            f"Continue with: ecoclassify train --resume {run_dir}"
        ) from None


def _start_run(config: Config) -> tuple[Path, pd.DataFrame, list[str]]:
    prepared = prepare_data(config)
    for warning in prepared.warnings:
        log.warning(warning)
    prepared.raise_if_unusable()
    run_dir = new_run_dir(config.experiment.output_dir, config.experiment.name)
    resolved = config.model_copy(update={"provenance": provenance()})
    write_text(run_dir / CONFIG_FILE, resolved.to_yaml())
    write_json(run_dir / LABELS_FILE, {"classes": prepared.classes, "image_size": list(config.data.image_size)})
    write_csv(run_dir / SPLITS_FILE, prepared.samples[["filepath", "label", "group", "split"]])
    write_csv(run_dir / EXCLUDED_FILE, prepared.excluded)
    write_json(run_dir / STATE_FILE, {"completed_stages": 0, "next_epoch": 0, "finished": False})
    log.info("run folder: %s", run_dir)
    return run_dir, prepared.samples, prepared.classes


def _open_for_resume(run_dir: Path, config: Optional[Config]) -> tuple[Path, Config, pd.DataFrame, list[str], dict]:
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / STATE_FILE).is_file():
        raise RunError(f"{run_dir} is not a resumable run folder (it needs {CONFIG_FILE} and {STATE_FILE})")
    saved = load_config(run_dir / CONFIG_FILE)
    if config is not None and config.comparable() != saved.comparable():
        changed = _differences(saved.comparable(), config.comparable())
        raise RunError(f"the config changed since {run_dir} started, so it cannot be resumed: "
                       f"{'; '.join(changed[:8])}. Start a new run instead.")
    state = read_json(run_dir / STATE_FILE)
    if state.get("finished"):
        raise RunError(f"{run_dir} already finished training; nothing to resume")
    samples = pd.read_csv(run_dir / SPLITS_FILE, dtype=str, keep_default_na=False)
    classes = read_json(run_dir / LABELS_FILE)["classes"]
    log.info("resuming %s after stage %d, epoch %d", run_dir, state["completed_stages"], state["next_epoch"])
    return run_dir, saved, samples, classes, state


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            found += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


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


def _fit_stages(config: Config, run_dir: Path, samples: pd.DataFrame, classes: list[str], state: dict,
                extra_callbacks: list[Any], verbose: Union[int, str]) -> Run:
    import keras
    import tensorflow as tf

    from ecoclassify.callbacks import BestModelCheckpoint, best_in_history, monitor_mode
    from ecoclassify.data.pipeline import make_dataset
    from ecoclassify.models.build import build_model
    from ecoclassify.models.freezing import apply_trainable

    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _ExpectedRetracing) for f in tf_logger.filters):
        tf_logger.addFilter(_ExpectedRetracing())
    seed = config.experiment.seed
    keras.utils.set_random_seed(seed)
    if config.training.deterministic:
        tf.config.experimental.enable_op_determinism()
    index = {name: i for i, name in enumerate(classes)}
    frames = {name: samples[samples["split"] == name] for name in ("train", "val", "test")}
    y_train = frames["train"]["label"].map(index).to_numpy()
    weights = class_weights(config, y_train, classes)
    batch, size = config.training.batch_size, tuple(config.data.image_size)
    train_ds = make_dataset(frames["train"]["filepath"], size, batch, labels=y_train, num_classes=len(classes),
                            sample_weights=None if weights is None else weights[y_train], shuffle=True, seed=seed,
                            max_pixels=config.data.max_image_pixels)
    val_ds = None
    if len(frames["val"]):
        val_ds = make_dataset(frames["val"]["filepath"], size, batch, labels=frames["val"]["label"].map(index),
                              num_classes=len(classes), max_pixels=config.data.max_image_pixels)
    model = build_model(config, len(classes))
    monitor = config.training.monitor
    best_value, _ = best_in_history(run_dir / HISTORY_FILE, monitor)
    checkpoint = BestModelCheckpoint(run_dir / MODEL_FILE, monitor, initial_best=best_value)
    csv_logger = keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True)
    steps = max(1, -(-len(frames["train"]) // batch))
    stages = config.training.stages or []
    epoch = int(state["next_epoch"])
    if state["completed_stages"]:
        model.load_weights(run_dir / BACKUP_DIR / f"stage-{state['completed_stages']}-end.weights.h5")
    for number, stage in enumerate(stages, start=1):
        if number <= state["completed_stages"]:
            continue
        key = f"training.stages[{number - 1}].trainable"
        summary = apply_trainable(model, stage.trainable, key)
        model.compile(
            optimizer=_optimizer(stage, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.training.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                     keras.metrics.F1Score(average="macro", name="macro_f1")],
        )
        label = stage.name or f"stage {number}"
        log.info("stage %d/%d (%s): %d epoch(s) at learning rate %g; %s", number, len(stages), label,
                 stage.epochs, stage.learning_rate, summary.describe())
        stage_callbacks = [csv_logger, checkpoint,
                           keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR / f"stage-{number}"))]
        if config.training.early_stopping.enabled:
            stage_callbacks.insert(0, keras.callbacks.EarlyStopping(
                monitor=monitor, mode=monitor_mode(monitor), patience=config.training.early_stopping.patience,
                min_delta=config.training.early_stopping.min_delta, restore_best_weights=True))
        if stage.schedule == "reduce_on_plateau":
            stage_callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, mode=monitor_mode(monitor), factor=0.2, patience=2))
        history = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + stage.epochs,
                            callbacks=stage_callbacks + list(extra_callbacks), verbose=verbose, shuffle=False)
        epoch = (history.epoch[-1] + 1) if history.epoch else epoch + stage.epochs
        model.save_weights(run_dir / BACKUP_DIR / f"stage-{number}-end.weights.h5")
        write_json(run_dir / STATE_FILE, {"completed_stages": number, "next_epoch": epoch, "finished": False})
        log.info("stage %d/%d (%s) done after epoch %d; best %s so far: %s", number, len(stages), label,
                 epoch, monitor, f"{checkpoint.best:.4f}" if checkpoint.best is not None else "n/a")
    return _finish(config, run_dir, model, frames, classes, epoch, checkpoint.best)


def _optimizer(stage: StageConfig, steps_per_epoch: int) -> Any:
    import keras

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


def _finish(config: Config, run_dir: Path, model: Any, frames: dict[str, pd.DataFrame], classes: list[str],
            epochs: int, best: Optional[float]) -> Run:
    import keras

    from ecoclassify.data.pipeline import make_dataset

    if (run_dir / MODEL_FILE).exists():
        model = keras.saving.load_model(run_dir / MODEL_FILE, safe_mode=True)
    else:  # the monitor never produced a value (e.g. NaN losses): keep the last weights
        model.save(run_dir / MODEL_FILE)
    metrics: dict[str, Any] = {
        "classes": classes,
        "epochs": epochs,
        "monitor": config.training.monitor,
        "best_monitor_value": best,
        "split_counts": {name: int(len(frame)) for name, frame in frames.items()},
    }
    test = frames["test"]
    if len(test):
        dataset = make_dataset(test["filepath"], tuple(config.data.image_size), config.training.batch_size,
                               max_pixels=config.data.max_image_pixels)
        proba = model.predict(dataset, verbose=0)
        y_true = test["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
        metrics["test"] = headline_metrics(y_true, proba, classes)
    else:
        metrics["test"] = None
    write_json(run_dir / METRICS_FILE, metrics)
    write_json(run_dir / STATE_FILE, {"completed_stages": len(config.training.stages or []),
                                      "next_epoch": epochs, "finished": True})
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)  # only needed to resume; can be large
    history = pd.read_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).exists() else pd.DataFrame()
    if metrics["test"]:
        t = metrics["test"]
        log.info("test set (%d images): accuracy %.3f, macro-F1 %.3f, mAP %s", t["n_images"], t["accuracy"],
                 t["macro_f1"], f"{t['mAP']:.3f}" if t["mAP"] is not None else "n/a")
    return Run(run_dir, classes, metrics, history)
