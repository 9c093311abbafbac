"""The run folder, ecoclassify's unit of reproducibility, and atomic file writes.

``output_dir/<name>-<YYYYmmdd-HHMMSS>/`` holds ``config.yaml`` (resolved, with versions),
``labels.json``, ``splits.csv``, ``excluded.csv``, ``model.keras`` (best epoch),
``history.csv``, ``metrics.json`` and later the report. A run folder is never reused:
a second run in the same second gets a ``-2`` suffix. Every file is written to a temporary
sibling and renamed, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from ecoclassify.errors import ConfigError, RunError

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
SPLITS_FILE = "splits.csv"
EXCLUDED_FILE = "excluded.csv"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
STATE_FILE = "state.json"
BACKUP_DIR = "backup"


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once, at import: os.umask can only be read by setting it, and that is process-wide
# (decoding threads may be creating files meanwhile).
_UMASK = _read_umask()


def usual_permissions(path: Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions a plain ``open`` or
    ``mkdir`` would: ``mkstemp``/``mkdtemp`` make private ones, and results are meant to be shared."""
    path = Path(path)
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~_UMASK)


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


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
