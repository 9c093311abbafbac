"""Boxes from a detector (or from annotators): MegaDetector batch output, COCO Camera Traps, Camtrap DP.

Everything is normalised to one form, :class:`Detections`: per image file (a POSIX path
relative to the image root), its boxes as ``[x_min, y_min, width, height]`` in 0..1 from the
top-left, with confidence and category, in the order the source lists them.

Formats:

- ``md``: MegaDetector batch output 1.0-1.6 (also written by SpeciesNet, AddaxAI and
  Pytorch-Wildlife): ``images[].file``, ``images[].detections[].category/conf/bbox`` (normalised),
  ``detection_categories``, ``images[].failure``.
- ``coco``: COCO Camera Traps with ``annotations[].bbox`` in pixels; the image size comes from
  ``images[].width/height`` or, when missing, from the image file's header. Each box keeps its
  annotation's category name as its own label; names of people and vehicles get those
  categories, every other name is ``animal``. Boxes have confidence 1 unless ``conf``/``score`` says.
- ``camtrapdp``: a Camtrap DP 1.0 package (its folder, ``datapackage.json`` or
  ``observations.csv``): media-level observations with ``bboxX/bboxY/bboxWidth/bboxHeight``,
  joined to ``media.csv`` by ``mediaID`` (``filePath`` when it is a relative path, else
  ``fileName``); ``observationType`` is the category and the box's label is its
  ``scientificName`` (``blank``/``human``/``vehicle`` for those types, as ``data.source:
  camtrapdp`` labels images). Where a person classified an image (``classificationMethod:
  human``), only their observations count, each box with confidence 1.

Bad input never reaches an image: ``file`` entries are only *matched* against images the user
already gave, never opened; absolute paths, ``..`` and NUL bytes are refused and counted;
backslashes become ``/``. Boxes reaching outside the frame are clipped, boxes of no size and
NaN confidences are skipped; every such case is counted in :attr:`Detections.problems`.
A file listed twice is ambiguous: neither entry is used and the file is reported.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional, Sequence

from ecoclassify.data.camtrapdp import TYPE_LABELS
from ecoclassify.errors import DataError

DETECTION_FORMATS = ("auto", "md", "coco", "camtrapdp")
#: MegaDetector's own category ids, used when a file has no ``detection_categories``.
MD_DEFAULT_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}

NO_DETECTION = "no detection above threshold"
MISSING = "not in the detection file"
DUPLICATE = "listed more than once in the detection file"

_PERSON = re.compile(r"\b(human|humans|person|persons|people)\b", re.IGNORECASE)
_VEHICLE = re.compile(r"\b(vehicle|vehicles|car|cars|truck|trucks)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Box:
    """One box, normalised and clipped to the frame.

    Attributes:
        x, y, w, h: ``[x_min, y_min, width, height]`` in 0..1 from the top-left.
        conf: Detection confidence (1.0 for annotations without one).
        category: ``animal``, ``person``, ``vehicle`` or the source's own category name.
        label: The box's own class label where the source has one (COCO, Camtrap DP), else None.
        index: Position of the box in the image's entry of the source file.
    """

    x: float
    y: float
    w: float
    h: float
    conf: float
    category: str
    label: Optional[str] = None
    index: int = 0

    def as_text(self) -> str:
        """``"x,y,w,h"`` with 6 decimals, the form the samples table and outputs use."""
        return ",".join(f"{v:.6f}" for v in (self.x, self.y, self.w, self.h))


@dataclass
class ImageDetections:
    """The detector's result for one image: its boxes, or the detector's failure."""

    file: str
    boxes: list[Box] = field(default_factory=list)
    failure: Optional[str] = None
    raw: Optional[dict[str, Any]] = None


@dataclass
class Detections:
    """A detection file, read and checked.

    Attributes:
        path: The file read.
        format: ``md``, ``coco`` or ``camtrapdp``.
        images: By POSIX path relative to the image root.
        refused: ``(file, reason)`` for entries never used (unsafe paths, duplicates).
        problems: Counts of boxes clipped or skipped, by reason.
        info: MegaDetector ``info`` (copied to per-box outputs), else empty.
        detection_categories: Category id -> name, as in the source.
    """

    path: Path
    format: str
    images: dict[str, ImageDetections]
    refused: list[tuple[str, str]] = field(default_factory=list)
    problems: collections.Counter = field(default_factory=collections.Counter)
    info: dict[str, Any] = field(default_factory=dict)
    detection_categories: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: images, boxes, and what was clipped, skipped or refused."""
        boxes = sum(len(image.boxes) for image in self.images.values())
        text = f"{len(self.images)} image(s) with {boxes} box(es) in {self.path.name} ({self.format})"
        notes = [f"{n} {reason}" for reason, n in sorted(self.problems.items())]
        if self.refused:
            reasons = collections.Counter(reason for _, reason in self.refused)
            notes += [f"{n} entr(y/ies) refused: {reason}" for reason, n in sorted(reasons.items())]
        return text + (f"; {', '.join(notes)}" if notes else "")

    def duplicates(self) -> set[str]:
        """Files listed more than once (none of their entries is used)."""
        return {file for file, reason in self.refused if reason == DUPLICATE}

    def covering(self, files: Iterable[str]) -> int:
        """How many of ``files`` (relative POSIX paths) the detection file has an entry for."""
        return sum(1 for f in files if f in self.images or f in self.duplicates())


