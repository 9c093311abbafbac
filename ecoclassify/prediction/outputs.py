"""Output files of ``ecoclassify predict``: the three formats, atomic writes, reading them back.

Output formats (all written atomically, so a crash never leaves half a file):

- ``csv``: one row per file, the DataFrame of :func:`ecoclassify.prediction.labelling.predict`.
- ``json``: ``{"ecoclassify": {metadata}, "predictions": [rows]}``; metadata records the model,
  classes, roots, options and the summary; missing values are ``null``.
- ``md-json``: MegaDetector batch output format 1.6, for Timelapse and AddaxAI; see
  :func:`write_md_json` for the mapping.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecoclassify.errors import ConfigError, DataError
from ecoclassify.files import atomic_write
from ecoclassify.prediction.options import FORMATS


# MegaDetector format: a whole-image classifier reports at most one full-frame detection.
MD_FORMAT_VERSION = "1.6"
MD_DETECTOR = "ecoclassify whole-image classifier (no detector)"
MD_DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
MD_WHOLE_IMAGE_BBOX = [0.0, 0.0, 1.0, 1.0]
MD_TYPICAL_DETECTION_THRESHOLD = 0.5

# A file name that is not valid UTF-8 reaches Python as a str with lone surrogates (U+DC80..U+DCFF
# for the bytes 0x80..0xFF); UTF-8 cannot hold those, so each format writes them reversibly.
_SURROGATE = re.compile("[\ud800-\udfff]")
CSV_ENCODING_ERRORS = "surrogateescape"


def json_dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` with non-ASCII text kept readable and lone surrogates as ``\\udcXX`` escapes.

    The result is valid UTF-8 whatever the file names, and ``json.loads`` gives back the very
    same str, which ``os.fsencode`` turns into the name's original bytes.
    """
    text = json.dumps(value, ensure_ascii=False, **options)
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


TEXT_COLUMNS = ("filepath", "root", "status", "error", "detail", "label", "datetime", "sequence_label")
INT_COLUMNS = ("width", "height", "sequence_id")




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
        # The bytes of a name that is not UTF-8 go into the csv as they are on disk (see README).
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, errors=CSV_ENCODING_ERRORS))
    if fmt == "json":
        return atomic_write(path, lambda tmp: _write_json_stream(tmp, frame, metadata))
    if fmt == "md-json":
        return write_md_json(frame, path, metadata)
    raise ConfigError(f"fmt must be one of: {', '.join(FORMATS)}. Received: fmt={fmt!r}")


