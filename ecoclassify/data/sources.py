"""Data sources: turn ``data.source`` (folders, csv, coco, demo) into one table of samples.

Every source returns a pandas DataFrame with at least ``filepath`` (absolute path as a
string) and ``label``, plus the optional columns it knows: ``site``, ``datetime``,
``sequence``, ``split`` and, for CSV files, any extra column (usable as ``group_by``).
Nothing here opens the images; :mod:`ecoclassify.data.scan` does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ecoclassify.config import DataConfig
from ecoclassify.data.demo import ensure_demo_dataset
from ecoclassify.data.discovery import discover_images, is_hidden
from ecoclassify.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


@dataclass
class SourceResult:
    """Samples read from a source, with what was noticed on the way.

    Attributes:
        samples: One row per labelled image (``filepath``, ``label``, optional columns).
        root: Folder that relative paths are reported against.
        warnings: Human-readable notes (ignored files, unlabelled images, dropped labels).
        skipped: Files found but not used, as ``(path, reason)``.
        dropped: Labelled images left out on purpose (``data.multi_label: drop``), as rows of
            ``excluded.csv`` (``filepath``, ``label``, ``error``, ``detail``).
    """

    samples: pd.DataFrame
    root: Path
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: pd.DataFrame | None = None


def load_source(data: DataConfig) -> SourceResult:
    """Read the configured source into a samples table, label filter applied.

    Raises:
        DataError: The root or labels file is missing or malformed, an image has more than one
            label, or a label filter names labels that do not exist.
    """
    readers = {"folders": _read_folders, "csv": _read_csv, "coco": _read_coco, "demo": _read_demo}
    result = readers[data.source](data)
    result.samples = _apply_label_filter(result.samples, data, result.warnings)
    result.samples = result.samples.sort_values("filepath", kind="stable").reset_index(drop=True)
    return result


def _read_demo(data: DataConfig) -> SourceResult:
    root = ensure_demo_dataset(data.root, data.demo.images_per_class, data.demo.image_size)
    result = _read_csv_file(root / "labels.csv", root, data.split.method == "predefined")
    result.warnings.insert(0, f"using the synthetic demo data set in {root} (drawn shapes, not real animals)")
    return result


def _read_folders(data: DataConfig) -> SourceResult:
    root = _existing_dir(data.root, "data.root")
    rows: list[dict[str, str]] = []
    warnings: list[str] = []
    skipped: list[tuple[str, str]] = []
    predefined = data.split.method == "predefined"
    if predefined:
        split_dirs = {p.name: SPLIT_NAMES[p.name.lower()] for p in _subdirs(root) if p.name.lower() in SPLIT_NAMES}
        if "train" not in split_dirs.values():
            raise DataError(
                f"data.split.method 'predefined' with source 'folders' needs {root}/train/<class>/ "
                f"(and val/, test/). Found folders: {', '.join(p.name for p in _subdirs(root)) or 'none'}"
            )
        parents = [(root / name, split) for name, split in sorted(split_dirs.items())]
    else:
        parents = [(root, None)]
    for parent, split in parents:
        class_dirs = _subdirs(parent)
        if not class_dirs:
            raise DataError(f"{parent} has no class subfolders: expected {parent}/<class>/<images>")
        for class_dir in class_dirs:
            found = discover_images(class_dir, recursive=True)
            skipped += [(str(path), reason) for path, reason in found.skipped]
            for path in found.images:
                row = {"filepath": str(path), "label": class_dir.name}
                if split is not None:
                    row["split"] = split
                rows.append(row)
            if not found.images:
                warnings.append(f"class folder {class_dir} holds no images")
    loose = [p for p in root.iterdir() if p.is_file() and not is_hidden(p.name)]
    if loose:
        warnings.append(f"{len(loose)} file(s) directly in {root} are ignored: images must be in class subfolders")
    columns = ["filepath", "label"] + (["split"] if predefined else [])
    return SourceResult(pd.DataFrame(rows, columns=columns), root, warnings, skipped)


def _read_csv(data: DataConfig) -> SourceResult:
    labels = _existing_file(data.labels, "data.labels")
    return _read_csv_file(labels, data.root or labels.parent, data.split.method == "predefined")


def _read_csv_file(path: Path, root: Path, predefined: bool = False) -> SourceResult:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read the labels CSV {path}: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("filepath", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"the labels CSV {path} needs the columns filepath and label; missing: {', '.join(missing)}. "
            f"Found columns: {', '.join(frame.columns)}"
        )
    warnings: list[str] = []
    frame["filepath"] = frame["filepath"].str.strip()
    frame["label"] = frame["label"].str.strip()
    unlabelled = frame[(frame["label"] == "") | (frame["filepath"] == "")]
    if len(unlabelled):
        rows = ", ".join(str(i + 2) for i in unlabelled.index[:10])
        warnings.append(f"{len(unlabelled)} row(s) of {path} without filepath or label are ignored (lines {rows})")
        frame = frame.drop(unlabelled.index)
    frame["filepath"] = [str(_absolute(p, root)) for p in frame["filepath"]]
    if "split" in frame.columns:
        # The column only matters for predefined splits; otherwise the split is computed.
        frame = frame.assign(split=_normalise_splits(frame["split"], path)) if predefined else frame.drop(columns="split")
    frame = _refuse_multiple_labels(frame, str(path), warnings)
    return SourceResult(frame.reset_index(drop=True), root, warnings)


def _read_coco(data: DataConfig) -> SourceResult:
    path = _existing_file(data.labels, "data.labels")
    root = data.root or path.parent
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the COCO Camera Traps file {path}: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise DataError(f"{path} is not COCO Camera Traps JSON: it needs a list '{key}'")
    try:
        categories = {c["id"]: str(c["name"]) for c in coco["categories"]}
        images = {im["id"]: im for im in coco["images"]}
        pairs = [(a["image_id"], a["category_id"]) for a in coco["annotations"]]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: a COCO entry lacks the field {exc}") from None
    unknown = sorted({c for _, c in pairs if c not in categories}, key=str)
    if unknown:
        raise DataError(f"{path}: annotations use category ids not in 'categories': {unknown[:10]}")
    orphans = sorted({i for i, _ in pairs if i not in images}, key=str)
    if orphans:
        raise DataError(f"{path}: annotations refer to image ids not in 'images': {orphans[:10]}")
    warnings: list[str] = []
    bad_times: list[str] = []
    rows = []
    for image_id, category_id in pairs:
        image = images[image_id]
        # Windows exports (LILA, Timelapse) write cam1\IMG_0001.JPG; a backslash is never part of a name.
        file_name = str(image.get("file_name", "")).replace("\\", "/")
        captured = image.get("datetime", image.get("date_captured"))
        when = _coco_datetime(captured)
        if when is None and captured not in (None, "", -1, "-1"):
            bad_times.append(f"{file_name}: {captured!r}")
        rows.append({
            "filepath": str(_absolute(file_name, root)),
            "label": categories[category_id],
            "site": _text(image.get("location")),
            "datetime": when or "",
            "sequence": _text(image.get("seq_id")),
            "frame_num": _text(image.get("frame_num")),
            "seq_num_frames": _text(image.get("seq_num_frames")),
        })
    frame = pd.DataFrame(rows, columns=["filepath", "label", "site", "datetime", "sequence", "frame_num",
                                        "seq_num_frames"])
    if bad_times:
        warnings.append(f"{len(set(bad_times))} date(s) in {path} are not a date and time (YYYY-MM-DD HH:MM:SS, "
                        f"YYYY:MM:DD HH:MM:SS or ISO 8601) and are ignored, e.g. {bad_times[0]}")
    unannotated = len(images) - len({i for i, _ in pairs})
    if unannotated:
        warnings.append(f"{unannotated} image(s) in {path} have no annotation and are ignored")
    unused = sorted(set(categories.values()) - {categories[c] for _, c in pairs})
    if unused:
        warnings.append(f"{len(unused)} categor(y/ies) in {path} have no images: {', '.join(unused[:20])}")
    frame = frame.drop_duplicates(["filepath", "label"])  # several boxes of one species = one label
    dropped = None
    if data.multi_label == "drop":
        labels = frame.groupby("filepath")["label"].agg(sorted)
        multi = labels[labels.map(len) > 1]
        dropped = pd.DataFrame({"filepath": multi.index, "label": "", "error": "multiple_labels",
                                "detail": [f"labels: {', '.join(names)}" for names in multi]})
        frame = frame[~frame["filepath"].isin(multi.index)]
        if len(dropped):
            warnings.append(f"{len(dropped)} image(s) in {path} with more than one label are left out "
                            "(data.multi_label: drop) and listed in excluded.csv")
    try:
        frame = _refuse_multiple_labels(frame, str(path), warnings)
    except DataError as exc:
        raise DataError(f"{exc} Or set data.multi_label: drop to leave them out (listed in excluded.csv).") from None
    for column in ("site", "datetime", "sequence", "frame_num", "seq_num_frames"):
        if (frame[column] == "").all():
            frame = frame.drop(columns=column)
    return SourceResult(frame.reset_index(drop=True), root, warnings, dropped=dropped)


def _coco_datetime(value: object) -> str | None:
    """``date_captured`` as ``YYYY-MM-DD HH:MM:SS``; None when absent or not a date and time.

    LILA sets write ``2019-05-06 13:45:00``, the EXIF form ``2019:05:06 13:45:00`` or ISO 8601
    (``2019-05-06T13:45:00``, with fractions or a zone, which is dropped: camera clocks are local).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) < 16:  # a date alone (or less) says nothing about the time of day
        return None
    match = _EXIF_DATETIME.match(text)
    if match:
        text = f"{match.group(1)}-{match.group(2)}-{match.group(3)}{text[10:]}"
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None, microsecond=0).isoformat(sep=" ")


