"""What keeps ``ecoclassify sort`` and ``sort --undo`` inside DEST and away from files they did not make.

A sort records, for every file it creates, its size and sha256 (and the topmost folder it had
to create), so that undo can tell "the copy this sort made" from "a file someone edited since,
or another sort made at the same name". A manifest is a csv the user can edit, so undo checks
it before touching anything: every path must lie inside its DEST, and DEST may not be ``/``.

A sort also appends one line per finished file to ``<manifest>.journal`` and deletes it when
the manifest is final: a sort killed outright (power cut, ``kill -9``) leaves a manifest that
says ``planned`` for every row, and the journal says which of them were done.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pandas as pd

from ecoclassify.errors import DataError, RunError

# The manifest's columns for the record of a created file (older manifests lack them).
RECORD_COLUMNS = ("size", "sha256", "made_folder")
_CHUNK = 1 << 20


class UnsafePath(OSError):
    """A write that would go through a symlinked folder under DEST (so, possibly outside it)."""


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file's content (following a symlink)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def same_content(path: Path, size: int, sha256: str) -> bool:
    """Whether ``path`` is a regular file (not a link) with this size and sha256."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
            return False
        return file_digest(path) == (size, sha256)
    except OSError:
        return False


def symlinked_folder(folder: Path, dest: Path) -> Path | None:
    """The first folder from ``dest`` (excluded) down to ``folder`` that is a symlink, if any."""
    current = dest
    for part in folder.relative_to(dest).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def make_folders(folder: Path, dest: Path) -> Path | None:
    """Creates ``folder`` below ``dest`` one level at a time, never through a symlinked folder.

    Returns:
        The topmost folder this call created (undo may remove it and what lies below it once
        empty), or None when all existed.

    Raises:
        UnsafePath: A folder on the way is a symlink.
        OSError: A folder cannot be created (a file in the way, permissions).
    """
    dest.mkdir(parents=True, exist_ok=True)
    made, current = None, dest
    for part in folder.relative_to(dest).parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePath(f"{current} is a symlink; sort never writes through a symlinked folder")
        try:
            current.mkdir()
        except FileExistsError:
            continue
        made = made or current
    return made


def inside(path: str | Path, folder: Path) -> bool:
    """Whether ``path`` is strictly inside ``folder``, judged on the text (``..`` resolved, links not)."""
    path = os.path.normpath(path)
    return os.path.isabs(path) and Path(path) != folder and Path(path).is_relative_to(folder)


def really_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is strictly inside ``folder`` once the symlinks of its folders are followed.

    The last part is not followed: a link the sort made inside DEST points outside by design.
    """
    real = Path(os.path.realpath(path.parent)) / path.name
    real_folder = Path(os.path.realpath(folder))
    return path.name not in ("", ".", "..") and real != real_folder and real.is_relative_to(real_folder)


def check_manifest(plan: pd.DataFrame, manifest: Path, modes: tuple[str, ...]) -> Path:
    """Refuses a manifest that would make undo touch anything outside its DEST.

    Returns:
        DEST, normalised.

    Raises:
        DataError: No single DEST, DEST is ``/`` or not an absolute existing folder, a mode is
            unknown, or a destination or created folder lies outside DEST.
    """
    dests = sorted(set(plan["dest"]))
    if len(dests) != 1:
        raise DataError(f"{manifest} must name one DEST in its 'dest' column. Received: {dests[:3]}")
    text = dests[0]
    dest = Path(os.path.normpath(text)) if text else Path()
    if not text or not dest.is_absolute() or dest == Path(dest.anchor) or \
            Path(os.path.realpath(dest)) == Path(dest.anchor):
        raise DataError(f"{manifest}: DEST must be an absolute folder other than the file system's root; undo "
                        f"refuses this manifest. Received: dest={text!r}")
    if not dest.is_dir():
        raise DataError(f"{manifest}: DEST is not a folder (moved or deleted?); nothing can be undone. "
                        f"Received: dest={text!r}")
    for number, row in enumerate(plan.itertuples(index=False), start=2):
        if row.mode not in modes:
            raise DataError(f"{manifest} line {number}: mode must be one of: {', '.join(modes)}. "
                            f"Received: {row.mode!r}")
        if not inside(row.destination, dest):
            raise DataError(f"{manifest} line {number}: the destination is outside DEST {dest}; undo touches nothing "
                            f"(was the manifest edited?). Received: {row.destination!r}")
        made = getattr(row, "made_folder", "")
        parent = os.path.dirname(os.path.normpath(row.destination))
        if made and not (inside(made, dest) and (os.path.normpath(made) == parent
                                                 or inside(parent, Path(os.path.normpath(made))))):
            raise DataError(f"{manifest} line {number}: made_folder must be a folder inside DEST {dest} that holds "
                            f"the destination; undo touches nothing. Received: {made!r}")
    return dest


def symlink_targets(frame: pd.DataFrame) -> dict[str, str]:
    """``{real path: link}`` for the predictions' sources that are symlinks (a move must not strand them)."""
    targets = {}
    for record in frame.to_dict("records"):
        source = Path(str(record["root"])).absolute() / str(record["filepath"])
        if source.is_symlink():
            targets[os.path.realpath(source)] = str(source)
    return targets


