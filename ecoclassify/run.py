"""The run folder, ecoclassify's unit of reproducibility.

``output_dir/<name>-<YYYYmmdd-HHMMSS>/`` holds ``config.yaml`` (resolved, with versions),
``labels.json``, ``splits.csv``, ``excluded.csv``, ``model.keras`` (best epoch),
``history.csv``, ``metrics.json`` and later the report (file names: :mod:`ecoclassify.files`).
A run folder is never reused: a second run in the same second gets a ``-2`` suffix.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ecoclassify.errors import RunError
from ecoclassify.files import CONFIG_FILE, MODEL_FILE


def new_run_dir(output_dir: Path, name: str, now: Optional[datetime] = None) -> Path:
    """Create and return a fresh ``output_dir/<name>-<timestamp>`` folder (never an existing one)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    output_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = output_dir / (f"{name}-{stamp}" if attempt == 1 else f"{name}-{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"cannot create a new run folder in {output_dir}: too many runs named {name}-{stamp}")


def provenance() -> dict[str, str]:
    """Versions and time recorded in every run's ``config.yaml``."""
    import keras
    import tensorflow as tf

    from ecoclassify import __version__

    return {
        "ecoclassify": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


@dataclass
class Run:
    """A training run: its folder, classes and results.

    Attributes:
        run_dir: The run folder.
        classes: Class names in the model's output order.
        metrics: Contents of ``metrics.json`` (test-set metrics and run facts).
        history: Per-epoch log (``history.csv``) as a DataFrame.
    """

    run_dir: Path
    classes: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def model_path(self) -> Path:
        """The best model, ready for ``ecoclassify predict``."""
        return self.run_dir / MODEL_FILE

    @property
    def config_path(self) -> Path:
        """The resolved config of the run."""
        return self.run_dir / CONFIG_FILE

    def path(self, name: str) -> Path:
        """Any file of the run folder by name, e.g. ``run.path("splits.csv")``."""
        return self.run_dir / name
