"""Files of ``ecoclassify predict``: the checkpoint, the three output formats and reading them back.

Checkpoint: a folder ``OUTPUT.checkpoint/`` beside the output, holding ``meta.json`` (the
fingerprint of the model and the input set) and numbered ``part-NNNNNN.jsonl`` files, each one
written atomically when N more images are done. Appending parts instead of rewriting one
growing file keeps a million-image run linear; JSON keeps every probability exactly (Python
writes the shortest repr that reads back to the same float) and file names exactly as they are.
Rows of a later part replace those of an earlier one (a failed file retried after ``--resume``).

Output formats (all written atomically, so a crash never leaves half a file):

- ``csv``: one row per file, the DataFrame of :func:`ecoclassify.prediction.predict`.
- ``json``: ``{"ecoclassify": {metadata}, "predictions": [rows]}``; metadata records the model,
  classes, roots, options and the summary; missing values are ``null``.
- ``md-json``: MegaDetector batch output format 1.4, for Timelapse and AddaxAI; see
  :func:`write_md_json` for the mapping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ecoclassify.errors import DataError, RunError
from ecoclassify.run import atomic_write

FORMATS = ("csv", "json", "md-json")
CHECKPOINT_SUFFIX = ".checkpoint"
_META = "meta.json"
_PART = "part-{:06d}.jsonl"
_CHECKPOINT_VERSION = 1

# MegaDetector format: a whole-image classifier reports one full-frame "animal" detection.
MD_FORMAT_VERSION = "1.4"
MD_DETECTION_CATEGORIES = {"1": "animal"}
MD_WHOLE_IMAGE_BBOX = [0.0, 0.0, 1.0, 1.0]

TEXT_COLUMNS = ("filepath", "root", "status", "error", "detail", "label", "datetime", "sequence_label")
INT_COLUMNS = ("width", "height", "sequence_id")


class RawRow(NamedTuple):
    """What is known about one file before labels are derived: the checkpoint's unit.

    ``probs`` is the model's float32 output (None for a failed file); labels, top-k and
    sequences are computed from it at the end, so ``--threshold`` or ``--top-k`` may change
    between an interrupted run and its resumption.
    """

    root: str
    filepath: str
    status: str
    error: str | None
    detail: str | None
    datetime: str | None
    width: int | None
    height: int | None
    probs: np.ndarray | None


# --- atomic writes -------------------------------------------------------------------------


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomically(path: Path, write: Any) -> Path:
    """:func:`ecoclassify.run.atomic_write` with the permissions a plain ``open`` would give.

    ``atomic_write`` goes through ``mkstemp``, which creates files readable by their owner only;
    results on a shared lab server must stay readable by the group, as any other file would be.
    """

    def write_with_mode(tmp: Path) -> None:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())

    return atomic_write(Path(path), write_with_mode)


def _write_text(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --- checkpoint ----------------------------------------------------------------------------


def checkpoint_path(output: Path) -> Path:
    """The checkpoint folder of an output file: ``predictions.csv`` -> ``predictions.csv.checkpoint``."""
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes: a model is the same model wherever it was copied to."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Checkpoint:
    """The checkpoint folder of one output.

    Args:
        path: The folder (see :func:`checkpoint_path`).
        fingerprint: JSON-able description of the model and the input set; a checkpoint is
            only resumed by a run with an equal fingerprint.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._next_part = 1

    def exists(self) -> bool:
        """Whether an earlier run left a checkpoint here."""
        return self.path.exists()

    def start(self) -> None:
        """Replaces any old checkpoint with an empty one for this fingerprint."""
        self.remove()
        self.path.mkdir(parents=True)
        _write_text(self.path / _META, json.dumps({"version": _CHECKPOINT_VERSION, "fingerprint": self.fingerprint},
                                                  indent=2, ensure_ascii=False) + "\n")
        self._next_part = 1

    def load(self) -> dict[tuple[str, str], RawRow]:
        """The rows of an earlier run, keyed by ``(root, filepath)``; later parts win.

        Raises:
            RunError: The checkpoint is damaged or was written for another model or input set.
        """
        try:
            meta = json.loads((self.path / _META).read_text(encoding="utf-8"))
            saved = meta["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"the checkpoint {self.path} is damaged ({_META}: {exc}); use --overwrite to start "
                           "again") from None
        problems = fingerprint_differences(saved, self.fingerprint)
        if problems:
            raise RunError(f"the checkpoint {self.path} belongs to another run: " + "; ".join(problems)
                           + ". Resume with the same model and inputs, or use --overwrite to start again.")
        rows: dict[tuple[str, str], RawRow] = {}
        parts = sorted(self.path.glob("part-*.jsonl"))
        for part in parts:
            for line_number, line in enumerate(part.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    row = _row_from_json(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise RunError(f"the checkpoint part {part} is damaged at line {line_number} ({exc}); use "
                                   "--overwrite to start again") from None
                rows[(row.root, row.filepath)] = row
        self._next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=0)
        for stray in self.path.glob(".*.tmp"):  # left by a run killed while writing a part
            stray.unlink(missing_ok=True)
        return rows

    def append(self, rows: list[RawRow]) -> None:
        """Writes ``rows`` as the next part, atomically."""
        if not rows:
            return
        text = "".join(json.dumps(_row_to_json(row), ensure_ascii=False) + "\n" for row in rows)
        _write_text(self.path / _PART.format(self._next_part), text)
        self._next_part += 1

    def remove(self) -> None:
        """Deletes the checkpoint folder (after the output was written)."""
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        elif self.path.exists() or self.path.is_symlink():
            self.path.unlink()


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    problems = []
    if saved.get("model_sha256") != current.get("model_sha256"):
        problems.append(f"it was written with the model {saved.get('model')!r}, this run uses {current.get('model')!r}"
                        " (different file contents)")
    for key, value in current.items():
        if key in ("model", "model_sha256"):
            continue
        if saved.get(key) != value:
            problems.append(f"{key} was {saved.get(key)!r}, now {value!r}")
    return problems


def _row_to_json(row: RawRow) -> dict[str, Any]:
    data = row._asdict()
    data["probs"] = None if row.probs is None else [float(p) for p in row.probs]
    return data


def _row_from_json(data: dict[str, Any]) -> RawRow:
    probs = data["probs"]
    return RawRow(
        str(data["root"]), str(data["filepath"]), str(data["status"]), data["error"], data["detail"],
        data["datetime"], data["width"], data["height"],
        None if probs is None else np.asarray(probs, dtype=np.float32),
    )


# --- output files --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-able Python value; NaN and pandas' NA become None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _records(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    columns = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):
        yield {column: _plain(value) for column, value in zip(columns, values)}


def write_output(frame: pd.DataFrame, path: Path, fmt: str, metadata: dict[str, Any]) -> Path:
    """Writes the predictions in ``fmt`` (one of ``FORMATS``) atomically."""
    if fmt == "csv":
        return write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))
    if fmt == "json":
        return write_atomically(path, lambda tmp: _write_json_stream(tmp, frame, metadata))
    if fmt == "md-json":
        return write_md_json(frame, path, metadata)
    raise ValueError(f"fmt must be one of: {', '.join(FORMATS)}. Received: fmt={fmt!r}")