def read_detections(path: Path | str, fmt: str = "auto", root: Path | str | None = None) -> Detections:
    """Reads a detection file in any of the supported formats.

    Args:
        path: MegaDetector JSON, COCO Camera Traps JSON, or a Camtrap DP package (folder,
            ``datapackage.json`` or ``observations.csv``).
        fmt: One of ``DETECTION_FORMATS``; ``auto`` tells them apart by their keys.
        root: The image folder; COCO boxes of images without ``width``/``height`` need it to
            read the size from the file's header.

    Returns:
        The checked :class:`Detections`.

    Raises:
        DataError: The file is missing, is not valid JSON/CSV, or lacks a key its format needs
            (the message names the key).
    """
    path = Path(path)
    if fmt not in DETECTION_FORMATS:
        raise DataError(f"the detections format must be one of: {', '.join(DETECTION_FORMATS)}. Received: {fmt!r}")
    if not path.exists():
        raise DataError(f"the detection file does not exist. Received: '{path}'")
    if path.is_dir() or path.suffix.lower() == ".csv" or path.name == "datapackage.json" or fmt == "camtrapdp":
        return _read_camtrapdp(path)
    data = _load_json(path)
    if fmt == "auto":
        fmt = "coco" if isinstance(data, dict) and "annotations" in data and "categories" in data else "md"
    if fmt == "coco":
        return _read_coco(path, data, None if root is None else Path(root))
    return _read_md(path, data)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read the detection file {path}: {exc}") from None
    except RecursionError:
        raise DataError(f"cannot read the detection file {path}: its lists or objects are nested too deeply "
                        "to be a detection file") from None


def normalise_file(value: Any) -> tuple[Optional[str], Optional[str]]:
    """``(relative POSIX path, None)`` for a safe ``file`` entry, else ``(None, reason)``.

    Backslashes (Windows) become ``/``; absolute paths, drive letters, ``..`` and NUL bytes are
    refused: a detection file must never lead to a file outside the image root.
    """
    if not isinstance(value, str) or not value.strip():
        return None, "file is not a non-empty string"
    text = value.replace("\\", "/")
    if "\0" in text:
        return None, "file contains a NUL byte"
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or "://" in text:
        return None, "absolute path (files must be relative to the image folder)"
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if ".." in parts:
        return None, "path with '..' (files must stay inside the image folder)"
    return "/".join(parts), None


def _clip_box(values: Any, conf: Any,
              problems: collections.Counter) -> Optional[tuple[float, float, float, float, float]]:
    """A normalised box clipped to the frame with its confidence, or None (counted) when unusable."""
    try:
        x, y, w, h = (float(v) for v in values)
        conf = float(conf)
    except (TypeError, ValueError):
        problems["boxes skipped: not four numbers and a confidence"] += 1
        return None
    if math.isnan(conf):
        problems["boxes skipped: NaN confidence"] += 1
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        problems["boxes skipped: NaN or infinite coordinates"] += 1
        return None
    if w <= 0 or h <= 0:
        problems["boxes skipped: zero or negative size"] += 1
        return None
    x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(1.0, x + w), min(1.0, y + h)
    if x2 <= x1 or y2 <= y1:
        problems["boxes skipped: outside the frame"] += 1
        return None
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        problems["boxes clipped to the frame"] += 1
    return x1, y1, x2 - x1, y2 - y1, min(max(conf, 0.0), 1.0)


