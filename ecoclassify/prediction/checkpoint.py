"""The checkpoint of ``ecoclassify predict``: what an interrupted run has done so far.

A folder ``OUTPUT.checkpoint/`` beside the output holds ``meta.json`` (the fingerprint of the
model and the input set) and numbered ``part-NNNNNN.jsonl`` files, each written atomically
when N more images are done. Appending parts instead of rewriting one growing file keeps a
million-image run linear; JSON keeps every probability exactly (Python writes the shortest
repr that reads back to the same float) and file names exactly as they are. Rows of a later
part replace those of an earlier one (a failed file retried after ``--resume``). A part being
written when the process is killed is a hidden temporary file, ignored and removed on resume.
Each row records the file's size and modification time, so a file replaced under the same
name is read again. ``meta.json`` carries a marker key: a folder without it is not ours, and
is never deleted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ecoclassify.errors import RunError
from ecoclassify.prediction.outputs import json_dumps
from ecoclassify.files import write_text

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".checkpoint"
_META = "meta.json"
_PART = "part-{:06d}.jsonl"
_CHECKPOINT_VERSION = 1
# Key of meta.json that marks a folder as written by this module: nothing else is ever deleted.
_MARKER = "ecoclassify_predict_checkpoint"


class RawRow(NamedTuple):
    """What is known about one file before labels are derived: the checkpoint's unit.

    ``probs`` is the model's float32 output (None for a failed file); labels, top-k and
    sequences are computed from it at the end, so ``--threshold`` or ``--top-k`` may change
    between an interrupted run and its resumption. ``identity`` is the file's ``(size,
    mtime_ns)`` when it was read: ``--resume`` reads a file again when it no longer matches
    (a card swapped for new photos with the same names). None in checkpoints from before it
    was recorded, and such rows are read again too.
    """

    root: str
    filepath: str
    status: str
    error: str | None
    detail: str | None
    datetime: str | None
    width: int | None
    height: int | None
    probs: np.ndarray | None
    identity: tuple[int, int] | None = None


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when it cannot be stat'ed (gone)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size, info.st_mtime_ns


def checkpoint_path(output: Path) -> Path:
    """The checkpoint folder of an output file: ``predictions.csv`` -> ``predictions.csv.checkpoint``."""
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


class Checkpoint:
    """The checkpoint folder of one output.

    Args:
        path: The folder (see :func:`checkpoint_path`).
        fingerprint: JSON-able description of the model and the input set; a checkpoint is
            only resumed by a run with an equal fingerprint.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._next_part = 1

    def exists(self) -> bool:
        """Whether an earlier run left a checkpoint here."""
        return self.path.exists()

    def start(self) -> None:
        """Replaces any old checkpoint with an empty one for this fingerprint.

        Raises:
            RunError: The folder cannot be written (so the output could not be either).
        """
        meta = {_MARKER: True, "version": _CHECKPOINT_VERSION, "fingerprint": self.fingerprint}
        try:
            self.remove()
            self.path.mkdir(parents=True)
            write_text(self.path / _META, json_dumps(meta, indent=2) + "\n")
        except OSError as exc:
            raise RunError(f"cannot write the checkpoint {self.path} beside the output: "
                           f"{exc.strerror or exc}") from None
        self._next_part = 1

    def load(self) -> dict[tuple[str, str], RawRow]:
        """The rows of an earlier run, keyed by ``(root, filepath)``; later parts win.

        Raises:
            RunError: The checkpoint is damaged or was written for another model or input set.
        """
        try:
            meta = json.loads((self.path / _META).read_text(encoding="utf-8"))
            saved = meta["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"the checkpoint {self.path} is damaged ({_META}: {exc}); use --overwrite to start "
                           "again") from None
        problems = fingerprint_differences(saved, self.fingerprint)
        if problems:
            raise RunError(f"the checkpoint {self.path} belongs to another run: " + "; ".join(problems)
                           + ". Resume with the same model and inputs, or use --overwrite to start again.")
        rows: dict[tuple[str, str], RawRow] = {}
        parts = sorted(self.path.glob("part-*.jsonl"))
        for part in parts:
            # split("\n"), not splitlines(): a file name may hold U+2028, which JSON leaves as is.
            lines = [line for line in part.read_text(encoding="utf-8").split("\n") if line]
            for line_number, line in enumerate(lines, start=1):
                try:
                    row = _row_from_json(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise RunError(f"the checkpoint part {part} is damaged at line {line_number} ({exc}); use "
                                   "--overwrite to start again") from None
                rows[(row.root, row.filepath)] = row
        self._next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=0)
        for stray in self.path.glob(".*.tmp"):  # left by a run killed while writing a part
            stray.unlink(missing_ok=True)
        return rows

    def append(self, rows: list[RawRow]) -> None:
        """Writes ``rows`` as the next part, atomically."""
        if not rows:
            return
        text = "".join(json_dumps(_row_to_json(row)) + "\n" for row in rows)
        part = self.path / _PART.format(self._next_part)
        try:
            write_text(part, text)
        except OSError as exc:  # a full disk: say so, the earlier parts are intact
            raise RunError(f"cannot save the checkpoint part {part}: {exc.strerror or exc}; the parts before it are "
                           "intact, so free some space and run again with --resume") from None
        self._next_part += 1

    def remove(self) -> None:
        """Deletes the checkpoint's files and then its folder (after the output was written).

        Raises:
            RunError: Something of that name exists that this tool did not write.
        """
        if not os.path.lexists(self.path):
            return
        check_removable(self.path)
        for item in [*self.path.glob("part-*.jsonl"), *self.path.glob(".*.tmp"), self.path / _META]:
            item.unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # someone put their own files in it: theirs to keep
            log.warning("kept %s: it holds files ecoclassify did not write", self.path)


