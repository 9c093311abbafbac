"""Keras callbacks that Keras itself does not offer in the form a run folder needs."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np
import pandas as pd

from ecoclassify.errors import RunError
from ecoclassify.files import atomic_write
from ecoclassify.run import ensure_free_space

log = logging.getLogger("ecoclassify.training")


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for scores."""
    return "min" if monitor.endswith("loss") else "max"


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model when ``monitor`` improves, atomically, across stages and resumes.

    Unlike ``keras.callbacks.ModelCheckpoint`` it writes to a temporary file and renames it
    (a crash mid-save never corrupts the best model), keeps its best value across several
    ``fit`` calls (one per stage), can start from the best value in an earlier history
    (``--resume``), and breaks ties by the loss: macro-F1 on a small validation set often
    repeats exactly, and the later, more confident epoch with the lower loss is the better model.

    Args:
        path: Where the best model goes (``model.keras``).
        monitor: Logged metric to watch, e.g. ``val_macro_f1``.
        initial_best: Best value already reached (from ``history.csv`` when resuming).
        initial_loss: The tie-breaking loss at that best value.
        target: The model to save when it is not the one being fitted (a head trained on
            cached features shares its layers with the full model, which is what is saved).
    """

    def __init__(self, path: Path, monitor: str, initial_best: Optional[float] = None,
                 target: Optional[keras.Model] = None, initial_loss: Optional[float] = None) -> None:
        super().__init__()
        self.target = target
        self.path = Path(path)
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.best = initial_best
        self.best_loss = initial_loss
        self.best_epoch: Optional[int] = None
        # A copy of the saved weights, so the run can report on its best model without loading
        # model.keras back from disk (seconds for a large backbone). None until an improvement.
        self.best_weights: Optional[list[Any]] = None
        self.loss_key = tie_breaker(monitor)

    def _improved(self, value: float, loss: Optional[float]) -> bool:
        if self.best is None:
            return True
        if value == self.best and loss is not None:
            return self.best_loss is None or loss < self.best_loss
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None or math.isnan(float(value)):
            return
        loss = logs.get(self.loss_key)
        loss = None if loss is None or math.isnan(float(loss)) else float(loss)
        if self._improved(float(value), loss):
            model = self.target or self.model
            size = self.path.stat().st_size if self.path.exists() else variables_size(model)
            ensure_free_space(self.path.parent, 2 * size, f"the best model ({self.path.name})")
            self.best, self.best_loss, self.best_epoch = float(value), loss, epoch
            atomic_write(self.path, lambda tmp: save_with_suffix(tmp, ".keras", model.save))
            self.best_weights = model.get_weights()


def save_with_suffix(tmp: Path, suffix: str, save: Any) -> None:
    """Call ``save(path)`` on a name ending in ``suffix`` (Keras picks the format from it), then
    move the file to ``tmp``; a failed save leaves no file behind."""
    named = tmp.with_name(tmp.name + suffix)
    try:
        save(named)
        named.replace(tmp)
    except BaseException:
        named.unlink(missing_ok=True)
        raise


def variables_size(model: keras.Model) -> int:
    """Bytes taken by the model's variables and its optimizer's: an estimate of a saved file's size."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_weights_atomically(model: keras.Model, path: Path) -> Path:
    """``model.save_weights(path)`` through a temporary file, after checking the free space."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(path.parent, 2 * variables_size(model), f"the weights {path.name}")
    return atomic_write(path, lambda tmp: save_with_suffix(tmp, ".weights.h5", model.save_weights))


class EpochBackup(keras.callbacks.Callback):
    """Back up the training state after every epoch so that a stage can continue after a crash.

    Replaces ``keras.callbacks.BackupAndRestore``, which overwrites one weights file in place
    and writes the epoch number to a second file: a ``kill -9`` or a full disk during that write
    left a damaged backup and a run that could not be resumed. Here each backup is one file,
    ``epoch-NNNNN.weights.h5`` (weights and optimizer state; the name is the number of epochs
    done), written to a temporary name and renamed after checking the free disk space; the
    previous backup is kept until the next one is complete. Call :meth:`restore` before
    ``fit`` and pass what it returns as ``initial_epoch``. Put this callback after the
    ``CSVLogger``, so an epoch is logged before its backup exists.

    Args:
        backup_dir: The folder of this ``fit`` call's backups (one per stage).
        keep: How many backups to keep.
    """

    _NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")
    _LEGACY = ("latest.weights.h5", "training_metadata.json")  # BackupAndRestore's files

    def __init__(self, backup_dir: Path, keep: int = 2) -> None:
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.keep = keep

    def backups(self) -> list[tuple[int, Path]]:
        """``(epochs done, file)`` of every backup, newest first (``BackupAndRestore``'s included)."""
        found = []
        for path in self.backup_dir.glob("*.weights.h5"):
            match = self._NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        legacy, metadata = (self.backup_dir / name for name in self._LEGACY)
        if legacy.is_file() and metadata.is_file():  # a run interrupted before this callback existed
            try:
                found.append((int(json.loads(metadata.read_text())["epoch"]), legacy))
            except (ValueError, KeyError, TypeError, OSError):
                pass
        return sorted(found, key=lambda item: item[0], reverse=True)

    def restore(self, model: keras.Model, start_epoch: int, history_csv: Optional[Path] = None) -> int:
        """Load the newest backup that can be read into ``model`` (compiled, not yet fitted).

        A damaged backup (a crash while it was written by an older version, a disk error) is
        reported and the one before it is used. Rows of ``history_csv`` from the epochs that
        will run again are dropped, so each epoch is logged once.

        Args:
            model: The model about to be fitted.
            start_epoch: The stage's first epoch, returned when there is no backup.
            history_csv: The run's ``history.csv``; call this before the ``CSVLogger`` opens it.

        Returns:
            The epoch to continue from (``initial_epoch`` for ``fit``).

        Raises:
            RunError: There are backups and none of them can be read.
        """
        found = self.backups()
        epoch = start_epoch
        if found:
            epoch = self._load_newest_readable(model, found)
        if history_csv is not None:
            _trim_history(Path(history_csv), epoch)
        return epoch

    def _load_newest_readable(self, model: keras.Model, found: list[tuple[int, Path]]) -> int:
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its state is in the backup too
        failures: list[str] = []
        for epoch, path in found:
            try:
                model.load_weights(path)
            except Exception as exc:  # h5py and Keras raise OSError, ValueError, KeyError... for a damaged file
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                failures.append(f"{path.name} ({type(exc).__name__}: {first_line})")
                log.warning("the backup %s is damaged and is skipped: %s", path, failures[-1])
                continue
            if failures:
                log.warning("continuing from the previous backup instead, %s (%d epoch(s) done)", path.name, epoch)
            return epoch
        raise RunError(
            f"every training backup in {self.backup_dir} is damaged, so training cannot continue from it: "
            f"{'; '.join(failures)}. Delete the folder {self.backup_dir} and resume again to repeat this "
            "stage from its first epoch, or start a new run")

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        save_weights_atomically(self.model, self.backup_dir / f"epoch-{epoch + 1:05d}.weights.h5")
        for _, old in self.backups()[self.keep:]:
            old.unlink(missing_ok=True)
        for name in self._LEGACY:  # superseded by the backup just written
            (self.backup_dir / name).unlink(missing_ok=True)


def _trim_history(history_csv: Path, epoch: int) -> None:
    """Drop the rows of epochs ``>= epoch`` from a ``CSVLogger`` file (they will be logged again)."""
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return
    history = pd.read_csv(history_csv)
    if "epoch" in history.columns and (history["epoch"] >= epoch).any():
        kept = history[history["epoch"] < epoch]
        atomic_write(history_csv, lambda tmp: kept.to_csv(tmp, index=False))


def tie_breaker(monitor: str) -> str:
    """The loss that decides between epochs with the same ``monitor`` value."""
    return "val_loss" if monitor.startswith("val_") else "loss"


def best_in_history(history_csv: Path, monitor: str) -> tuple[Optional[float], Optional[float]]:
    """Best value of ``monitor`` in a ``history.csv`` and its tie-breaking loss, for resuming."""
    if not Path(history_csv).exists():
        return None, None
    history = pd.read_csv(history_csv)
    if monitor not in history.columns or history[monitor].dropna().empty:
        return None, None
    loss_key = tie_breaker(monitor)
    ascending = monitor_mode(monitor) == "min"
    columns = [monitor] + ([loss_key] if loss_key in history.columns and loss_key != monitor else [])
    ranked = history.dropna(subset=[monitor]).sort_values(columns, ascending=[ascending] + [True] * (len(columns) - 1))
    best = ranked.iloc[0]
    loss = float(best[loss_key]) if loss_key in ranked.columns and not pd.isna(best[loss_key]) else None
    return float(best[monitor]), loss
