"""The run folder, ecoclassify's unit of reproducibility.

``output_dir/<name>-<YYYYmmdd-HHMMSS>/`` holds ``config.yaml`` (resolved, with versions),
``labels.json``, ``splits.csv``, ``excluded.csv``, ``model.keras`` (best epoch),
``history.csv``, ``metrics.json`` and later the report (file names: :mod:`ecoclassify.files`).
A run folder is never reused: a second run in the same second gets a ``-2`` suffix.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ecoclassify.errors import ConfigError, RunError
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


def check_output_dir(output_dir: Path, key: str = "experiment.output_dir") -> None:
    """Check, before any slow step, that run folders can be created in ``output_dir``.

    Not a config validator: it looks at the disk, which validators must not do.

    Raises:
        ConfigError: ``output_dir`` (or a folder above it) exists and is not a folder, or the
            nearest existing folder cannot be written.
    """
    path = Path(output_dir)
    for existing in [path, *path.parents]:
        if not (existing.exists() or existing.is_symlink()):
            continue
        if not existing.is_dir():
            what = "exists and is not a folder" if existing == path else f"lies inside {existing}, which is not a folder"
            raise ConfigError(f"{key} must be a folder where run folders can be created. "
                              f"Received: {str(path)!r}, which {what}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{key} must be a folder where run folders can be created, and {existing} is not "
                              f"writable. Received: {str(path)!r}")
        return


class DiskSpaceError(RunError):
    """Too little free disk space to write a file without risking a half-written one."""


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``what`` into ``folder`` when fewer than ``needed`` bytes are free.

    A write that runs out of space midway can leave a damaged file (h5py has even crashed
    the process), so savers call this first with about twice the size of what they write.

    Raises:
        DiskSpaceError: Not enough free space; the message gives both numbers.
    """
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"not enough free disk space in {folder} to save {what}: {_megabytes(free)} free, "
            f"about {_megabytes(needed)} needed (the new copy is written before the previous one is removed)")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full, also when h5py only says so in words."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and ("No space left on device" in text or "errno = 28" in text)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


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
