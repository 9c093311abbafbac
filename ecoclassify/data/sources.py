"""Data sources: turn ``data.source`` (folders, csv, coco, demo, camtrapdp) into one table of samples.

Every source returns a pandas DataFrame with at least ``filepath`` (absolute path as a
string) and ``label``, plus the optional columns it knows: ``site``, ``datetime``,
``sequence``, ``split`` and, for CSV files, any extra column (usable as ``group_by``).
Nothing here opens the images; :mod:`ecoclassify.data.scan` does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ecoclassify.config import DataConfig
from ecoclassify.data.camtrapdp import one_row_per_image, read_camtrapdp, uses_own_boxes
from ecoclassify.data.demo import ensure_demo_dataset
from ecoclassify.data.labels import drop_multi_labelled, refuse_multiple_labels
from ecoclassify.data.discovery import discover_images, is_hidden
from ecoclassify.errors import DataError

log = logging.getLogger(__name__)

EXCLUDED_COLUMNS = ["filepath", "label", "error", "detail"]
#: Reasons for which a listed image is left out without being opened (see ``_path_problem``).
REFUSED_REASONS = ("outside_root", "undecodable_name", "invalid_path")

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
        excluded: Listed images left out without being opened, with the reason (``filepath``,
            ``label``, ``error``, ``detail``; printable paths): paths that must not be opened
            (see :func:`_refuse_unsafe_paths`) and images left out on purpose
            (``data.multi_label: drop``).
    """

    samples: pd.DataFrame
    root: Path
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXCLUDED_COLUMNS))


def load_source(data: DataConfig) -> SourceResult:
    """Read the configured source into a samples table, label filter applied.

    Raises:
        DataError: The root or labels file is missing or malformed, an image has more than one
            label, or a label filter names labels that do not exist.
    """
    readers = {"folders": _read_folders, "csv": _read_csv, "coco": _read_coco, "demo": _read_demo,
               "camtrapdp": _read_camtrapdp}
    result = readers[data.source](data)
    result.samples = _apply_label_filter(result.samples, data, result.warnings)
    result.samples, refused = _refuse_unsafe_paths(result.samples, result.root, data.allow_outside_root,
                                                    result.warnings)
    if len(refused):
        result.excluded = pd.concat([result.excluded, refused], ignore_index=True) if len(result.excluded) else refused
    result.samples = result.samples.sort_values("filepath", kind="stable").reset_index(drop=True)
    # Names that are not UTF-8 arrive surrogate-escaped and cannot be printed or written as text.
    result.warnings = [printable(w) for w in result.warnings]
    result.skipped = [(printable(str(p)), reason) for p, reason in result.skipped]
    return result


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) and NUL shown as ``\\xNN``.

    Such a string can be printed and written to UTF-8 files (CSV, JSON, HTML) without raising
    ``UnicodeEncodeError``; plain text comes back unchanged.
    """
    text = text.replace("\0", "\\x00")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:  # a file name's raw bytes: show the bytes that are not UTF-8 as \xNN
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no file-name escape (e.g. from JSON)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _path_problem(filepath: str, label: str, real_root: Path, allow_outside_root: bool) -> tuple[str, str] | None:
    """``(reason, detail)`` when a listed image must not be opened, else None."""
    if "\0" in filepath:
        return "invalid_path", "the path contains a NUL byte, which no file name can hold"
    for text in (filepath, label):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "undecodable_name", ("the file or folder name is not valid UTF-8 (shown with \\x escapes), so it "
                                        "cannot be written to splits.csv and read back; rename it")
    if allow_outside_root:
        return None
    try:
        target = Path(filepath).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: pre-3.13 pathlib's "Symlink loop"
        return "invalid_path", printable(f"the path cannot be resolved ({exc})")
    if not target.is_relative_to(real_root):
        return "outside_root", printable(f"it leads to {target}, outside {real_root}; set "
                                         "data.allow_outside_root: true to use images outside the root")
    return None


def _refuse_unsafe_paths(samples: pd.DataFrame, root: Path, allow_outside_root: bool,
                         warnings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off images that must not be used: outside the root, undecodable names, NUL bytes.

    Paths from a CSV or COCO file must never lead outside the folder the user named (``..``,
    absolute paths, symlinks out), unless ``allow_outside_root``. Names that are not UTF-8 are
    left out too, so ``validate`` and ``train`` agree and nothing crashes writing ``splits.csv``.

    Returns:
        ``(usable samples, excluded)``; ``excluded`` has ``EXCLUDED_COLUMNS`` with printable paths.
    """
    real_root = Path(root).resolve()
    problems = [_path_problem(str(fp), str(label), real_root, allow_outside_root)
                for fp, label in zip(samples["filepath"], samples["label"])]
    bad = pd.Series([p is not None for p in problems], index=samples.index, dtype=bool)
    excluded = pd.DataFrame(
        [{"filepath": printable(str(fp)), "label": printable(str(label)), "error": problem[0], "detail": problem[1]}
         for fp, label, problem in zip(samples["filepath"], samples["label"], problems) if problem is not None],
        columns=EXCLUDED_COLUMNS)
    if len(excluded):
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(excluded["error"].value_counts().items()))
        warnings.append(f"{len(excluded)} image(s) left out unopened ({counts}), e.g. {excluded['filepath'].iloc[0]}: "
                        f"{excluded['detail'].iloc[0]}")
    return samples[~bad], excluded


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
        split_dirs = {p.name: SPLIT_NAMES[p.name.lower()] for p in _subdirs(root, root, skipped)
                      if p.name.lower() in SPLIT_NAMES}
        if "train" not in split_dirs.values():
            raise DataError(
                f"data.split.method 'predefined' with source 'folders' needs {root}/train/<class>/ "
                f"(and val/, test/). Found folders: {', '.join(p.name for p in _subdirs(root)) or 'none'}"
            )
        parents = [(root / name, split) for name, split in sorted(split_dirs.items())]
    else:
        parents = [(root, None)]
    for parent, split in parents:
        class_dirs = _subdirs(parent, root, skipped)
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
    frame = refuse_multiple_labels(frame, str(path), warnings)
    return SourceResult(frame.reset_index(drop=True), root, warnings)