def source_problem(filepath: str, source: Path, mode: str, link_targets: dict[str, str]) -> str:
    """Why a predictions row must not be sorted, or "" when it may.

    A ``filepath`` must stay below its root (a hand-edited ``../x`` or absolute path would make
    sort read elsewhere); a move may not take a symlink, nor a file a listed symlink points to,
    since either would leave a dangling link.
    """
    if not filepath or Path(filepath).is_absolute() or ".." in Path(filepath).parts:
        return (f"filepath {filepath!r} leads outside its root; not sorted (was the predictions file edited?). "
                "filepath must be relative to root, without '..'")
    if mode == "move" and source.is_symlink():
        return "is a symlink; not moved (a moved link would dangle): sort it with --mode copy or symlink"
    if mode == "move" and os.path.realpath(source) in link_targets:
        return (f"the symlink {link_targets[os.path.realpath(source)]} points to it and would dangle; not moved: "
                "sort with --mode copy or symlink")
    return ""


def place(path: Path, reserved: set[str], source: Path, mode: str) -> tuple[Path, bool]:
    """Where a file goes: ``(destination, already_there)``.

    Walks ``path``, ``stem-2.ext``, ``stem-3.ext``...: the first that already holds ``source``
    (same size and sha256; for ``symlink`` a link to it) is returned with True, so sorting
    again changes nothing; else the first name that neither exists nor is in ``reserved``.
    """
    candidate, number, digest = path, 1, None
    while str(candidate) in reserved or os.path.lexists(candidate):
        if str(candidate) not in reserved:
            if mode == "symlink":
                if candidate.is_symlink() and os.readlink(candidate) == str(source):
                    reserved.add(str(candidate))
                    return candidate, True
            elif source.is_file() and candidate.is_file() and not candidate.is_symlink():
                try:
                    digest = digest or file_digest(source)
                except OSError:
                    digest = (-1, "")  # unreadable source: nothing matches; the sort reports it
                if same_content(candidate, *digest):
                    reserved.add(str(candidate))
                    return candidate, True
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    reserved.add(str(candidate))
    return candidate, False


def folder_chain(folder: Path, top: Path) -> set[Path]:
    """``folder`` and its parents up to ``top`` (which holds it)."""
    chain = {folder}
    while folder != top and folder != folder.parent:
        folder = folder.parent
        chain.add(folder)
    return chain


def remove_empty_folders(folders: Iterable[Path], dest: Path) -> None:
    """Removes those of ``folders`` that are empty, deepest first, never one outside ``dest``."""
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        if really_inside(folder, dest):
            with contextlib.suppress(OSError):  # not empty (or gone, or a link): leave it
                folder.rmdir()


def journal_path(manifest: Path) -> Path:
    """Where a running sort notes each finished file."""
    return manifest.with_name(manifest.name + ".journal")


def open_journal(manifest: Path) -> IO[str]:
    """Opens a sort's journal for appending (created empty)."""
    return open(journal_path(manifest), "a", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115 - closed by sort


def note(journal: IO[str], index: int, status: str, detail: str, record: tuple[str, str, str]) -> None:
    """Appends one finished row, flushed so that it survives the process being killed.

    Raises:
        RunError: The journal cannot be written (the disk is full); the sort stops there.
    """
    try:
        csv.writer(journal).writerow([index, status, detail, *record])
        journal.flush()
    except OSError as exc:
        raise RunError(f"cannot write the sort journal {journal.name}: {exc.strerror or exc}; the sort stopped "
                       "(its manifest records what was done)") from None


def merge_journal(plan: pd.DataFrame, manifest: Path) -> None:
    """Fills in rows that a killed sort left ``planned`` from its journal (in place)."""
    path = journal_path(manifest)
    if not path.is_file():
        return
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            lines = [line for line in csv.reader(handle) if len(line) == 3 + len(RECORD_COLUMNS)]
    except (OSError, ValueError):
        return  # a torn journal: its rows stay "planned" and are kept
    for line in lines:
        if not line[0].isdigit() or int(line[0]) >= len(plan):
            continue
        index = plan.index[int(line[0])]
        if plan.at[index, "status"] == "planned":
            plan.loc[index, ["status", "detail", *RECORD_COLUMNS]] = line[1:]