def _write_json_stream(tmp: Path, frame: pd.DataFrame, metadata: dict[str, Any]) -> None:
    # Streamed record by record: a million rows never exist as one string.
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{\n"ecoclassify": ')
        handle.write(json.dumps(metadata, indent=2, ensure_ascii=False, default=str))
        handle.write(',\n"predictions": [')
        for index, record in enumerate(_records(frame)):
            handle.write(",\n" if index else "\n")
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False))
        handle.write("\n]\n}\n")


def md_base(roots: list[str]) -> str | None:
    """The folder md-json ``file`` paths are relative to: the common folder of all roots."""
    if not roots:
        return None
    try:
        return os.path.commonpath(roots)
    except ValueError:  # roots on different Windows drives: absolute paths then
        return None


def write_md_json(frame: pd.DataFrame, path: Path, metadata: dict[str, Any]) -> Path:
    """Writes MegaDetector batch output format 1.4 (https://lila.science/megadetector-output-format).

    Mapping:

    - ``classification_categories``: ``{"0": first class, "1": ...}``, the model's output order.
    - ``detection_categories``: ``{"1": "animal"}``. A whole-image classifier finds no boxes, so
      each image that was read gets one detection of category ``"1"`` with ``bbox``
      ``[0, 0, 1, 1]`` (the whole frame), ``conf`` = the top-1 probability (so Timelapse's
      detection-confidence filter selects by classifier confidence) and ``classifications`` =
      the top-k ``[class id, probability]`` pairs, highest first.
    - A failed file has ``"detections": null`` and ``"failure"`` = ``"<reason>: <detail>"``.
    - ``file`` is relative to the common folder of all roots, with ``/`` separators
      (``info.ecoclassify.base``); open that folder in Timelapse.
    - ``info``: ``format_version``, ``classifier`` (the model file name),
      ``classification_completion_time``, ``classifier_metadata.typical_classification_threshold``
      (``--threshold``, when given) and ``ecoclassify`` (model, classes, roots, options,
      summary). Labels below the threshold are not rewritten as ``unknown``: the reading tool
      applies the threshold itself. Sequence results are in the csv and json formats only.
    """
    classes = metadata["classes"]
    base = md_base(metadata["roots"])
    info: dict[str, Any] = {
        "format_version": MD_FORMAT_VERSION,
        "classifier": Path(metadata["model"]).name,
        "classification_completion_time": metadata["created"].replace("T", " "),
        "ecoclassify": {**metadata, "base": base},
    }
    threshold = metadata.get("options", {}).get("threshold")
    if threshold is not None:
        info["classifier_metadata"] = {"typical_classification_threshold": threshold}
    class_ids = {name: str(i) for i, name in enumerate(classes)}
    top_k = sum(1 for c in frame.columns if c.startswith("top") and c.endswith("_label"))

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("{\n")
            handle.write(f'"info": {json.dumps(info, indent=2, ensure_ascii=False, default=str)},\n')
            handle.write(f'"detection_categories": {json.dumps(MD_DETECTION_CATEGORIES)},\n')
            categories = {class_id: name for name, class_id in class_ids.items()}
            handle.write(f'"classification_categories": {json.dumps(categories, ensure_ascii=False)},\n')
            handle.write('"images": [')
            for index, record in enumerate(_records(frame)):
                image = _md_image(record, base, class_ids, top_k)
                handle.write(",\n" if index else "\n")
                handle.write(json.dumps(image, ensure_ascii=False, allow_nan=False))
            handle.write("\n]\n}\n")

    return write_atomically(path, write)


