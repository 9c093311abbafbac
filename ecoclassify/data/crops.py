"""Crops of detector boxes: cut every box of an image from one decode, and crop samples for training.

:func:`load_crops` opens an image once, applies its EXIF orientation exactly as
:func:`ecoclassify.data.images.load_rgb` does (MegaDetector's boxes are in the oriented frame),
and cuts all its boxes. Each box is widened by ``margin`` (a fraction of its size on every
side), made square around its centre when ``square`` is set (so the animal is not stretched
when resized to the model's square input), kept inside the frame, and resized to the model
size. A JPEG is decoded at a reduced scale (DCT draft) when every crop stays at least as large
as the model input, so cropping a 12 MP frame costs little more than reading it whole.

:func:`expand_to_crops` turns the image samples of ``prepare_data`` into one sample per kept
box, after the split: the crops of one image always share its split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ecoclassify.data.camtrapdp import BOX_LABELS_COLUMN
from ecoclassify.data.detections import (
    DUPLICATE,
    MISSING,
    NO_DETECTION,
    Box,
    Detections,
    kept_boxes,
    read_detections,
)
from ecoclassify.data.exif import capture_time
from ecoclassify.data.truncation import TRUNCATION_GATE
from ecoclassify.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    _check_size,
    _open_image,
    _pillow_failure,
    _resample_filter,
    _upright_rgb,
)
from ecoclassify.errors import DataError

BoxTuple = tuple[float, float, float, float]

#: The ``error`` code in ``excluded.csv`` of an image that gives no crop, by reason.
_EXCLUSION_CODES = {NO_DETECTION: "no_detection", MISSING: "not_in_detections", DUPLICATE: "duplicate_in_detections"}


@dataclass(frozen=True, eq=False)
class LoadedCrops:
    """The crops of one image, in the order of the boxes asked for.

    Attributes:
        arrays: One ``uint8`` ``(height, width, 3)`` array per box (the whole frame for ``None``).
        width, height: The image's size after EXIF orientation.
        datetime: EXIF capture time, if any.
    """

    arrays: list[np.ndarray]
    width: int
    height: int
    datetime: object


def crop_window(box: Optional[BoxTuple], width: int, height: int, margin: float,
                square: bool) -> tuple[float, float, float, float]:
    """The pixel window ``(left, top, right, bottom)`` cut for a normalised box in a ``width`` x ``height`` frame.

    ``None`` is the whole frame. The margin is added on every side; a square window is centred
    on the box and shifted (not shrunk) to stay inside the frame where the frame allows.
    """
    if box is None:
        return 0.0, 0.0, float(width), float(height)
    x, y, w, h = box
    bw, bh = w * width, h * height
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    bw, bh = bw * (1 + 2 * margin), bh * (1 + 2 * margin)
    if square:
        bw = bh = max(bw, bh)
    bw, bh = min(bw, width), min(bh, height)
    left = min(max(cx - bw / 2, 0.0), width - bw)
    top = min(max(cy - bh / 2, 0.0), height - bh)
    return left, top, left + bw, top + bh


def box_pixels(box: BoxTuple, width: int, height: int) -> float:
    """The longer side of a normalised box in pixels of a ``width`` x ``height`` frame."""
    return max(box[2] * width, box[3] * height)


def _draft_request(boxes: Sequence[Optional[BoxTuple]], width: int, height: int, size: tuple[int, int],
                   margin: float, square: bool) -> tuple[int, int]:
    """The smallest (width, height) the frame may be decoded at so every crop keeps at least ``size``."""
    target_h, target_w = size
    scale = 0.0
    for box in boxes:
        left, top, right, bottom = crop_window(box, width, height, margin, square)
        scale = max(scale, target_w / max(right - left, 1e-6), target_h / max(bottom - top, 1e-6))
    scale = min(1.0, scale) if boxes else 1.0
    return max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))


def _decode_crops(path: Path, boxes: Sequence[Optional[BoxTuple]], size: tuple[int, int], margin: float,
                  square: bool, max_pixels: Optional[int], resample: Image.Resampling) -> LoadedCrops:
    def request(width: int, height: int) -> Optional[tuple[int, int]]:
        return _draft_request(boxes, width, height, size, margin, square) if boxes else None

    with _open_image(path, max_pixels) as img:
        try:
            with _upright_rgb(img, request) as (out, width, height, exif):
                # The decoded frame may be drafted: windows are computed in its own pixels.
                scale_x, scale_y = out.width / width, out.height / height
                arrays = []
                for box in boxes:
                    left, top, right, bottom = crop_window(box, width, height, margin, square)
                    region = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
                    crop = out.resize((size[1], size[0]), resample=resample, box=region)
                    arrays.append(np.array(crop, dtype=np.uint8))
        except (ImageReadError, MemoryError):
            raise
        except Exception as exc:
            raise _pillow_failure(path, exc, stage="decode") from exc
        return LoadedCrops(arrays, width, height, capture_time(exif))


def load_crops(
    path: Path | str,
    boxes: Sequence[Optional[BoxTuple]],
    size: tuple[int, int],
    *,
    margin: float = 0.0,
    square: bool = False,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
    resample: str | Image.Resampling = "bilinear",
) -> LoadedCrops:
    """Decodes an image once and cuts every box from it, each resized to ``size``.

    Args:
        path: Image file.
        boxes: Normalised ``(x_min, y_min, width, height)`` boxes in the oriented frame; ``None``
            stands for the whole frame (resized without margin or squaring).
        size: ``(height, width)`` of every crop.
        margin: Added on every side, as a fraction of the box's width and height.
        square: Make each window square (around the box's centre) before resizing.
        max_pixels: As in :func:`~ecoclassify.data.images.load_rgb`.
        allow_truncated: As in :func:`~ecoclassify.data.images.load_rgb`.
        resample: As in :func:`~ecoclassify.data.images.load_rgb`.

    Returns:
        The crops and the oriented size of the image.

    Raises:
        ImageReadError: With one of the reason codes of :mod:`ecoclassify.data.images`.
    """
    path = Path(path)
    checked = _check_size(size)
    assert checked is not None
    resample_filter = _resample_filter(resample)
    try:
        with TRUNCATION_GATE.strict():
            return _decode_crops(path, boxes, checked, margin, square, max_pixels, resample_filter)
    except ImageReadError as exc:
        if not (allow_truncated and exc.reason == "truncated"):
            raise
    with TRUNCATION_GATE.tolerant():
        return _decode_crops(path, boxes, checked, margin, square, max_pixels, resample_filter)


def box_of(text: str) -> Optional[BoxTuple]:
    """The box of a samples table's ``box`` cell: ``"x,y,w,h"``, or ``""`` for the whole frame."""
    if not text:
        return None
    x, y, w, h = (float(v) for v in str(text).split(","))
    return x, y, w, h


def _boxes_of_images(samples: pd.DataFrame, crops: Any, root: Path
                      ) -> tuple[list[tuple[list[Box], Optional[str]]], int, Detections]:
    """Per sample: ``(kept boxes, None)``, or ``([], why it has no detector result)``; and boxes too small.

    Raises:
        DataError: The detection file covers none of the images.
    """
    detections = read_detections(crops.detections, crops.format, root)
    absolute_root = Path(os.path.abspath(root))
    relative = [_relative(fp, absolute_root) for fp in samples["filepath"]]
    if len(samples) and detections.covering(r for r in relative if r is not None) == 0:
        examples = ", ".join(list(detections.images)[:3]) or "none"
        raise DataError(f"data.crops.detections {crops.detections} covers none of the {len(samples)} images: its "
                        f"'file' entries must be relative to {root}. Entries look like: {examples}. Received "
                        f"images like: {', '.join(str(r) for r in relative[:3])}")
    duplicates = detections.duplicates()
    result: list[tuple[list[Box], Optional[str]]] = []
    too_small = 0
    widths = samples["width"] if "width" in samples.columns else pd.Series(0, index=samples.index)
    heights = samples["height"] if "height" in samples.columns else pd.Series(0, index=samples.index)
    for rel, width, height in zip(relative, widths, heights):
        image = detections.images.get(rel) if rel is not None else None
        if rel in duplicates:
            result.append(([], DUPLICATE))
        elif image is None:
            result.append(([], MISSING))
        elif image.failure:
            result.append(([], f"the detector failed on it: {image.failure}"))
        else:
            boxes = kept_boxes(image, crops.min_confidence, crops.categories, crops.boxes)
            big = [b for b in boxes if box_pixels((b.x, b.y, b.w, b.h), int(width or 0), int(height or 0))
                   >= crops.min_size_px]
            too_small += len(boxes) - len(big)
            result.append((big, None))
    return result, too_small, detections


def label_empty_images(samples: pd.DataFrame, crops: Any, root: Path) -> pd.DataFrame:
    """Relabels images whose detector result holds no usable box as ``crops.empty_label``.

    Done before the class checks and the split, so the empty class is split like any other.
    A covering error is left for :func:`expand_to_crops` to report.
    """
    try:
        boxes, _, _ = _boxes_of_images(samples, crops, root)
    except DataError:
        return samples
    empty = [not kept and reason is None for kept, reason in boxes]
    samples = samples.copy()
    samples.loc[empty, "label"] = crops.empty_label
    return samples


def expand_to_crops(samples: pd.DataFrame, excluded: pd.DataFrame, crops: Any, root: Path
                    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One sample per kept box; images without one go to ``empty_label`` or to ``excluded``.

    Args:
        samples: Split, scanned image samples (``filepath`` absolute, ``width``/``height`` known).
        excluded: The excluded table so far.
        crops: The ``data.crops`` config section.
        root: The image root the detection file's ``file`` entries are relative to.

    Returns:
        ``(crop samples, excluded, warnings)``. Crop samples keep every column of their image and
        add ``box`` (``"x,y,w,h"``, ``""`` for a whole-frame ``empty_label`` sample),
        ``box_conf`` and ``box_category``; a box with its own label (COCO, Camtrap DP
        annotations, ``gt_label``) is labelled with it when that label is one of the data's labels.
        Images without a detector result (missing from the file, listed twice, failed) are
        excluded with that reason.

    Raises:
        DataError: The detection file covers none of the images.
    """
    boxes_per_image, too_small, detections = _boxes_of_images(samples, crops, root)
    warnings = [f"detections: {detections.summary()}"]
    rows, left_out = [], []
    # A box's own label counts only in the data's vocabulary: an annotator's species name
    # ("Red Fox") must not turn into a class beside the data's own ("carnivore").
    known = set(samples["label"])
    own_labels = BOX_LABELS_COLUMN in samples.columns  # a Camtrap DP package's own boxes: same vocabulary
    if own_labels:
        known |= {label for text in samples[BOX_LABELS_COLUMN] for label in str(text).split(";") if label}
    filtered = 0
    for sample, (boxes, reason) in zip(samples.to_dict("records"), boxes_per_image):
        if own_labels:  # a box whose label the label filter left out is no sample, never one of another class
            kept = [box for box in boxes if box.label is None or box.label in known]
            filtered, boxes = filtered + len(boxes) - len(kept), kept
        if reason is None and not boxes and crops.empty_label is not None:
            rows.append({**sample, "label": crops.empty_label, "box": "", "box_conf": "", "box_category": ""})
            continue
        if not boxes:
            left_out.append({"filepath": sample["filepath"], "label": sample["label"],
                             "error": _EXCLUSION_CODES.get(reason or NO_DETECTION, "detector_failure"),
                             "detail": reason or NO_DETECTION})
            continue
        for box in boxes:
            own = box.label if box.label in known else None
            rows.append({**sample, "label": own or sample["label"], "box": box.as_text(),
                         "box_conf": f"{box.conf:.4f}", "box_category": box.category})
    expanded = pd.DataFrame(rows, columns=list(samples.columns) + ["box", "box_conf", "box_category"])
    if filtered:
        warnings.append(f"{filtered} box(es) of labels left out by data.include_labels/exclude_labels ignored")
    if too_small:
        warnings.append(f"{too_small} box(es) smaller than data.crops.min_size_px={crops.min_size_px} px ignored")
    if left_out:
        reasons = pd.Series([row["detail"] for row in left_out]).value_counts()
        warnings.append(f"{len(left_out)} image(s) give no crop and are listed in excluded.csv ("
                        + ", ".join(f"{n} {reason}" for reason, n in reasons.items()) + ")")
        excluded = pd.concat([excluded, pd.DataFrame(left_out)], ignore_index=True)
    return expanded, excluded, warnings


#: The ``data.crops`` settings a run records in ``labels.json`` (how its crops were cut).
CROP_SETTINGS = ("min_confidence", "categories", "boxes", "margin", "square", "min_size_px", "empty_label")


def crops_record(crops: Any) -> dict[str, Any]:
    """``{"crops": {settings}}`` for ``labels.json`` of a model trained on crops; ``{}`` for whole frames.

    ``predict --detections`` cuts its crops the same way by default, and warns when a crop
    model meets whole frames or a whole-frame model meets crops.
    """
    if crops is None:
        return {}
    return {"crops": {name: getattr(crops, name) for name in CROP_SETTINGS}}


def _relative(filepath: str, root: Path) -> Optional[str]:
    # Not resolved: the detector named the file by the path it was given, links included.
    try:
        return Path(os.path.abspath(filepath)).relative_to(root).as_posix()
    except ValueError:
        return None
