"""Keras callbacks that Keras itself does not offer in the form a run folder needs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import keras
import pandas as pd

from ecoclassify.files import atomic_write


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
            self.best, self.best_loss, self.best_epoch = float(value), loss, epoch
            atomic_write(self.path, self._save)
            self.best_weights = (self.target or self.model).get_weights()

    def _save(self, tmp: Path) -> None:
        # Keras picks the format from the suffix, so save under a .keras name and move it.
        target = tmp.with_name(tmp.name + ".keras")
        (self.target or self.model).save(target)
        target.replace(tmp)


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
