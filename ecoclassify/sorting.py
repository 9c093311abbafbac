"""``ecoclassify sort``: file images into one folder per label, reversibly and without overwriting.

``DEST/<label>/<filepath>`` keeps each image's path below its root (two cameras' ``IMG_0001.JPG``
stay apart); with ``flat`` everything goes straight into ``DEST/<label>/``. Below ``min_score``
(or labelled ``unknown`` by ``--threshold``) an image goes to ``unknown/``, a file that could
not be read to ``failed/``. An existing file is never replaced: the new name gets ``-2``,
``-3``... before its extension.

Every sort writes a manifest (csv: ``source``, ``destination``, ``dest``, ``folder``, ``mode``,
``status``, ``detail``) *before* touching a file and again when done, both atomically, so
:func:`undo_sort` can restore even a sort that was killed half way: it looks at what is on
disk, not at what the manifest claims happened.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.predict_io import CSV_ENCODING_ERRORS, read_predictions
from ecoclassify.run import atomic_write
from ecoclassify.sequences import UNKNOWN

MODES = ("copy", "symlink", "move")
FAILED = "failed"
MANIFEST_COLUMNS = ("source", "destination", "dest", "folder", "mode", "status", "detail")
# Characters that are not allowed in folder names on the FAT/exFAT cards images come from.
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')

ProgressCallback = Callable[[int, int], None]


class SortInterrupted(RunError):
    """Sorting stopped by Ctrl-C; the manifest records what was done, for ``--undo``."""

    exit_code = 130


def sort(
    predictions: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    mode: str = "copy",
    min_score: float | None = None,
    dry_run: bool = False,
    flat: bool = False,
    by_sequence: bool = False,
    manifest: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Copy, link or move the images of a predictions file into ``dest/<label>/``.

    Args:
        predictions: The csv or json output of ``ecoclassify predict``.
        dest: Destination folder (created when needed).
        mode: ``copy``, ``symlink`` or ``move``.
        min_score: Images whose score is below it go to ``unknown/``.
        dry_run: Only plan: touch nothing, write no manifest.
        flat: Put files directly in ``dest/<label>/`` instead of keeping their sub-folders.
        by_sequence: Use ``sequence_label``/``sequence_score`` (predict with a sequence gap).
        manifest: Where to write the manifest; default ``dest/sort-manifest-<time>.csv``.
        progress: Called as ``progress(advance, total)`` as files are done.

    Returns:
        The manifest: one row per image with ``status`` ``planned`` (dry run), ``done``,
        ``missing`` (the source is gone) or ``error`` (with ``detail``);
        ``frame.attrs["manifest"]`` is its path (None for a dry run).

    Raises:
        ConfigError: An option is invalid.
        DataError: The predictions file cannot be read or lacks the needed columns.
        RunError: The manifest cannot be written where asked.
        SortInterrupted: Ctrl-C; the manifest is saved (exit code 130).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of: {', '.join(MODES)}. Received: mode={mode!r}")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not 0 <= min_score <= 1):
        raise ConfigError(f"min_score must be between 0 and 1. Received: min_score={min_score!r}")
    frame, _ = read_predictions(predictions)
    label_column, score_column = ("sequence_label", "sequence_score") if by_sequence else ("label", "score")
    if label_column not in frame.columns or score_column not in frame.columns:
        hint = " (run predict with --sequence-gap)" if by_sequence else ""
        raise DataError(f"{predictions} has no {label_column}/{score_column} columns{hint}")
    dest = Path(os.path.abspath(dest))
    plan = _plan(frame, dest, mode, min_score, flat, label_column, score_column)
    if dry_run:
        plan.attrs["manifest"] = None
        return plan
    manifest_path = Path(manifest) if manifest is not None else _new_manifest_path(dest)
    if manifest_path.exists():
        raise RunError(f"the manifest {manifest_path} exists; a manifest is never overwritten (it is how a sort is "
                       "undone). Give another --manifest path.")
    _write_manifest(manifest_path, plan)  # first, so even a killed sort can be undone
    statuses, details = list(plan["status"]), list(plan["detail"])
    done = 0
    try:
        for i, row in enumerate(plan.itertuples(index=False)):
            statuses[i], details[i] = _execute(Path(row.source), Path(row.destination), mode)
            done += 1
            if progress is not None:
                progress(1, len(plan))
    except KeyboardInterrupt:
        raise SortInterrupted(f"Interrupted after {done} of {len(plan)} files. The manifest {manifest_path} records "
                              f"them: undo with `ecoclassify sort --undo {manifest_path}`.") from None
    finally:
        plan["status"], plan["detail"] = statuses, details
        _write_manifest(manifest_path, plan)
    plan.attrs["manifest"] = str(manifest_path)
    return plan


def _plan(frame: pd.DataFrame, dest: Path, mode: str, min_score: float | None, flat: bool,
          label_column: str, score_column: str) -> pd.DataFrame:
    reserved: set[str] = set()
    rows = []
    for record in frame.to_dict("records"):
        folder = _folder_for(record, label_column, score_column, min_score)
        relative = _safe_relative(str(record["filepath"]), flat)
        destination = _free_name(dest / folder / relative, reserved)
        source = Path(str(record["root"])) / str(record["filepath"])
        rows.append({"source": str(source), "destination": str(destination), "dest": str(dest), "folder": folder,
                     "mode": mode, "status": "planned", "detail": ""})
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def _folder_for(record: dict, label_column: str, score_column: str, min_score: float | None) -> str:
    if record["status"] != "ok":
        return FAILED
    label, score = record[label_column], record[score_column]
    if label is None or (isinstance(label, float) and pd.isna(label)) or label == UNKNOWN:
        return UNKNOWN
    if min_score is not None and not score >= min_score:
        return UNKNOWN
    return folder_name(str(label))


def folder_name(label: str) -> str:
    """A label as a folder name that is valid everywhere: no separators, no leading dots."""
    name = _UNSAFE.sub("_", label).strip().lstrip(".").rstrip(". ")
    return name or "_"


def _safe_relative(filepath: str, flat: bool) -> Path:
    parts = [part for part in Path(filepath).parts if part not in ("", ".")]
    if flat or not parts or Path(filepath).is_absolute() or ".." in parts:
        return Path(Path(filepath).name)
    return Path(*parts)


def _free_name(path: Path, reserved: set[str]) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``...: the first that neither exists nor is planned."""
    candidate, number = path, 1
    while str(candidate) in reserved or os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    reserved.add(str(candidate))
    return candidate


