"""Output files of ``predict --detections``: per image and per box, in csv, json or MegaDetector format.

- ``csv``: OUTPUT holds one row per image (as whole-frame predict, plus ``species``,
  ``n_boxes``, ``detection_conf``, ``box``); ``<OUTPUT stem>.boxes.csv`` beside it one row
  per box (file, box, detector confidence, top-k labels and probabilities).
- ``json``: ``{"ecoclassify": metadata, "predictions": [image rows], "boxes": [box rows]}``.
- ``md-json``: MegaDetector batch output 1.6 with the detector's boxes kept and
  ``classifications: [[class id, p], ...]`` (top-k, highest first) added to each classified box,
  ``classification_categories``, the detector's ``info`` (``detector``,
  ``detector_metadata``...) copied through and ``info.classifier`` naming the model. Boxes are
  written as read: clipped to the frame, unusable ones (NaN, no size) left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ecoclassify.data.detections import MD_DEFAULT_CATEGORIES, Detections
from ecoclassify.files import atomic_write
from ecoclassify.prediction.outputs import MD_FORMAT_VERSION, _records, md_base


def boxes_path(output: Path) -> Path:
    """Where the per-box csv goes: ``preds.csv`` -> ``preds.boxes.csv``."""
    return output.with_name(f"{output.stem}.boxes{output.suffix or '.csv'}")


def write_crop_outputs(frame: pd.DataFrame, boxes: pd.DataFrame, output: Path, fmt: str, metadata: dict[str, Any],
                       detections: Detections, matched: dict[tuple[str, str], str]) -> list[Path]:
    """Writes the outputs of ``predict --detections`` in ``fmt``, each atomically; returns the files."""
    if fmt == "csv":
        return [atomic_write(output, lambda tmp: frame.to_csv(tmp, index=False)),
                atomic_write(boxes_path(output), lambda tmp: boxes.to_csv(tmp, index=False))]
    if fmt == "json":
        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                data = {"ecoclassify": metadata, "predictions": list(_records(frame)), "boxes": list(_records(boxes))}
                json.dump(data, handle, ensure_ascii=False, allow_nan=False, default=str)
        return [atomic_write(output, write)]
    return [write_md_boxes(frame, boxes, output, metadata, detections, matched)]


def write_md_boxes(frame: pd.DataFrame, boxes: pd.DataFrame, path: Path, metadata: dict[str, Any],
                   detections: Detections, matched: dict[tuple[str, str], str]) -> Path:
    """MegaDetector batch output with the detector's boxes and a classification per classified box.

    ``matched`` gives the detection file's ``file`` of each ``(root, filepath)``.
    """
    classes = metadata["classes"]
    class_ids = {name: str(i) for i, name in enumerate(classes)}
    categories = dict(detections.detection_categories) if detections.format == "md" else dict(MD_DEFAULT_CATEGORIES)
    category_ids = {name: cid for cid, name in categories.items()}
    for name in sorted({b.category for image in detections.images.values() for b in image.boxes}):
        if name not in category_ids:  # a Camtrap DP observation type or COCO name MegaDetector has no id for
            category_ids[name] = str(max((int(c) for c in categories if c.isdigit()), default=0) + 1)
            categories[category_ids[name]] = name
    top_k = metadata["options"]["top_k"]
    base = md_base(metadata["roots"])
    model = Path(metadata["model"])
    info: dict[str, Any] = {key: value for key, value in detections.info.items() if key != "format_version"}
    info["format_version"] = MD_FORMAT_VERSION
    info.setdefault("detector", f"unknown (boxes from {detections.path.name}, {detections.format})")
    info["classifier"] = f"{model.parent.name}/{model.name}" if model.parent.name else model.name
    info["classification_completion_time"] = metadata["created"].replace("T", " ")
    classifier_metadata: dict[str, Any] = {"min_detection_confidence": metadata["options"]["min_confidence"]}
    if metadata["options"].get("threshold") is not None:
        classifier_metadata["typical_classification_threshold"] = metadata["options"]["threshold"]
    info["classifier_metadata"] = classifier_metadata
    info["ecoclassify"] = {**metadata, "base": base}
    by_box = {(r["root"], r["filepath"], r["box_index"]): r for r in _records(boxes) if r["classified"]}

    def image_entry(record: dict[str, Any]) -> dict[str, Any]:
        full = os.path.join(record["root"], record["filepath"])
        file = Path(os.path.relpath(full, base)).as_posix() if base else Path(full).as_posix()
        entry: dict[str, Any] = {"file": file}
        for key in ("width", "height"):
            if record.get(key) is not None:
                entry[key] = int(record[key])
        if record["status"] != "ok":
            entry["detections"] = None
            detail = record.get("detail")
            entry["failure"] = f"{record['error']}: {detail}" if detail else str(record["error"])
            return entry
        entry["label"] = record["label"]
        key = matched.get((record["root"], record["filepath"]))
        source = detections.images[key].boxes if key in detections.images else []
        written = []
        for box in source:
            det: dict[str, Any] = {"category": category_ids[box.category], "conf": round(box.conf, 6),
                                   "bbox": [round(v, 6) for v in (box.x, box.y, box.w, box.h)]}
            classified = by_box.get((record["root"], record["filepath"], box.index))
            if classified is not None:
                det["classifications"] = [[class_ids[classified[f"top{j}_label"]], classified[f"top{j}_score"]]
                                          for j in range(1, top_k + 1)]
            written.append(det)
        entry["detections"] = written
        return entry

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("{\n")
            handle.write(f'"info": {json.dumps(info, indent=2, ensure_ascii=False, default=str)},\n')
            handle.write(f'"detection_categories": {json.dumps(categories, ensure_ascii=False)},\n')
            handle.write('"classification_categories": '
                         f'{json.dumps({i: name for name, i in class_ids.items()}, ensure_ascii=False)},\n')
            handle.write('"images": [')
            for index, record in enumerate(_records(frame)):
                handle.write(",\n" if index else "\n")
                handle.write(json.dumps(image_entry(record), ensure_ascii=False, allow_nan=False))
            handle.write("\n]\n}\n")

    return atomic_write(path, write)
