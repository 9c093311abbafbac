"""One ``ecoclassify predict`` per output at a time: an exclusive lock on ``OUTPUT.lock``.

Two runs writing the same output would share its checkpoint and each replace the other's
result, both reporting success. So a run takes an exclusive lock on a file beside the output
before it looks at the output or its checkpoint, holds it to the end and then deletes the file.
With ``fcntl`` (Linux, macOS) the lock is ``flock``: the kernel releases it when a process dies,
so a killed run never blocks the next one. Elsewhere the lock file is created with ``O_EXCL``,
and one left by a killed run must be deleted by hand (the error says so).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ecoclassify.errors import RunError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
# First line of every lock file: a file of that name that does not start with it is the user's.
_MARK = "ecoclassify predict lock"


def lock_path(output: Path) -> Path:
    """The lock file of an output: ``predictions.csv`` -> ``predictions.csv.lock``."""
    return output.with_name(output.name + LOCK_SUFFIX)


@contextlib.contextmanager
def output_lock(output: Path | None) -> Iterator[None]:
    """Holds the lock of ``output`` (nothing when None) for the ``with`` block.

    Raises:
        RunError: Another run holds it, or ``OUTPUT.lock`` is someone else's file, or it cannot
            be created.
    """
    if output is None:
        yield
        return
    path = lock_path(output)
    fd = _acquire(path, output)
    try:
        yield
    finally:
        _release(path, fd)


def _holder(fd: int) -> str:
    """The pid recorded in a lock file, for the error message."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("pid "):
            return line[4:].strip()
    return "unknown"


def _check_ours(fd: int, path: Path) -> None:
    head = os.pread(fd, len(_MARK), 0)
    if head and head != _MARK.encode():
        raise RunError(f"{path} exists and was not written by ecoclassify, so it is not used as the output's lock "
                       "file: move it away or choose another output name")


def _acquire(path: Path, output: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot write the checkpoint lock {path} beside the output: {exc.strerror or exc}") from None
    if fcntl is None:
        return _acquire_exclusive(path, output)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunError(f"cannot write the checkpoint lock {path} beside the output: "
                           f"{exc.strerror or exc}") from None
        try:
            _check_ours(fd, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunError(f"another ecoclassify predict is writing {output} (pid {_holder(fd)}): wait for it to "
                               "finish, or give another output") from None
            # The holder may have finished and deleted the file between our open and flock: then
            # this is a lock on a deleted file, and a third run could lock a new one. Start again.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{_MARK}\npid {os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


def _acquire_exclusive(path: Path, output: Path) -> int:
    """Without ``fcntl``: whoever creates the file holds the lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        pid, text = "unknown", ""
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8", errors="replace")
        if text and not text.startswith(_MARK):
            raise RunError(f"{path} exists and was not written by ecoclassify, so it is not used as the output's "
                           "lock file: move it away or choose another output name") from None
        for line in text.splitlines():
            if line.startswith("pid "):
                pid = line[4:].strip()
        raise RunError(f"another ecoclassify predict is writing {output} (pid {pid}): wait for it to finish, or give "
                       f"another output. If no such process is running, it was killed: delete {path} and run "
                       "again") from None
    except OSError as exc:
        raise RunError(f"cannot write the checkpoint lock {path} beside the output: {exc.strerror or exc}") from None
    os.write(fd, f"{_MARK}\npid {os.getpid()}\n".encode())
    return fd


def _release(path: Path, fd: int) -> None:
    # Deleted while still locked, so no other run ever locks a file that is about to vanish.
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)
