"""``predict --detections``: classify the boxes a detector found, and label each image from its boxes.

Flow: the detection file is read and matched to the input files (by path relative to the
input folder) -> each image is decoded once and all its boxes above ``min_confidence`` cut
from it (:func:`ecoclassify.data.crops.load_crops`), a few chunks ahead in a thread pool ->
the crops of many images are classified together in padded batches of ``batch_size``, as the
whole-frame runner does -> one row per box and one row per image.

An image's label is that of its most confident classified box (``unknown`` below
``threshold``); ``species`` lists every distinct box label, most confident box first, so a
frame with a deer and a fox reads ``deer;fox``. Boxes of other categories above the threshold
(``person``, ``vehicle``) are not classified: their category is their label. An image the
detector found empty is ``blank`` with score 1 - the highest confidence of any of its boxes.
An image missing from the detection file, listed twice, or failed by the detector is a
``failed`` row with that reason; so is an unreadable file.

Not supported with detections (yet): ``resume``, ``sequence_gap``, ``engine="dask"``.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ecoclassify.data.crops import load_crops
from ecoclassify.data.detections import DUPLICATE, MISSING, Box, Detections, kept_boxes, read_detections
from ecoclassify.data.images import ImageReadError, read_header
from ecoclassify.errors import DataError, RunError
from ecoclassify.models.io import LoadedClassifier, load_classifier
from ecoclassify.prediction.checkpoint import RawRow
from ecoclassify.prediction.inputs import InputSpec, WorkItem, iter_work
from ecoclassify.prediction.options import PredictOptions
from ecoclassify.prediction.summary import PredictionSummary
from ecoclassify.prediction.outputs import md_base, normalise_columns, now_iso
from ecoclassify.prediction.runner import PREFETCH_CHUNKS, chunks, classify_decoded
from ecoclassify.prediction.sequences import UNKNOWN

log = logging.getLogger(__name__)

BLANK = "blank"
#: Settings a crop model records in labels.json that predict uses when not given.
DEFAULT_CROP_SETTINGS = {"min_confidence": 0.2, "margin": 0.1, "square": True}


@dataclass
class _Image:
    """One input file with what the detector said about it."""

    item: WorkItem
    classified: list[Box] = field(default_factory=list)
    others: list[Box] = field(default_factory=list)
    problem: Optional[tuple[str, str]] = None
    blank_score: float = 1.0
    key: Optional[str] = None


def model_crop_settings(classifier: LoadedClassifier) -> Optional[dict[str, Any]]:
    """The ``crops`` entry of the model's ``labels.json`` (how its training crops were cut), or None."""
    import json

    from ecoclassify.files import LABELS_FILE

    try:
        labels = json.loads((classifier.path.parent / LABELS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    crops = labels.get("crops") if isinstance(labels, dict) else None
    return crops if isinstance(crops, dict) else None


def warn_if_crop_model(classifier: LoadedClassifier) -> Optional[str]:
    """Logs (and returns) a warning when a model trained on crops is used on whole frames."""
    if model_crop_settings(classifier) is None:
        return None
    message = (f"{classifier.path} was trained on detector crops (data.crops), but these images are classified "
               "as whole frames: give the detector's output with --detections for the results it was trained for")
    log.warning(message)
    return message


def predict_crops(model: str | os.PathLike | LoadedClassifier, specs: list[InputSpec], options: PredictOptions,
                  progress: Optional[Callable[[int, int], None]] = None) -> pd.DataFrame:
    """Classify the detector's boxes of every image of ``specs``; one row per image, boxes in ``attrs``.

    Args:
        model: A run folder, a ``.keras`` file with ``labels.json`` beside it, or a loaded classifier.
        specs: The inputs as whole-frame predict resolved them (folders, image files, list files).
        options: With ``detections`` set.
        progress: Called as ``progress(advance, total)`` as images are done.

    Returns:
        The image rows (columns of whole-frame predict plus ``species``, ``n_boxes``,
        ``detection_conf`` and ``box``); ``attrs["boxes"]`` holds one row per box,
        ``attrs["summary"]`` and ``attrs["metadata"]`` as for whole frames.

    Raises:
        DataError: The detection file cannot be read or covers none of the input images.
        RunError: The output exists (without ``overwrite``).
    """
    from ecoclassify.prediction.crop_outputs import write_crop_outputs

    output = options.output
    if output is not None and not options.overwrite:
        for path in _output_paths(output, options.fmt):
            if path.exists():
                raise RunError(f"{path} exists: use --overwrite to replace it")
    assert options.detections is not None
    detections = read_detections(options.detections)
    skipped: collections.Counter[str] = collections.Counter()
    items = list(iter_work(specs, options.recursive, on_skip=lambda path, reason: skipped.update([reason])))
    classifier = model if isinstance(model, LoadedClassifier) else load_classifier(model)
    started = time.perf_counter()
    frame, box_frame, images, settings, warnings = label_items(classifier, items, detections, options, progress)
    seconds = time.perf_counter() - started
    top_k = min(options.top_k, len(classifier.classes))
    summary = _summary(frame, box_frame, skipped, seconds, output)
    metadata = _metadata(classifier, detections, options, settings, top_k, frame, summary, warnings)
    frame.attrs.update(boxes=box_frame, summary=summary, metadata=metadata)
    if output is not None:
        matched = {(image.item.root, image.item.filepath): image.key for image in images if image.key is not None}
        write_crop_outputs(frame, box_frame, output, options.fmt, metadata, detections, matched)
    return frame


def label_items(classifier: LoadedClassifier, items: list[WorkItem], detections: Detections, options: PredictOptions,
                progress: Optional[Callable[[int, int], None]] = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, list[_Image], dict[str, Any], list[str]]:
    """Classify the boxes of ``items`` and label each image from them (see the module docstring).

    Returns:
        ``(image rows, box rows, matched images, crop settings used, warnings)``.

    Raises:
        DataError: The detection file covers none of the items.
    """
    trained = model_crop_settings(classifier)
    warnings = [] if trained is not None else [
        f"{classifier.path} was trained on whole frames, not on detector crops: its results on crops may be worse"]
    for warning in warnings:
        log.warning(warning)
    settings = {name: (trained or {}).get(name, default) for name, default in DEFAULT_CROP_SETTINGS.items()}
    for name, value in (("min_confidence", options.min_confidence), ("margin", options.crop_margin),
                        ("square", options.crop_square)):
        if value is not None:
            settings[name] = value
    images = _match(items, detections, settings["min_confidence"], options.detection_categories)
    decoded = _classify(classifier, images, options, settings, progress)
    top_k = min(options.top_k, len(classifier.classes))
    box_frame = build_box_frame(decoded, classifier.classes, top_k)
    frame = build_image_frame(decoded, box_frame, classifier.classes, top_k, options.threshold)
    return frame, box_frame, images, settings, warnings


def _output_paths(output: Path, fmt: str) -> list[Path]:
    from ecoclassify.prediction.crop_outputs import boxes_path

    return [output, boxes_path(output)] if fmt == "csv" else [output]


def _match(items: list[WorkItem], detections: Detections, min_confidence: float,
           categories: list[str]) -> list[_Image]:
    """Each input file with its boxes; refuses a detection file that covers none of them."""
    base = md_base(sorted({item.root for item in items}))
    duplicates = detections.duplicates()
    images, covered = [], 0
    for item in items:
        keys = [item.filepath]
        if base is not None:
            keys.append(Path(os.path.relpath(item.path, base)).as_posix())
        key = next((k for k in keys if k in detections.images or k in duplicates), None)
        image = _Image(item, key=key)
        if key is None:
            image.problem = ("not_in_detections", MISSING)
        elif key in duplicates:
            covered += 1
            image.problem = ("duplicate_in_detections", DUPLICATE)
        else:
            covered += 1
            found = detections.images[key]
            if found.failure:
                image.problem = ("detector_failure", str(found.failure))
            else:
                confident = kept_boxes(found, min_confidence, None)
                wanted = {c.lower() for c in categories}
                image.classified = [b for b in confident if b.category.lower() in wanted]
                image.others = [b for b in confident if b.category.lower() not in wanted]
                image.blank_score = 1.0 - max((b.conf for b in found.boxes), default=0.0)
        images.append(image)
    if items and covered == 0:
        examples = ", ".join(list(detections.images)[:3]) or "none"
        raise DataError(f"the detection file {detections.path} covers none of the {len(items)} input images: its "
                        f"'file' entries must be relative to the input folder. Entries look like: {examples}. "
                        f"Received files like: {', '.join(item.filepath for item in items[:3])}")
    return images


@dataclass
class _Decoded:
    image: _Image
    row: RawRow
    probs: list[np.ndarray] = field(default_factory=list)


def _decode(image: _Image, size: tuple[int, int], settings: dict[str, Any], options: PredictOptions
            ) -> tuple[_Decoded, list[np.ndarray]]:
    item = image.item
    if image.problem is not None:
        error, detail = image.problem
        return _Decoded(image, RawRow(item.root, item.filepath, "failed", error, detail, None, None, None, None)), []
    try:
        if not image.classified:  # nothing to cut: only check the file is there and readable
            header = read_header(item.path, max_pixels=options.max_pixels)
            width, height, when, arrays = header.width, header.height, header.datetime, []
        else:
            boxes = [(b.x, b.y, b.w, b.h) for b in image.classified]
            loaded = load_crops(item.path, boxes, size, margin=settings["margin"], square=settings["square"],
                                max_pixels=options.max_pixels, allow_truncated=options.allow_truncated)
            width, height, when, arrays = loaded.width, loaded.height, loaded.datetime, loaded.arrays
    except ImageReadError as exc:
        return _Decoded(image, RawRow(item.root, item.filepath, "failed", exc.reason, exc.detail, None, None, None,
                                      None)), []
    text = when.isoformat(sep=" ") if when else None  # type: ignore[union-attr]
    return _Decoded(image, RawRow(item.root, item.filepath, "ok", None, None, text, width, height, None)), arrays


def _classify(classifier: LoadedClassifier, images: list[_Image], options: PredictOptions, settings: dict[str, Any],
              progress: Optional[Callable[[int, int], None]]) -> list[_Decoded]:
    """Decode images a few chunks ahead; classify their crops in padded batches across images."""
    size = classifier.image_size
    batch = options.batch_size
    workers = options.threads or os.cpu_count() or 1
    done: list[_Decoded] = []
    pending: collections.deque = collections.deque()
    waiting: list[tuple[_Decoded, np.ndarray]] = []  # crops not yet classified, in order

    def run_batches(final: bool) -> None:
        while len(waiting) >= batch or (final and waiting):
            part, waiting[:] = waiting[:batch], waiting[batch:]
            rows = classify_decoded(classifier, [(RawRow("", "", "ok", *([None] * 6)), a) for _, a in part], batch)
            for (owner, _), row in zip(part, rows):
                owner.probs.append(row.probs)

    def finish(futures: list) -> None:
        for future in futures:
            decoded, arrays = future.result()
            done.append(decoded)
            waiting.extend((decoded, array) for array in arrays)
        run_batches(final=False)
        if progress is not None:
            progress(len(futures), len(images))

    if progress is not None:
        progress(0, len(images))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecoclassify-crops") as pool:
        for chunk in chunks(iter(images), batch):
            pending.append([pool.submit(_decode, image, size, settings, options) for image in chunk])
            while len(pending) > PREFETCH_CHUNKS:
                finish(pending.popleft())
        while pending:
            finish(pending.popleft())
    run_batches(final=True)
    return done


def _top(probs: np.ndarray, classes: list[str], k: int) -> tuple[list[str], list[float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [classes[i] for i in order], [float(probs[i]) for i in order]


def build_box_frame(decoded: Iterable[_Decoded], classes: list[str], top_k: int) -> pd.DataFrame:
    """One row per box above the threshold: file, box, detector confidence, top-k labels and probabilities."""
    rows = []
    for entry in decoded:
        item, image = entry.image.item, entry.image
        for box, probs in zip(image.classified, entry.probs if entry.row.status == "ok" else []):
            probs = np.round(np.asarray(probs, dtype=np.float64), 6)
            names, scores = _top(probs, classes, top_k)
            row: dict[str, Any] = {"filepath": item.filepath, "root": item.root, "box_index": box.index,
                                   "box": box.as_text(), "category": box.category, "detection_conf": box.conf,
                                   "classified": True}
            for j in range(top_k):
                row[f"top{j + 1}_label"], row[f"top{j + 1}_score"] = names[j], scores[j]
            row.update({f"prob_{name}": float(p) for name, p in zip(classes, probs)})
            rows.append(row)
        if entry.row.status != "ok":
            continue
        for box in image.others:
            row = {"filepath": item.filepath, "root": item.root, "box_index": box.index, "box": box.as_text(),
                   "category": box.category, "detection_conf": box.conf, "classified": False,
                   "top1_label": box.category, "top1_score": box.conf}
            rows.append(row)
    columns = ["filepath", "root", "box_index", "box", "category", "detection_conf", "classified"]
    columns += [c for j in range(top_k) for c in (f"top{j + 1}_label", f"top{j + 1}_score")]
    columns += [f"prob_{name}" for name in classes]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["root", "filepath", "detection_conf", "box_index"], ascending=[True, True, False, True],
                             kind="stable").reset_index(drop=True)


def build_image_frame(decoded: list[_Decoded], boxes: pd.DataFrame, classes: list[str], top_k: int,
                      threshold: Optional[float]) -> pd.DataFrame:
    """One row per image, labelled from its most confident box; ``species`` lists every box label."""
    by_image = {key: group for key, group in boxes.groupby(["root", "filepath"], sort=False)}
    rows = []
    for entry in sorted(decoded, key=lambda d: (d.row.root, d.row.filepath)):
        row = entry.row
        out: dict[str, Any] = {"filepath": row.filepath, "root": row.root, "status": row.status, "error": row.error,
                               "detail": row.detail, "label": None, "score": np.nan}
        for j in range(top_k):
            out[f"top{j + 1}_label"], out[f"top{j + 1}_score"] = None, np.nan
        out.update({f"prob_{name}": np.nan for name in classes})
        out.update(datetime=row.datetime, width=row.width, height=row.height, species=None, n_boxes=0,
                   detection_conf=np.nan, box=None)
        group = by_image.get((row.root, row.filepath))
        if row.status == "ok" and group is None:
            out.update(label=BLANK, score=round(entry.image.blank_score, 6), top1_label=BLANK,
                       top1_score=round(entry.image.blank_score, 6), species=BLANK)
        elif row.status == "ok":
            labels = [_box_label(r, threshold) for r in group.itertuples(index=False)]
            classified = group[group["classified"]]
            best = classified.iloc[0] if len(classified) else group.iloc[0]
            out.update(label=_box_label(best, threshold), score=float(best["top1_score"]),
                       species=";".join(dict.fromkeys(labels)), n_boxes=len(group),
                       detection_conf=float(group["detection_conf"].max()), box=best["box"])
            for j in range(top_k):
                if f"top{j + 1}_label" in best.index:
                    name, score = f"top{j + 1}_label", f"top{j + 1}_score"
                    out[name], out[score] = best[name], best[score]
            if bool(best["classified"]):
                out.update({f"prob_{name}": float(best[f"prob_{name}"]) for name in classes})
        rows.append(out)
    return normalise_columns(pd.DataFrame(rows))


def _box_label(box: Any, threshold: Optional[float]) -> str:
    get = box.get if isinstance(box, pd.Series) else lambda name: getattr(box, name)
    label, score = get("top1_label"), get("top1_score")
    if bool(get("classified")) and threshold is not None and score < threshold:
        return UNKNOWN
    return str(label)


@dataclass
class CropSummary(PredictionSummary):
    """Whole-frame predict's summary plus the number of boxes (crop predict keeps no checkpoint,
    so nothing is reused or read again)."""

    boxes: int = 0


def _summary(frame: pd.DataFrame, boxes: pd.DataFrame, skipped: collections.Counter, seconds: float,
             output: Optional[Path]) -> CropSummary:
    failed = frame[frame["status"] != "ok"]
    return CropSummary(
        total=len(frame), ok=int((frame["status"] == "ok").sum()), failed=len(failed),
        failed_by_reason=dict(sorted(failed["error"].value_counts().items())),
        skipped=sum(skipped.values()), skipped_by_reason=dict(sorted(skipped.items())),
        labels={str(k): int(v) for k, v in sorted(frame["label"].dropna().value_counts().items())},
        boxes=len(boxes), processed=len(frame), seconds=round(seconds, 3),
        output=str(output) if output is not None else None)


def _metadata(classifier: LoadedClassifier, detections: Detections, options: PredictOptions,
              settings: dict[str, Any], top_k: int, frame: pd.DataFrame, summary: CropSummary,
              warnings: list[str]) -> dict[str, Any]:
    from ecoclassify import __version__

    return {
        "ecoclassify": __version__,
        "created": now_iso(),
        "model": str(classifier.path),
        "classes": list(classifier.classes),
        "image_size": list(classifier.image_size),
        "roots": sorted(frame["root"].unique().tolist()),
        "detections": {"file": str(detections.path), "format": detections.format, "summary": detections.summary()},
        "options": {"batch_size": options.batch_size, "top_k": top_k, "threshold": options.threshold,
                    "recursive": options.recursive, "allow_truncated": options.allow_truncated,
                    "max_pixels": options.max_pixels, "detection_categories": list(options.detection_categories),
                    **settings},
        "columns": list(frame.columns),
        "summary": summary.as_dict(),
        "warnings": warnings,
    }
