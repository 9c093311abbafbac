"""``evaluate --detections``: a crop model on a labelled set, scored per crop, per image and per site.

The images are labelled exactly as ``predict --detections`` labels them
(:func:`ecoclassify.prediction.crops.label_items`), then compared with the labels of the data:

- **image level**: an image's predicted label (its most confident box; ``blank`` for an image
  without a box above the threshold, counted as the data's empty class when it has one, e.g.
  ``empty`` or ``blank``) against its label;
- **crop level**: each classified box's top-1 label against the box's own label where the
  detection file has one (``gt_label``, COCO, Camtrap DP) and it is one of the data's labels,
  else its image's label;
- **per site** (``site``/``camera`` or ``group_by``): accuracy and macro-F1 of the image-level
  labels, and, given a whole-frame model to compare with, the same for its predictions on the
  same images (read by predict's own decoder).

Images without a detector result (missing from the file, listed twice, failed by the
detector) or unreadable are left out of the metrics and listed in ``excluded.csv``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from ecoclassify.data.detections import read_detections
from ecoclassify.files import (
    CROP_METRICS_FILE,
    CROP_PREDICTIONS_FILE,
    EXCLUDED_FILE,
    IMAGE_PREDICTIONS_FILE,
    PER_SITE_FILE,
    atomic_write,
)
from ecoclassify.models.io import load_classifier
from ecoclassify.prediction.crops import BLANK, label_items
from ecoclassify.prediction.inputs import WorkItem
from ecoclassify.prediction.md_categories import default_md_category
from ecoclassify.prediction.options import PredictOptions


def scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the true classes, and per-class precision/recall/F1/support."""
    labels = sorted(set(y_true))
    if not labels:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_class": []}
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 6),
        "per_class": [{"class": c, "precision": round(float(p), 6), "recall": round(float(r), 6),
                       "f1": round(float(f), 6), "support": int(s)}
                      for c, p, r, f, s in zip(labels, precision, recall, f1, support)],
    }


def evaluate_on_detections(model: str | os.PathLike, samples: pd.DataFrame, root: Path, detections_path: Path,
                           out_dir: Path, *, compare_with: Optional[str | os.PathLike] = None,
                           group_by: Optional[str] = None, options: Optional[PredictOptions] = None
                           ) -> dict[str, Any]:
    """Score a crop model on labelled images with a detection file; writes the tables into ``out_dir``.

    Args:
        model: The crop model (run folder or ``.keras`` file).
        samples: Labelled images: ``filepath`` (absolute or relative to ``root``), ``label``, maybe ``site``.
        root: The folder the detection file's ``file`` entries are relative to.
        detections_path: The detector's output.
        out_dir: Folder for ``crop_metrics.json``, ``image_predictions.csv``,
            ``crop_predictions.csv``, ``per_site.csv`` and ``excluded.csv`` (created).
        compare_with: A whole-frame model to compare per site on the same images.
        group_by: The column of the per-site table (default ``site``, else ``camera``).
        options: Batch size, thresholds and crop settings as for ``predict --detections``.

    Returns:
        The metrics written to ``crop_metrics.json``.

    Raises:
        DataError: The detection file covers none of the images.
    """
    options = options or PredictOptions()
    options = options.model_copy(update={"detections": detections_path})
    detections = read_detections(detections_path, root=root)
    classifier = load_classifier(model)
    root = Path(os.path.abspath(root))
    files = [Path(os.path.abspath(root / p)).relative_to(root).as_posix() for p in samples["filepath"]]
    items = [WorkItem(str(root), f) for f in files]
    frame, boxes, _, settings, warnings = label_items(classifier, items, detections, options)
    truth = dict(zip(files, samples["label"].astype(str)))
    column = group_by or next((c for c in ("site", "camera") if c in samples.columns), None)
    sites = dict(zip(files, samples[column].astype(str))) if column else {}
    empty = next((label for label in sorted(set(truth.values())) if default_md_category(label) == "empty"), BLANK)

    frame = frame.assign(true_label=frame["filepath"].map(truth))
    if column:
        frame[column] = frame["filepath"].map(sites)
    ok = frame[frame["status"] == "ok"].copy()
    ok["predicted"] = ok["label"].replace({BLANK: empty})
    excluded = frame.loc[frame["status"] != "ok", ["filepath", "true_label", "error", "detail"]].rename(
        columns={"true_label": "label"})

    classified = boxes[boxes["classified"]].copy()
    own = _box_labels(detections, classified)
    known = set(truth.values())  # an annotator's own name outside the data's labels is not the truth here
    classified["true_label"] = [own.get(i) if own.get(i) in known else truth.get(f)
                                for i, f in zip(classified.index, classified["filepath"])]

    metrics: dict[str, Any] = {
        "model": str(classifier.path), "detections": str(detections_path), "crop_settings": settings,
        "warnings": warnings, "images_listed": len(frame), "images_evaluated": len(ok),
        "image_level": scores(ok["true_label"].tolist(), ok["predicted"].tolist()),
        "crop_level": scores(classified["true_label"].tolist(), classified["top1_label"].astype(str).tolist()),
    }
    per_site = pd.DataFrame()
    if column:
        per_site = _per_site(ok, column, compare_with, root, options)
        metrics["per_site"] = per_site.to_dict("records")
        metrics["group_by"] = column
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / IMAGE_PREDICTIONS_FILE, lambda tmp: frame.to_csv(tmp, index=False))
    atomic_write(out_dir / CROP_PREDICTIONS_FILE, lambda tmp: classified.to_csv(tmp, index=False))
    atomic_write(out_dir / EXCLUDED_FILE, lambda tmp: excluded.to_csv(tmp, index=False))
    if column:
        atomic_write(out_dir / PER_SITE_FILE, lambda tmp: per_site.to_csv(tmp, index=False))
    atomic_write(out_dir / CROP_METRICS_FILE,
                 lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8"))
    return metrics


def _box_labels(detections: Any, classified: pd.DataFrame) -> dict[Any, Optional[str]]:
    """A classified box's own label (annotations), by its row index."""
    labels: dict[Any, Optional[str]] = {}
    lookup = {(file, box.index): box.label for file, image in detections.images.items() for box in image.boxes}
    for index, file, box_index in zip(classified.index, classified["filepath"], classified["box_index"]):
        labels[index] = lookup.get((file, int(box_index)))
    return labels


def _per_site(ok: pd.DataFrame, column: str, compare_with: Optional[str | os.PathLike], root: Path,
              options: PredictOptions) -> pd.DataFrame:
    frames_pred: dict[str, str] = {}
    if compare_with is not None:
        from ecoclassify.prediction.runner import classify_files

        whole = load_classifier(compare_with)
        rows = classify_files(whole, [root / f for f in ok["filepath"]],
                              options.model_copy(update={"detections": None}))
        for file, row in zip(ok["filepath"], rows):
            if row.probs is not None:
                frames_pred[file] = whole.classes[int(np.argmax(row.probs))]
    table = []
    for site, group in ok.groupby(column, sort=True):
        crop = scores(group["true_label"].tolist(), group["predicted"].tolist())
        entry: dict[str, Any] = {column: site, "images": len(group), "accuracy_crops": crop["accuracy"],
                                 "macro_f1_crops": crop["macro_f1"]}
        if compare_with is not None:
            known = group[group["filepath"].isin(frames_pred)]
            whole_scores = scores(known["true_label"].tolist(), [frames_pred[f] for f in known["filepath"]])
            entry.update(accuracy_frames=whole_scores["accuracy"], macro_f1_frames=whole_scores["macro_f1"])
        table.append(entry)
    return pd.DataFrame(table)
