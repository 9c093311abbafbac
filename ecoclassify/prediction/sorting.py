"""``ecoclassify sort``: file images into one folder per label, reversibly and without overwriting.

``DEST/<label>/<filepath>`` keeps each image's path below its root (two cameras' ``IMG_0001.JPG``
stay apart); with ``flat`` everything goes straight into ``DEST/<label>/``. Below ``min_score``
(or labelled ``unknown`` by ``--threshold``) an image goes to ``unknown/``, a file that could
not be read to ``failed/`` (a class of either name gets ``class-<name>/``). An existing file
is never replaced: the new name gets ``-2``, ``-3``...; a file already sorted there is left as
it is (``already_sorted``), so sorting twice changes nothing.

Every sort writes a manifest (csv: ``source``, ``destination``, ``dest``, ``folder``, ``mode``,
``status``, ``detail``, ``size``, ``sha256``, ``made_folder``) *before* touching a file and
again when done, both atomically, and a journal in between, so :func:`undo_sort` can restore
even a killed sort, touching only what the sort made (see :mod:`ecoclassify.prediction.sort_safety`).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.prediction.outputs import CSV_ENCODING_ERRORS, read_predictions
from ecoclassify.files import atomic_write
from ecoclassify.prediction.sequences import UNKNOWN
from ecoclassify.prediction.sort_safety import (
    RECORD_COLUMNS,
    UnsafePath,
    check_manifest,
    file_digest,
    folder_chain,
    journal_path,
    make_folders,
    merge_journal,
    note,
    open_journal,
    place,
    remove_empty_folders,
    really_inside,
    same_content,
    source_problem,
    symlink_targets,
    symlinked_folder,
)

MODES = ("copy", "symlink", "move")
FAILED = "failed"
MANIFEST_COLUMNS = ("source", "destination", "dest", "folder", "mode", "status", "detail")
# A class whose folder would take one of these names goes to "class-<name>" instead.
RESERVED_FOLDERS = (UNKNOWN, FAILED)
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

    Low scores go to ``unknown/``, unreadable files to ``failed/``; a class whose folder would
    be ``failed`` or ``unknown`` goes to ``class-failed/`` or ``class-unknown/`` instead (a
    label ``unknown`` is the class when the model has one and it is the row's best guess).

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

    A row is refused (``error``, with the reason in ``detail``, nothing written) when its
    ``filepath`` leads outside its root (absolute, or ``..``), when a folder under ``dest`` on
    its way is a symlink, and in ``move`` mode when the source is a symlink or the target of a
    symlink in the same predictions (moving either would leave a dangling link).

    Returns:
        The manifest: one row per image with ``status`` ``planned`` (dry run), ``done``,
        ``already_sorted`` (the same file is already at its place in ``dest``), ``missing``
        (the source is gone) or ``error`` (with ``detail``); for files it created, ``size`` and
        ``sha256``, and ``made_folder`` (the topmost folder it had to create).
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
    columns = {name: list(plan[name]) for name in ("status", "detail", *RECORD_COLUMNS)}
    try:
        journal = open_journal(manifest_path)
    except OSError as exc:
        raise RunError(f"cannot write the sort journal beside {manifest_path}: {exc.strerror or exc}") from None
    done = 0
    try:
        for i, row in enumerate(plan.itertuples(index=False)):
            if row.status == "planned":
                status, detail, record = _execute(Path(row.source), Path(row.destination), dest, mode)
                detail = detail or (row.detail if status == "done" else "")  # keeps "X was taken: saved as X-2"
                columns["status"][i], columns["detail"][i] = status, detail
                for name, value in zip(RECORD_COLUMNS, record):
                    columns[name][i] = value
                note(journal, i, status, detail, record)  # what undo needs if this process is killed
            done += 1
            if progress is not None:
                progress(1, len(plan))
    except KeyboardInterrupt:
        raise SortInterrupted(f"Interrupted after {done} of {len(plan)} files. The manifest {manifest_path} records "
                              f"them: undo with `ecoclassify sort --undo {manifest_path}`.") from None
    finally:
        journal.close()
        for name, values in columns.items():
            plan[name] = values
        _write_manifest(manifest_path, plan)
        journal_path(manifest_path).unlink(missing_ok=True)  # the manifest now holds all of it
    plan.attrs["manifest"] = str(manifest_path)
    return plan


def _plan(frame: pd.DataFrame, dest: Path, mode: str, min_score: float | None, flat: bool,
          label_column: str, score_column: str) -> pd.DataFrame:
    reserved: set[str] = set()
    rows = []
    unknown_is_class = _unknown_is_class(frame, label_column, score_column)
    link_targets = symlink_targets(frame) if mode == "move" else {}
    for position, record in enumerate(frame.to_dict("records")):
        folder = _folder_for(record, label_column, score_column, min_score, bool(unknown_is_class[position]))
        relative = _safe_relative(str(record["filepath"]), flat)
        wanted = dest / folder / relative
        source = Path(str(record["root"])).absolute() / str(record["filepath"])
        status, detail, destination = "planned", "", wanted
        problem = source_problem(str(record["filepath"]), source, mode, link_targets)
        link = None if problem else symlinked_folder(wanted.parent, dest)
        if problem or link is not None:
            status = "error"
            detail = problem or f"{link} is a symlink; sort never writes through a symlinked folder"
        else:
            destination, already = place(wanted, reserved, source, mode)
            if already:
                status = "already_sorted"
            elif destination != wanted:
                detail = f"{wanted.name} was taken: saved as {destination.name}"
        rows.append({"source": str(source), "destination": str(destination), "dest": str(dest), "folder": folder,
                     "mode": mode, "status": status, "detail": detail, "size": "", "sha256": "", "made_folder": ""})
    return pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *RECORD_COLUMNS])


def _unknown_is_class(frame: pd.DataFrame, label_column: str, score_column: str) -> list[bool]:
    """Per row: whether a label ``unknown`` is the model's class of that name rather than "no label".

    The predictions file writes both the same way. It is the class when the model has one
    (a ``prob_unknown`` column) and that class is the row's best guess: its probability (the
    sequence's mean with ``--by-sequence``) equals the row's score.
    """
    column = f"prob_{UNKNOWN}"
    if column not in frame.columns:
        return [False] * len(frame)
    probability = pd.to_numeric(frame[column], errors="coerce")
    if label_column == "sequence_label" and "sequence_id" in frame.columns:
        probability = probability.groupby(frame["sequence_id"]).transform("mean").round(6)
    score = pd.to_numeric(frame[score_column], errors="coerce")
    return ((probability - score).abs() <= 1e-6).fillna(False).tolist()


def _folder_for(record: dict, label_column: str, score_column: str, min_score: float | None,
                unknown_is_class: bool = False) -> str:
    if record["status"] != "ok":
        return FAILED
    label, score = record[label_column], record[score_column]
    if label is None or (isinstance(label, float) and pd.isna(label)) or (label == UNKNOWN and not unknown_is_class):
        return UNKNOWN
    if min_score is not None and not score >= min_score:
        return UNKNOWN
    name = folder_name(str(label))
    return f"class-{name}" if name.casefold() in RESERVED_FOLDERS else name


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


def _execute(source: Path, destination: Path, dest: Path, mode: str) -> tuple[str, str, tuple[str, str, str]]:
    """Does one row: ``(status, detail, (size, sha256, made_folder))``, the record undo checks against."""
    nothing = ("", "", "")
    if not source.is_file():
        return "missing", "the source file does not exist", nothing
    if mode == "move" and source.is_symlink():  # checked when planning too; links may appear since
        return "error", "is a symlink; not moved (a moved link would dangle)", nothing
    made = None
    try:
        made = make_folders(destination.parent, dest)
        size, sha256 = "", ""
        if mode == "symlink":
            os.symlink(source, destination)  # fails rather than replace an existing file
        else:
            digest = (_copy_exclusive if mode == "copy" else _move_exclusive)(source, destination)
            size, sha256 = str(digest[0]), digest[1]
    except OSError as exc:
        if made is not None:  # the folders made for this file only, if still empty
            remove_empty_folders(folder_chain(destination.parent, made), dest)
        if isinstance(exc, UnsafePath):
            return "error", str(exc), nothing
        return "error", f"{type(exc).__name__}: {exc.strerror or exc}", nothing
    return "done", "", (size, sha256, "" if made is None else str(made))


def _copy_exclusive(source: Path, destination: Path) -> tuple[int, str]:
    """Copies with ``O_EXCL``: an existing destination is an error, never overwritten.

    Returns:
        ``(size, sha256)`` of what was written, hashed on the way.
    """
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as src:
        dst = open(destination, "xb")  # noqa: SIM115 - FileExistsError here leaves nothing to clean
        try:
            with dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            shutil.copystat(source, destination)  # keeps the camera's file times
        except BaseException:
            destination.unlink(missing_ok=True)  # a partial copy is ours to remove
            raise
    return size, digest.hexdigest()


def _move_exclusive(source: Path, destination: Path) -> tuple[int, str]:
    """Moves without ever replacing ``destination``.

    A hard link fails if the destination exists, so link-then-unlink is an atomic,
    non-overwriting rename. File systems without hard links (FAT, exFAT) or another device
    get an exclusive copy followed by deleting the source.

    Returns:
        ``(size, sha256)`` of the file moved.
    """
    digest = file_digest(source)  # before linking: a read error leaves nothing behind
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        digest = _copy_exclusive(source, destination)
    source.unlink()
    return digest


def undo_sort(manifest: str | os.PathLike) -> pd.DataFrame:
    """Reverses a sort from its manifest, touching only what the sort made and is still as made.

    Only rows the manifest (or, for a killed sort, its journal) records as ``done`` are undone,
    and only when the file at the destination is still what the sort made: for copies and
    moves the same size and sha256, for links a link to the same source. Moves are moved back
    (unless something new sits at the original place: ``conflict``); copies and links are
    deleted, but a copy is kept when its original is gone. Folders the sort created
    (``made_folder``) are removed once empty; no other folder is.

    Args:
        manifest: The csv written by :func:`sort`.

    Returns:
        The manifest with an ``undo`` column: ``restored``, ``removed``, ``conflict``,
        ``not_sorted`` (nothing to undo), ``error: ...``, ``kept`` (the original is gone) or
        ``kept: <why>`` (changed since sort, no size/hash recorded, not recorded as done...).

    Raises:
        DataError: The manifest cannot be read, is not a sort manifest, or would lead undo
            outside its DEST (a destination outside DEST, DEST ``/`` or not an absolute folder):
            then nothing is touched.
    """
    manifest = Path(manifest)
    try:
        plan = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding_errors=CSV_ENCODING_ERRORS)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the sort manifest {manifest}: {exc}") from None
    missing = set(MANIFEST_COLUMNS) - set(plan.columns)
    if missing:
        raise DataError(f"{manifest} is not a sort manifest: it lacks {', '.join(sorted(missing))}")
    for column in RECORD_COLUMNS:  # a manifest from before they were recorded
        if column not in plan.columns:
            plan[column] = ""
    merge_journal(plan, manifest)
    dest = check_manifest(plan, manifest, MODES)
    plan["undo"] = [_undo_one(row, dest) for row in plan.itertuples(index=False)]
    folders: set[Path] = set()
    for row in plan.itertuples(index=False):
        if row.status == "done" and row.made_folder:
            folders |= folder_chain(Path(os.path.normpath(row.destination)).parent,
                                    Path(os.path.normpath(row.made_folder)))
    remove_empty_folders(folders, dest)
    atomic_write(manifest, lambda tmp: plan.to_csv(tmp, index=False, errors=CSV_ENCODING_ERRORS))
    journal_path(manifest).unlink(missing_ok=True)  # merged into the manifest
    return plan


def _undo_one(row: Any, dest: Path) -> str:
    """Undoes one manifest row (checked by ``check_manifest``), or says why not."""
    source, destination = Path(row.source), Path(row.destination)
    if row.status != "done":
        if row.status == "planned" and row.destination and os.path.lexists(destination):
            return "kept: not recorded as done"  # the sort was killed; this may be another's file
        return "not_sorted"
    if not really_inside(destination, dest):
        return "kept: outside DEST through a symlinked folder"
    try:
        if row.mode == "symlink":
            if not destination.is_symlink():
                return "not_sorted"
            if os.readlink(destination) != row.source:
                return "kept: changed since sort"
            destination.unlink()
            return "removed"
        if not os.path.lexists(destination):
            return "not_sorted"
        if not row.sha256 or not row.size.isdigit():
            return "kept: no size/hash recorded (older manifest)"
        if row.mode == "move":
            if os.path.lexists(source):
                return "conflict"
            if not same_content(destination, int(row.size), row.sha256):
                return "kept: changed since sort"
            source.parent.mkdir(parents=True, exist_ok=True)
            _move_exclusive(destination, source)
            return "restored"
        if not source.is_file():
            return "kept"  # the copy is the only one left
        if not same_content(destination, int(row.size), row.sha256):
            return "kept: changed since sort"
        destination.unlink()
        return "removed"
    except OSError as exc:
        return f"error: {type(exc).__name__}: {exc.strerror or exc}"
