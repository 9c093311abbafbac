"""Writing files safely, and the names of the files ecoclassify writes, each defined once.

Every output is written to a temporary sibling and renamed into place (:func:`atomic_write`),
so a crash never leaves a half-written file behind, and gets the permissions a plain ``open``
would give. The run folder's and the report's file names live here so that training,
evaluation, prediction and export agree on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# --- the run folder ----------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
SPLITS_FILE = "splits.csv"
EXCLUDED_FILE = "excluded.csv"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
STATE_FILE = "state.json"
BACKUP_DIR = "backup"

# --- the report folder (inside a run folder, or an evaluation's own folder) ---------------
REPORT_DIR = "report"
#: Where ``ecoclassify evaluate`` writes by default, inside the run folder.
EVALUATIONS_DIR = "evaluations"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion_matrix.csv"
CONFUSION_NORMALIZED_FILE = "confusion_matrix_normalized.csv"
THRESHOLDS_FILE = "thresholds.csv"
GROUPS_FILE = "per_group.csv"
#: Per-image predictions of a training run's test split, and of an evaluation.
TEST_PREDICTIONS_FILE = "predictions_test.csv"
PREDICTIONS_FILE = "predictions.csv"
HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
#: ``evaluate --detections``: scores, per-image and per-box predictions, the per-site table.
CROP_METRICS_FILE = "crop_metrics.json"
IMAGE_PREDICTIONS_FILE = "image_predictions.csv"
CROP_PREDICTIONS_FILE = "crop_predictions.csv"
PER_SITE_FILE = "per_site.csv"

# --- exports (``RUN_DIR/export/<format>/`` by default) ------------------------------------
EXPORT_DIR = "export"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_DIR = "saved_model"
LABELS_TXT = "labels.txt"

# --- Camtrap DP packages (``ecoclassify camtrapdp``; read by ``data.source: camtrapdp``) ----
CAMTRAPDP_PACKAGE_FILE = "datapackage.json"
CAMTRAPDP_DEPLOYMENTS_FILE = "deployments.csv"
CAMTRAPDP_MEDIA_FILE = "media.csv"
CAMTRAPDP_OBSERVATIONS_FILE = "observations.csv"
#: Images of the predictions that are not in the package, with the reason.
CAMTRAPDP_UNEXPORTED_FILE = "unexported.csv"


# --- predict --runtime litert: the run's model converted once, kept beside model.keras -----
LITERT_FILE = "model.litert.tflite"
#: What the LiteRT file was converted from (its SHA-256), with which versions, and how it agreed with Keras.
LITERT_RECORD = "model.litert.json"


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


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_csv(path: Path, frame: "pd.DataFrame") -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes: a model is the same model wherever it was copied to."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