_EXIF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T]")


def _refuse_multiple_labels(frame: pd.DataFrame, where: str, warnings: list[str]) -> pd.DataFrame:
    per_file = frame.groupby("filepath")["label"].nunique()
    multi = per_file[per_file > 1]
    if len(multi):
        examples = "; ".join(
            f"{fp}: {', '.join(sorted(frame.loc[frame['filepath'] == fp, 'label'].unique()))}"
            for fp in list(multi.index)[:5]
        )
        raise DataError(
            f"{len(multi)} image(s) in {where} have more than one label, which a single-label classifier "
            f"cannot learn from (e.g. {examples}). Give each image one label or remove those rows."
        )
    repeated = frame.duplicated("filepath")
    if repeated.any():
        warnings.append(f"{int(repeated.sum())} repeated row(s) for the same image and label in {where} were merged")
        frame = frame[~repeated]
    return frame


def _apply_label_filter(samples: pd.DataFrame, data: DataConfig, warnings: list[str]) -> pd.DataFrame:
    present = set(samples["label"])
    wanted = set(data.include_labels or ()) | set(data.exclude_labels)
    absent = sorted(wanted - present)
    if data.include_labels is not None and absent:
        raise DataError(
            f"data.include_labels names labels that are not in the data: {', '.join(absent)}. "
            f"Labels found: {', '.join(sorted(present))}"
        )
    if absent:
        warnings.append(f"data.exclude_labels names labels not in the data: {', '.join(absent)}")
    keep = ~samples["label"].isin(data.exclude_labels)
    if data.include_labels is not None:
        keep &= samples["label"].isin(data.include_labels)
    if not keep.all():
        warnings.append(f"{int((~keep).sum())} image(s) left out by the label filter")
    return samples[keep]


def _normalise_splits(values: pd.Series, where: Path) -> pd.Series:
    lowered = values.str.strip().str.lower()
    bad = sorted(set(lowered) - set(SPLIT_NAMES))
    if bad:
        raise DataError(
            f"the split column of {where} must hold train, val or test (or training, validation, testing). "
            f"Received: {bad[:10]}"
        )
    return lowered.map(SPLIT_NAMES)


def _absolute(path: str, root: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root) / candidate


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _existing_dir(path: Path | None, key: str) -> Path:
    if path is None or not path.is_dir():
        raise DataError(f"{key} must be an existing folder. Received: {str(path)!r}")
    return path


def _existing_file(path: Path | None, key: str) -> Path:
    if path is None or not path.is_file():
        raise DataError(f"{key} must be an existing file. Received: {str(path)!r}")
    return path