def _md_image(record: dict[str, Any], base: str | None, class_ids: dict[str, str], top_k: int) -> dict[str, Any]:
    full = os.path.join(record["root"], record["filepath"])
    file = Path(os.path.relpath(full, base)).as_posix() if base else Path(full).as_posix()
    if record["status"] != "ok":
        detail = record.get("detail")
        failure = f"{record['error']}: {detail}" if detail else str(record["error"])
        return {"file": file, "detections": None, "failure": failure}
    classifications = [[class_ids[record[f"top{i}_label"]], record[f"top{i}_score"]] for i in range(1, top_k + 1)]
    detection = {"category": "1", "conf": record["top1_score"], "bbox": list(MD_WHOLE_IMAGE_BBOX),
                 "classifications": classifications}
    return {"file": file, "detections": [detection]}


# --- reading outputs back ------------------------------------------------------------------


def _present(value: Any) -> bool:
    return not (value is None or value == "" or (isinstance(value, float) and math.isnan(value)))


def normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes ``predict`` returns, whether the values came from csv text or json."""
    for column in frame.columns:
        values = frame[column].tolist()
        if column in TEXT_COLUMNS or (column.startswith("top") and column.endswith("_label")):
            frame[column] = pd.Series([str(v) if _present(v) else None for v in values], dtype="str")
        elif column in INT_COLUMNS:
            frame[column] = pd.array([int(v) if _present(v) else None for v in values], dtype="Int64")
        else:
            # float() of the text is exact; pandas' fast csv float parser is not always.
            frame[column] = np.array([float(v) if _present(v) else math.nan for v in values], dtype=np.float64)
    return frame


def read_predictions(path: Path | str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reads a ``csv`` or ``json`` output of ``ecoclassify predict`` exactly as it was written.

    Args:
        path: The output file.

    Returns:
        ``(frame, metadata)``; metadata is empty for csv (roots are in the ``root`` column).

    Raises:
        DataError: The file is missing, is md-json, or lacks the ``filepath``/``root`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file does not exist. Received: '{path}'")
    metadata: dict[str, Any] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read predictions file {path}: {exc}") from None
        if isinstance(data, dict) and "images" in data and "info" in data:
            raise DataError(f"{path} is MegaDetector format (md-json), made for Timelapse and AddaxAI; give the "
                            "csv or json output of ecoclassify predict instead")
        if not isinstance(data, dict) or "predictions" not in data:
            raise DataError(f"{path} is not a json output of ecoclassify predict (no 'predictions' list)")
        metadata = data.get("ecoclassify") or {}
        frame = pd.DataFrame.from_records(data["predictions"], columns=metadata.get("columns"))
    else:
        try:
            # Everything as text first: a class called "NA" or a file called "nan.jpg" stays text.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read predictions file {path}: {exc}") from None
    frame = normalise_columns(frame)
    missing = {"filepath", "root", "status"} - set(frame.columns)
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; it is not an output of "
                        "ecoclassify predict")
    return frame, metadata


def now_iso() -> str:
    """Local time, seconds precision, for metadata."""
    return dt.datetime.now().isoformat(timespec="seconds")