def _write_json_stream(tmp: Path, frame: pd.DataFrame, metadata: dict[str, Any]) -> None:
    # Streamed record by record: a million rows never exist as one string.
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{\n"ecoclassify": ')
        handle.write(json_dumps(metadata, indent=2, default=str))
        handle.write(',\n"predictions": [')
        for index, record in enumerate(_records(frame)):
            handle.write(",\n" if index else "\n")
            handle.write(json_dumps(record, allow_nan=False))
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
    """Writes MegaDetector batch output format 1.6 (https://lila.science/megadetector-output-format).

    Mapping (see :mod:`ecoclassify.prediction.md_categories` for the class -> category defaults):

    - ``detection_categories``: ``{"1": "animal", "2": "person", "3": "vehicle"}``, as MegaDetector;
      ``classification_categories``: ``{"0": first class, ...}``, the model's output order.
    - A whole-image classifier finds no boxes. An image whose top-1 class is an ``empty``
      class gets ``"detections": []``; any other image that was read gets one whole-frame
      detection (``bbox`` ``[0, 0, 1, 1]``) of its top-1 class's category, with ``conf`` = the
      summed probability of every class of that category (how sure the model is that an
      animal, person or vehicle is there, whichever species) and ``classifications`` = the
      top-k ``[class id, probability]`` pairs, highest first.
    - ``info.detector_metadata``: ``typical_detection_threshold`` 0.5 (the model thinks it more
      likely than not); ``conservative_detection_threshold`` 1 / number of classes, below every
      ``conf`` written (a top-1 class has at least that probability), so nothing is hidden.
    - A failed file has ``"detections": null`` and ``"failure"`` = ``"<reason>: <detail>"``.
    - ``file`` is relative to the common folder of all roots, with ``/`` separators
      (``info.ecoclassify.base``); open that folder in Timelapse. ``datetime`` (EXIF form
      ``YYYY:MM:DD HH:MM:SS``, as MegaDetector writes it), ``width`` and ``height`` where known;
      with sequences: ``seq_id``, ``seq_num_frames``, ``frame_num`` (COCO Camera Traps names),
      ``seq_label`` and ``seq_score``.
    - ``info``: ``format_version``, ``detector`` (there was none), ``classifier`` (run folder and
      model file), ``classifier_metadata`` (``typical_classification_threshold`` = ``--threshold``
      when given, ``md_categories``), completion times and ``ecoclassify`` (model, classes, roots,
      options, summary). Labels below the threshold are not rewritten as ``unknown``: the
      reading tool applies the threshold itself.
    """
    from ecoclassify.prediction.md_categories import MD_CATEGORY_IDS, resolve_md_categories

    classes = metadata["classes"]
    base = md_base(metadata["roots"])
    options = metadata.get("options", {})
    md_categories = options.get("md_categories") or resolve_md_categories(classes)
    model = Path(metadata["model"])
    completed = metadata["created"].replace("T", " ")
    classifier_metadata: dict[str, Any] = {"md_categories": md_categories}
    if options.get("threshold") is not None:
        classifier_metadata["typical_classification_threshold"] = options["threshold"]
    info: dict[str, Any] = {
        "format_version": MD_FORMAT_VERSION,
        "detector": MD_DETECTOR,
        "detection_completion_time": completed,
        "detector_metadata": {"typical_detection_threshold": MD_TYPICAL_DETECTION_THRESHOLD,
                              "conservative_detection_threshold": math.floor(1e4 / len(classes)) / 1e4},
        "classifier": f"{model.parent.name}/{model.name}" if model.parent.name else model.name,
        "classification_completion_time": completed,
        "classifier_metadata": classifier_metadata,
        "ecoclassify": {**metadata, "base": base},
    }
    class_ids = {name: str(i) for i, name in enumerate(classes)}
    detection_ids = {name: MD_CATEGORY_IDS.get(category) for name, category in md_categories.items()}
    top_k = sum(1 for c in frame.columns if c.startswith("top") and c.endswith("_label"))
    frames = _md_sequence_frames(frame)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("{\n")
            handle.write(f'"info": {json_dumps(info, indent=2, default=str)},\n')
            handle.write(f'"detection_categories": {json.dumps(MD_DETECTION_CATEGORIES)},\n')
            categories = {class_id: name for name, class_id in class_ids.items()}
            handle.write(f'"classification_categories": {json.dumps(categories, ensure_ascii=False)},\n')
            handle.write('"images": [')
            for index, record in enumerate(_records(frame)):
                image = _md_image(record, base, class_ids, detection_ids, top_k)
                if frames is not None and record.get("sequence_id") is not None:
                    image.update(frames[index])
                handle.write(",\n" if index else "\n")
                handle.write(json_dumps(image, allow_nan=False))
            handle.write("\n]\n}\n")

    return atomic_write(path, write)


def _md_image(record: dict[str, Any], base: str | None, class_ids: dict[str, str],
              detection_ids: dict[str, str | None], top_k: int) -> dict[str, Any]:
    full = os.path.join(record["root"], record["filepath"])
    file = Path(os.path.relpath(full, base)).as_posix() if base else Path(full).as_posix()
    image: dict[str, Any] = {"file": file}
    if record.get("datetime"):
        # MegaDetector writes the EXIF form; ours is ISO "YYYY-MM-DD HH:MM:SS".
        when = str(record["datetime"])
        image["datetime"] = when[:10].replace("-", ":") + " " + when[11:19]
    for key in ("width", "height"):
        if record.get(key) is not None:
            image[key] = int(record[key])
    if record["status"] != "ok":
        detail = record.get("detail")
        image["detections"] = None
        image["failure"] = f"{record['error']}: {detail}" if detail else str(record["error"])
        return image
    category = detection_ids[record["top1_label"]]
    if category is None:
        image["detections"] = []
        return image
    conf = sum(record[f"prob_{name}"] for name, other in detection_ids.items() if other == category)
    classifications = [[class_ids[record[f"top{i}_label"]], record[f"top{i}_score"]] for i in range(1, top_k + 1)]
    image["detections"] = [{"category": category, "conf": round(min(float(conf), 1.0), 6),
                            "bbox": list(MD_WHOLE_IMAGE_BBOX), "classifications": classifications}]
    return image


def _md_sequence_frames(frame: pd.DataFrame) -> list[dict[str, Any]] | None:
    """Per row, the sequence fields of md-json (COCO Camera Traps names plus the sequence label)."""
    if "sequence_id" not in frame.columns:
        return None
    ids = frame["sequence_id"]
    order = pd.DataFrame({"id": ids, "time": frame["datetime"], "path": frame["root"] + "/" + frame["filepath"]})
    order = order[ids.notna()].sort_values(["id", "time", "path"], kind="stable")
    frame_num = order.groupby("id").cumcount().reindex(frame.index)
    sizes = ids.map(ids.value_counts())
    rows: list[dict[str, Any]] = []
    for position, (seq, label, score) in enumerate(zip(ids, frame["sequence_label"], frame["sequence_score"])):
        if seq is pd.NA or seq is None:
            rows.append({})
            continue
        rows.append({"seq_id": str(int(seq)), "seq_num_frames": int(sizes.iloc[position]),
                     "frame_num": int(frame_num.iloc[position]), "seq_label": _plain(label),
                     "seq_score": _plain(score)})
    return rows


# --- reading outputs back ------------------------------------------------------------------


def _present(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    if isinstance(value, str):
        return value != ""
    if isinstance(value, (float, np.floating)):
        return not math.isnan(value)
    return True


def normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes ``predict`` returns, whether the values came from csv text or json.

    Raises:
        ValueError: A numeric column holds something that is not a number.
    """
    for column in frame.columns:
        values = frame[column].tolist()
        if column in TEXT_COLUMNS or (column.startswith("top") and column.endswith("_label")):
            frame[column] = pd.Series([str(v) if _present(v) else None for v in values], dtype="str", index=frame.index)
            continue
        if not _is_numeric_column(column):
            continue  # a column someone added (notes, a checked label) stays as it is
        try:
            # float() of the text is exact; pandas' fast csv float parser is not always.
            numbers = [float(v) if _present(v) else math.nan for v in values]
        except (TypeError, ValueError):
            bad = next(v for v in values if _present(v) and not _is_number(v))
            raise ValueError(f"column {column!r} must hold numbers. Received: {bad!r}") from None
        if column in INT_COLUMNS:  # "48.0" from a spreadsheet round trip is still 48
            frame[column] = pd.array([None if math.isnan(v) else int(v) for v in numbers], dtype="Int64")
        else:
            frame[column] = np.array(numbers, dtype=np.float64)
    return frame


def _is_numeric_column(column: str) -> bool:
    return (column in INT_COLUMNS or column in ("score", "sequence_score") or column.startswith("prob_")
            or (column.startswith("top") and column.endswith("_score")))


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


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
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors=CSV_ENCODING_ERRORS)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read predictions file {path}: {exc}") from None
    try:
        frame = normalise_columns(frame)
    except ValueError as exc:
        raise DataError(f"{path} is not a predictions file as written by ecoclassify predict: {exc}") from None
    missing = {"filepath", "root", "status"} - set(frame.columns)
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; it is not an output of "
                        "ecoclassify predict")
    return frame, metadata


def now_iso() -> str:
    """Local time, seconds precision, for metadata."""
    return dt.datetime.now().isoformat(timespec="seconds")
