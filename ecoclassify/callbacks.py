"""Keras callbacks that Keras itself does not offer in the form a run folder needs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import keras
import pandas as pd

from ecoclassify.run import atomic_write


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for scores."""
    return "min" if monitor.endswith("loss") else "max"


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model when ``monitor`` improves, atomically, across stages and resumes.

    Unlike ``keras.callbacks.ModelCheckpoint`` it writes to a temporary file and renames it
    (a crash mid-save never corrupts the best model), keeps its best value across several
    ``fit`` calls (one per stage), and can start from the best value in an earlier history
    (``--resume``).

    Args:
        path: Where the best model goes (``model.keras``).
        monitor: Logged metric to watch, e.g. ``val_macro_f1``.
        initial_best: Best value already reached (from ``history.csv`` when resuming).
        target: The model to save when it is not the one being fitted (a head trained on
            cached features shares its layers with the full model, which is what is saved).
    """

    def __init__(self, path: Path, monitor: str, initial_best: Optional[float] = None,
                 target: Optional[keras.Model] = None) -> None:
        super().__init__()
        self.target = target
        self.path = Path(path)
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.best = initial_best
        self.best_epoch: Optional[int] = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or math.isnan(float(value)):
            return
        if self._improved(float(value)):
            self.best, self.best_epoch = float(value), epoch
            atomic_write(self.path, self._save)

    def _save(self, tmp: Path) -> None:
        # Keras picks the format from the suffix, so save under a .keras name and move it.
        target = tmp.with_name(tmp.name + ".keras")
        (self.target or self.model).save(target)
        target.replace(tmp)


def best_in_history(history_csv: Path, monitor: str) -> tuple[Optional[float], Optional[int]]:
    """Best value of ``monitor`` in a ``history.csv`` and its epoch, for resuming."""
    if not Path(history_csv).exists():
        return None, None
    history = pd.read_csv(history_csv)
    if monitor not in history.columns or history[monitor].dropna().empty:
        return None, None
    column = history[monitor]
    index = column.idxmin() if monitor_mode(monitor) == "min" else column.idxmax()
    return float(column[index]), int(history.loc[index, "epoch"])