def _read_coco(data: DataConfig) -> SourceResult:
    path = _existing_file(data.labels, "data.labels")
    root = data.root or path.parent
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the COCO Camera Traps file {path}: {exc}") from None
    except RecursionError:
        raise DataError(f"cannot read the COCO Camera Traps file {path}: its lists or objects are nested too "
                        "deeply to be COCO Camera Traps JSON") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise DataError(f"{path} is not COCO Camera Traps JSON: it needs a list '{key}'")
    try:
        _check_coco_ids(path, coco)
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
    dropped = pd.DataFrame(columns=EXCLUDED_COLUMNS)
    if data.multi_label == "drop":
        frame, dropped = drop_multi_labelled(frame, f"in {path}", warnings)
    try:
        frame = refuse_multiple_labels(frame, str(path), warnings)
    except DataError as exc:
        raise DataError(f"{exc} Or set data.multi_label: drop to leave them out (listed in excluded.csv).") from None
    for column in ("site", "datetime", "sequence", "frame_num", "seq_num_frames"):
        if (frame[column] == "").all():
            frame = frame.drop(columns=column)
    return SourceResult(frame.reset_index(drop=True), root, warnings, excluded=dropped)


def _read_camtrapdp(data: DataConfig) -> SourceResult:
    """A Camtrap DP package's human observations (see :mod:`ecoclassify.data.camtrapdp`)."""
    if data.labels is None or not data.labels.exists():
        raise DataError(f"data.labels must be an existing datapackage.json or its folder. Received: {str(data.labels)!r}")
    own_boxes = data.crops is not None and uses_own_boxes(data.labels, data.crops.detections)
    frame, root, warnings, dropped = read_camtrapdp(data.labels, data.root, "error" if own_boxes else data.multi_label)
    if own_boxes:  # every box has its own label: several species in one image are no multi-label problem
        frame = one_row_per_image(frame, data.include_labels, data.exclude_labels)
    try:
        frame = refuse_multiple_labels(frame, str(data.labels), warnings)
    except DataError as exc:
        raise DataError(f"{exc} Or set data.multi_label: drop to leave them out (listed in excluded.csv).") from None
    return SourceResult(frame.reset_index(drop=True), root, warnings, excluded=dropped)


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


def _check_coco_ids(path: Path, coco: dict) -> None:
    """Ids must be plain values: a dict or list id would crash later as "unhashable"."""
    fields = (("categories", "id"), ("images", "id"), ("annotations", "image_id"), ("annotations", "category_id"))
    for key, name in fields:
        for index, entry in enumerate(coco[key]):
            value = entry[name]
            if isinstance(value, (dict, list)):
                raise DataError(f"{path}: '{key}' entry {index} has a {type(value).__name__} as {name}; ids must "
                                f"be integers or strings. Received: {name}={json.dumps(value)[:80]}")


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


def _subdirs(folder: Path, root: Path | None = None, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Visible subfolders of ``folder``; with ``root``, links to folders outside it are skipped."""
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))
    if root is None:
        return found
    real_root = Path(root).resolve()
    inside = []
    for path in found:
        # A linked class folder may point anywhere; like discovery, never follow a link out of the root.
        if path.is_symlink() and not path.resolve().is_relative_to(real_root):
            if skipped is not None:
                skipped.append((str(path), "symlink_outside_root"))
            continue
        inside.append(path)
    return inside


def _existing_dir(path: Path | None, key: str) -> Path:
    if path is None or not path.is_dir():
        raise DataError(f"{key} must be an existing folder. Received: {str(path)!r}")
    return path


def _existing_file(path: Path | None, key: str) -> Path:
    if path is None or not path.is_file():
        raise DataError(f"{key} must be an existing file. Received: {str(path)!r}")
    return path
