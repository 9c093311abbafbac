"""The boxes of ``predict --detections`` in a Camtrap DP export: one media-level observation per box.

Predictions made on detector crops come with a table of boxes: the ``boxes`` list of the json
output, or ``<OUTPUT stem>.boxes.csv`` beside a csv output (as
:func:`ecoclassify.prediction.crop_outputs.boxes_path` names it). Each box of an exported image
becomes a media-level observation with ``bboxX``/``bboxY``/``bboxWidth``/``bboxHeight``
(normalised 0-1 from the top-left, as the detector gave them and as Camtrap DP wants them) and
``count`` 1:

- a classified box: its class through the taxonomy, ``classificationProbability`` the
  classifier's probability; below predict's ``--threshold`` (json metadata) or ``min_score`` it
  is ``unclassified``, no species guessed;
- a box of another detector category (not classified): ``person`` is ``human``, ``vehicle``
  ``vehicle``, with the detector's confidence as probability;
- an image the detector found empty: one ``blank`` observation without a box.

Whole-frame predictions have no boxes table and keep one observation per image.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ecoclassify.data.camtrapdp import OBSERVATION_COLUMNS
from ecoclassify.data.detections import parse_box
from ecoclassify.errors import DataError
from ecoclassify.prediction.crop_outputs import boxes_path
from ecoclassify.prediction.md_categories import default_md_category
from ecoclassify.prediction.outputs import CSV_ENCODING_ERRORS

#: Columns of predict's per-box table the export reads.
BOX_COLUMNS = ("filepath", "root", "box", "category", "classified", "top1_label", "top1_score")
#: Observation type of a detector category that was not classified (MegaDetector's person, vehicle...).
_TYPE_OF_CATEGORY = {"person": "human", "vehicle": "vehicle", "empty": "blank", "animal": "animal"}
_BOX_INDEX = tuple(OBSERVATION_COLUMNS.index(c) for c in ("count", "bboxX", "bboxY", "bboxWidth", "bboxHeight"))
_TYPE_INDEX = OBSERVATION_COLUMNS.index("observationType")


@dataclass(frozen=True)
class PredictedBox:
    """One row of predict's per-box table.

    Attributes:
        box: ``(x, y, width, height)`` normalised 0-1 from the top-left.
        category: The detector's category (``animal``, ``person``...).
        classified: Whether the classifier looked at it (else ``label`` is its category).
        label: Top-1 class (or the category of an unclassified box).
        score: Top-1 probability (or the detector's confidence of an unclassified box).
    """

    box: tuple[float, float, float, float]
    category: str
    classified: bool
    label: str
    score: float


def is_crop_run(frame: pd.DataFrame, info: dict[str, Any]) -> bool:
    """Whether predictions come from ``predict --detections`` (json metadata or its per-image columns)."""
    return "detections" in info or "n_boxes" in frame.columns


def read_prediction_boxes(path: Path, frame: pd.DataFrame,
                          info: dict[str, Any]) -> Optional[dict[tuple[str, str], list[PredictedBox]]]:
    """The boxes of each ``(root, filepath)`` of crop predictions; None for whole-frame predictions.

    Raises:
        DataError: Crop predictions whose boxes are missing (no ``boxes`` list, no ``.boxes.csv``
            beside the csv) or lack a column.
    """
    if not is_crop_run(frame, info):
        return None
    if path.suffix.lower() == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8")).get("boxes")
        except (OSError, ValueError, AttributeError) as exc:
            raise DataError(f"cannot read the boxes of {path}: {exc}") from None
        if not isinstance(records, list):
            raise DataError(f"{path} comes from predict --detections but has no 'boxes' list; give the json file "
                            "as predict wrote it")
        table = pd.DataFrame.from_records(records)
        where = f"the 'boxes' of {path}"
    else:
        source = boxes_path(path)
        if not source.is_file():
            raise DataError(f"{path} comes from predict --detections (it has the column n_boxes), but its per-box "
                            f"file is missing. Keep the file predict wrote beside it. Received: '{source}' (missing)")
        try:
            # Read as predict read its image rows, so non-UTF-8 names match theirs.
            table = pd.read_csv(source, dtype=str, keep_default_na=False, encoding_errors=CSV_ENCODING_ERRORS)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read the per-box file {source}: {exc}") from None
        where = f"the per-box file {source}"
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if len(table) and missing:
        raise DataError(f"{where} lacks the column(s) {', '.join(missing)}; it is not written by predict "
                        f"--detections. Found columns: {', '.join(map(str, table.columns))}")
    boxes: dict[tuple[str, str], list[PredictedBox]] = {}
    for index, row in enumerate(table.to_dict("records") if len(table) else []):
        try:
            box = parse_box(str(row["box"]))
            score = float(row["top1_score"]) if str(row["top1_score"]).strip() else math.nan
        except (TypeError, ValueError):
            raise DataError(f"{where}, row {index + 1}: box must be 'x,y,w,h' and top1_score a number. Received: "
                            f"box={row['box']!r}, top1_score={row['top1_score']!r}") from None
        classified = str(row["classified"]).strip().lower() == "true"
        boxes.setdefault((str(row["root"]), str(row["filepath"])), []).append(
            PredictedBox(box, str(row["category"]), classified, str(row["top1_label"]), score))
    _refuse_mismatch(frame, boxes, where)
    return boxes


def _refuse_mismatch(frame: pd.DataFrame, boxes: dict[tuple[str, str], list[PredictedBox]], where: str) -> None:
    """Boxes of another run would turn images with animals into blanks: every count must agree."""
    counts = frame["n_boxes"] if "n_boxes" in frame.columns else pd.Series(0, index=frame.index)
    wrong, unmatched = [], dict(boxes)
    for root, filepath, status, count in zip(frame["root"], frame["filepath"], frame["status"], counts):
        listed = len(unmatched.pop((root, filepath), []))
        expected = int(float(count)) if status == "ok" and str(count).strip() not in ("", "nan", "<NA>") else 0
        if listed != expected:
            wrong.append(f"{filepath} ({expected} in the predictions, {listed} in the boxes)")
    wrong += [f"{filepath} (not in the predictions)" for _, filepath in unmatched]
    if wrong:
        raise DataError(f"{where} does not match the predictions: {len(wrong)} image(s) differ, e.g. "
                        f"{'; '.join(wrong[:3])}. Give the predictions and boxes one predict --detections run wrote")


def box_observations(builder: Any, boxes: list[PredictedBox], media_id: str, owner: str, when: str,
                     threshold: Optional[float], image_score: Any) -> list[tuple]:
    """The media-level observations of one image's boxes (a ``blank`` one when it has none).

    Args:
        builder: The export's row builder (its ``_kind``, ``_observation`` and ``types``).
        boxes: The image's boxes, in the order predict listed them (most confident first).
        media_id: The image's ``mediaID``.
        owner: Its ``deploymentID``.
        when: Its formatted timestamp.
        threshold: Predict's ``--threshold`` (boxes below it are ``unclassified``), if known.
        image_score: The image's score (of a blank image: 1 - the detector's highest confidence).

    Returns:
        Rows in ``OBSERVATION_COLUMNS`` order.
    """
    if not boxes:
        builder.types["blank"] += 1
        return [builder._observation(f"{media_id}_1", owner, media_id, "", when, when, "media", "blank", "",
                                     image_score)]
    rows = []
    for number, box in enumerate(boxes, start=1):
        if not box.classified:
            kind, scientific = _TYPE_OF_CATEGORY[default_md_category(box.category)], ""
        elif threshold is not None and not box.score >= threshold:
            kind, scientific = "unclassified", ""
        else:
            kind, scientific = builder._kind(box.label, box.label, box.score)
        builder.types[kind] += 1
        row = list(builder._observation(f"{media_id}_{number}", owner, media_id, "", when, when, "media", kind,
                                        scientific, box.score))
        x, y, w, h = box.box
        # Never 0 wide or high (the schema's minimum is 1e-15), never past the frame after rounding.
        values = ("1", _fraction(x), _fraction(y), _fraction(max(w, 1e-6)), _fraction(max(h, 1e-6)))
        for index, value in zip(_BOX_INDEX, values):
            row[index] = value
        rows.append(tuple(row))
    return rows


def is_human(rows: list[tuple]) -> bool:
    """Whether any of an image's observations is of people (its media is then not public)."""
    return any(row[_TYPE_INDEX] == "human" for row in rows)


def _fraction(value: float) -> str:
    # Fixed-point with 6 decimals, as predict's boxes, kept inside 0..1.
    return f"{min(max(value, 0.0), 1.0):.6f}".rstrip("0").rstrip(".") or "0"