def _new_manifest_path(dest: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return _free_name(dest / f"sort-manifest-{stamp}.csv", set())


def _write_manifest(path: Path, plan: pd.DataFrame) -> None:
    try:
        # A file name that is not UTF-8 is kept as its bytes, as in the predictions csv.
        atomic_write(path, lambda tmp: plan.to_csv(tmp, index=False, errors=CSV_ENCODING_ERRORS))
    except OSError as exc:
        raise RunError(f"cannot write the sort manifest {path}: {exc.strerror or exc}") from None


def _execute(source: Path, destination: Path, mode: str) -> tuple[str, str]:
    if not source.is_file():
        return "missing", "the source file does not exist"
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if mode == "symlink":
            os.symlink(source.absolute(), destination)  # fails rather than replace an existing file
        elif mode == "copy":
            _copy_exclusive(source, destination)
        else:
            _move_exclusive(source, destination)
    except OSError as exc:
        return "error", f"{type(exc).__name__}: {exc.strerror or exc}"
    return "done", ""


def _copy_exclusive(source: Path, destination: Path) -> None:
    """Copies with ``O_EXCL``: an existing destination is an error, never overwritten."""
    with open(source, "rb") as src:
        dst = open(destination, "xb")  # noqa: SIM115 - FileExistsError here leaves nothing to clean
        try:
            with dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            shutil.copystat(source, destination)  # keeps the camera's file times
        except BaseException:
            destination.unlink(missing_ok=True)  # a partial copy is ours to remove
            raise


def _move_exclusive(source: Path, destination: Path) -> None:
    """Moves without ever replacing ``destination``.

    A hard link fails if the destination exists, so link-then-unlink is an atomic,
    non-overwriting rename. File systems without hard links (FAT, exFAT) or another device
    get an exclusive copy followed by deleting the source.
    """
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        _copy_exclusive(source, destination)
    source.unlink()


def undo_sort(manifest: str | os.PathLike) -> pd.DataFrame:
    """Reverses a sort from its manifest, judging each file by what is on disk now.

    Moves are moved back (unless something new sits at the original place: ``conflict``);
    copies and links made by the sort are deleted, but a copy is kept when its original is
    gone. Folders the sort created and left empty are removed.

    Args:
        manifest: The csv written by :func:`sort`.

    Returns:
        The manifest with an ``undo`` column: ``restored``, ``removed``, ``kept``,
        ``conflict``, ``not_sorted`` (nothing to undo) or ``error: ...``.

    Raises:
        DataError: The manifest cannot be read or is not a sort manifest.
    """
    manifest = Path(manifest)
    try:
        plan = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding_errors=CSV_ENCODING_ERRORS)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the sort manifest {manifest}: {exc}") from None
    missing = set(MANIFEST_COLUMNS) - set(plan.columns)
    if missing:
        raise DataError(f"{manifest} is not a sort manifest: it lacks {', '.join(sorted(missing))}")
    outcomes = []
    for row in plan.itertuples(index=False):
        outcomes.append(_undo_one(Path(row.source), Path(row.destination), row.mode))
    plan["undo"] = outcomes
    folders = {(Path(row.destination).parent, Path(row.dest)) for row in plan.itertuples(index=False)}
    for folder, dest in sorted(folders, key=lambda pair: len(pair[0].parts), reverse=True):
        _remove_empty_folders(folder, stop=dest)
    atomic_write(manifest, lambda tmp: plan.to_csv(tmp, index=False, errors=CSV_ENCODING_ERRORS))
    return plan


def _undo_one(source: Path, destination: Path, mode: str) -> str:
    try:
        if mode == "move":
            if not os.path.lexists(destination):
                return "not_sorted"
            if os.path.lexists(source):
                return "conflict"
            source.parent.mkdir(parents=True, exist_ok=True)
            _move_exclusive(destination, source)
            return "restored"
        if mode == "symlink":
            if not destination.is_symlink():
                return "not_sorted"
            destination.unlink()
            return "removed"
        if not destination.is_file():
            return "not_sorted"
        if not source.is_file():
            return "kept"  # the copy is the only one left
        destination.unlink()
        return "removed"
    except OSError as exc:
        return f"error: {type(exc).__name__}: {exc.strerror or exc}"


def _remove_empty_folders(folder: Path, stop: Path) -> None:
    """Removes ``folder`` and its parents while they are empty, never ``stop`` or above it."""
    stop = stop.absolute()
    folder = folder.absolute()
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): leave it
            return
        folder = folder.parent