class _Collector:
    """Gathers image entries, refusing unsafe paths and duplicates."""

    def __init__(self) -> None:
        self.images: dict[str, ImageDetections] = {}
        self.refused: list[tuple[str, str]] = []
        self.problems: collections.Counter = collections.Counter()
        self._duplicates: set[str] = set()

    def entry(self, raw_file: Any) -> Optional[str]:
        file, reason = normalise_file(raw_file)
        if file is None:
            self.refused.append((str(raw_file), str(reason)))
        return file

    def add(self, image: ImageDetections) -> None:
        if image.file in self._duplicates:
            return
        if image.file in self.images:
            del self.images[image.file]
            self._duplicates.add(image.file)
            self.refused.append((image.file, DUPLICATE))
            return
        self.images[image.file] = image


def _read_md(path: Path, data: Any) -> Detections:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not MegaDetector batch output: it needs a list 'images' "
                        "(and 'detection_categories'). Received: "
                        + (f"keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__))
    categories = data.get("detection_categories", MD_DEFAULT_CATEGORIES)
    if not isinstance(categories, dict):
        raise DataError(f"{path}: 'detection_categories' must map ids to names. Received: {categories!r}")
    categories = {str(k): str(v) for k, v in categories.items()}
    collector = _Collector()
    for position, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "file" not in entry:
            raise DataError(f"{path}: images[{position}] lacks the key 'file'")
        file = collector.entry(entry["file"])
        if file is None:
            continue
        failure = entry.get("failure")
        detections = entry.get("detections")
        if failure:
            collector.add(ImageDetections(file, [], str(failure), entry))
            continue
        if not isinstance(detections, list):
            raise DataError(f"{path}: images[{position}] ({file}) needs a list 'detections' or a 'failure'. "
                            f"Received: detections={detections!r}")
        boxes = []
        for index, det in enumerate(detections):
            if not isinstance(det, dict) or not {"category", "conf", "bbox"} <= set(det):
                missing = sorted({"category", "conf", "bbox"} - set(det if isinstance(det, dict) else ()))
                raise DataError(f"{path}: images[{position}].detections[{index}] ({file}) lacks the key(s) "
                                f"{', '.join(missing)}")
            bbox = det["bbox"]
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                collector.problems["boxes skipped: not four numbers and a confidence"] += 1
                continue
            clipped = _clip_box(bbox, det["conf"], collector.problems)
            if clipped is not None:
                category = categories.get(str(det["category"]), str(det["category"]))
                label = det.get("gt_label") if isinstance(det.get("gt_label"), str) else None
                boxes.append(Box(*clipped, category=category, label=label, index=index))
        collector.add(ImageDetections(file, boxes, None, entry))
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return Detections(path, "md", collector.images, collector.refused, collector.problems, info, categories)


def coco_category(name: str) -> str:
    """``person``, ``vehicle`` or ``animal`` for a COCO category name."""
    if _PERSON.search(name.replace("_", " ")):
        return "person"
    if _VEHICLE.search(name.replace("_", " ")):
        return "vehicle"
    return "animal"


def _read_coco(path: Path, data: Any, root: Optional[Path]) -> Detections:
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{path} is not COCO Camera Traps JSON: it needs a list '{key}'")
    try:
        names = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {im["id"]: im for im in data["images"]}
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: a COCO entry lacks the key {exc}") from None
    collector = _Collector()
    by_image: dict[Any, list[dict]] = collections.defaultdict(list)
    for position, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{path}: annotations[{position}] lacks the key 'image_id'")
        by_image[ann["image_id"]].append(ann)
    for image_id, image in images.items():
        if not isinstance(image, dict) or "file_name" not in image:
            raise DataError(f"{path}: the image with id {image_id!r} lacks the key 'file_name'")
        file = collector.entry(image["file_name"])
        if file is None:
            continue
        annotations = by_image.get(image_id, [])
        size = _coco_size(image, file, root) if any("bbox" in a for a in annotations) else None
        boxes = []
        for index, ann in enumerate(annotations):
            if "bbox" not in ann:
                continue  # an image-level label (e.g. empty), not a box
            bbox = ann["bbox"]
            if size is None or not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                collector.problems["boxes skipped: no image size or not four numbers"] += 1
                continue
            width, height = size
            try:
                scaled = [float(bbox[0]) / width, float(bbox[1]) / height, float(bbox[2]) / width,
                          float(bbox[3]) / height]
            except (TypeError, ValueError):
                collector.problems["boxes skipped: not four numbers and a confidence"] += 1
                continue
            clipped = _clip_box(scaled, ann.get("conf", ann.get("score", 1.0)), collector.problems)
            if clipped is not None:
                name = names.get(ann.get("category_id"), str(ann.get("category_id")))
                boxes.append(Box(*clipped, category=coco_category(name), label=name, index=index))
        collector.add(ImageDetections(file, boxes, None, None))
    categories = {str(k): v for k, v in names.items()}
    return Detections(path, "coco", collector.images, collector.refused, collector.problems, {}, categories)


def _coco_size(image: dict, file: str, root: Optional[Path]) -> Optional[tuple[float, float]]:
    width, height = image.get("width"), image.get("height")
    if isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0:
        return float(width), float(height)
    if root is None:
        return None
    from ecoclassify.data.images import ImageReadError, read_header

    target = (root / file).resolve()
    if not target.is_relative_to(root.resolve()):
        return None  # a symlink out of the root: never read
    try:
        header = read_header(target)
    except ImageReadError:
        return None
    return float(header.width), float(header.height)


def _read_camtrapdp(path: Path) -> Detections:
    folder = path if path.is_dir() else path.parent
    observations, media = folder / "observations.csv", folder / "media.csv"
    for table in (observations, media):
        if not table.is_file():
            raise DataError(f"{path} is not a Camtrap DP package: {table.name} is missing in {folder}")
    media_rows = _csv_rows(media, ("mediaID", "filePath", "fileName"))
    obs_rows = _csv_rows(observations, ("mediaID", "observationType", "bboxX", "bboxY", "bboxWidth", "bboxHeight"))
    collector = _Collector()
    files: dict[str, Optional[str]] = {}
    for row in media_rows:
        file_path = row.get("filePath", "")
        chosen = file_path if file_path and "://" not in file_path else row.get("fileName", "")
        files[row["mediaID"]] = collector.entry(chosen)
    boxes: dict[str, list[Box]] = collections.defaultdict(list)
    seen: set[str] = set()
    # A person's observations of an image replace the machine's (Agouti, Trapper and ecoclassify's
    # reviewed exports keep both): its boxes would otherwise be cut twice.
    reviewed = {row.get("mediaID", "") for row in obs_rows if row.get("classificationMethod") == "human"}
    for index, row in enumerate(obs_rows):
        media_id = row.get("mediaID", "")
        if not media_id or files.get(media_id) is None:
            continue  # event-level observations have no media; refused files are already listed
        human = row.get("classificationMethod") == "human"
        if media_id in reviewed and not human:
            continue
        file = str(files[media_id])
        seen.add(file)
        values = [row.get(k, "") for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")]
        if not all(values):
            continue  # an observation without a box (e.g. blank): the image is seen, with no box
        # classificationProbability is the certainty of the class; a box a person kept is certain.
        conf = 1.0 if human else row.get("classificationProbability") or 1.0
        clipped = _clip_box(values, conf, collector.problems)
        if clipped is not None:
            kind = row.get("observationType") or "animal"
            label = _observation_label(kind, row.get("scientificName") or "")
            boxes[file].append(Box(*clipped, category=kind, label=label, index=index))
    for file in sorted(seen):
        collector.add(ImageDetections(file, boxes.get(file, []), None, None))
    return Detections(observations, "camtrapdp", collector.images, collector.refused, collector.problems, {}, {})


def _observation_label(kind: str, scientific_name: str) -> Optional[str]:
    """A Camtrap DP box's own label, as ``data.source: camtrapdp`` labels images: the taxon, or blank/human/vehicle."""
    if kind == "animal" or kind not in TYPE_LABELS:
        return scientific_name.strip() or None
    return kind


def _csv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [key for key in required if key not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path} lacks the column(s) {', '.join(missing)} that Camtrap DP requires")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def kept_boxes(image: ImageDetections, min_confidence: float, categories: Optional[Sequence[str]],
               boxes: str = "all") -> list[Box]:
    """The boxes a classifier looks at: confident enough, of the wanted categories; one or all.

    Args:
        image: One image's detections.
        min_confidence: Boxes below it are ignored.
        categories: Category names to keep (e.g. ``["animal"]``); None keeps every category.
        boxes: ``all`` (every box above the threshold) or ``best`` (the most confident only).

    Returns:
        Boxes, most confident first (ties in source order).
    """
    wanted = None if categories is None else {c.lower() for c in categories}
    kept = [b for b in image.boxes if b.conf >= min_confidence and (wanted is None or b.category.lower() in wanted)]
    kept.sort(key=lambda b: (-b.conf, b.index))
    return kept[:1] if boxes == "best" else kept


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` from the ``"x,y,w,h"`` text of :meth:`Box.as_text`."""
    x, y, w, h = (float(v) for v in text.split(","))
    return x, y, w, h