def check_removable(path: Path) -> None:
    """Refuses to let ``--overwrite`` delete a ``.checkpoint`` that ecoclassify did not write.

    Ours is a folder whose ``meta.json`` carries the marker key (or, written before the marker
    existed, a ``version`` and a ``fingerprint``); an empty folder is harmless to remove too.

    Raises:
        RunError: ``path`` is a file, a link, or a folder without that ``meta.json``.
    """
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        if not any(path.iterdir()):
            return
        try:
            meta = json.loads((path / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and (meta.get(_MARKER) is True or {"version", "fingerprint"} <= meta.keys()):
            return
    raise RunError(f"{path} is in the way of the output's checkpoint but was not written by ecoclassify predict "
                   f"(no {_META} of a checkpoint in it), so it is not deleted: move it away or give another output")


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    problems = []
    if saved.get("model_sha256") != current.get("model_sha256"):
        problems.append(f"it was written with the model {saved.get('model')!r}, this run uses {current.get('model')!r}"
                        " (different file contents)")
    for key, value in current.items():
        if key in ("model", "model_sha256"):
            continue
        before = saved.get(key, _MISSING_MEANS.get(key))
        if before != value:
            why = " (an output must come from one runtime)" if key == "runtime" else ""
            problems.append(f"{key} was {before!r}, now {value!r}{why}")
    return problems


#: Fingerprint keys added later, as checkpoints written before them ran (they ran on Keras).
_MISSING_MEANS = {"runtime": "keras"}


def _row_to_json(row: RawRow) -> dict[str, Any]:
    data = row._asdict()
    data["probs"] = None if row.probs is None else [float(p) for p in row.probs]
    data["identity"] = None if row.identity is None else [int(v) for v in row.identity]
    return data


def _row_from_json(data: dict[str, Any]) -> RawRow:
    probs, identity = data["probs"], data.get("identity")  # no identity: written before it was recorded
    return RawRow(
        str(data["root"]), str(data["filepath"]), str(data["status"]), data["error"], data["detail"],
        data["datetime"], data["width"], data["height"],
        None if probs is None else np.asarray(probs, dtype=np.float32),
        None if identity is None else (int(identity[0]), int(identity[1])),
    )
