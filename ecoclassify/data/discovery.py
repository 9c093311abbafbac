"""Find the image files under a folder, safely and in a reproducible order.

Used both to scan training folders and to list camera-trap folders for batch prediction, so
the rules are the same everywhere:

- Extensions in ``IMAGE_EXTENSIONS`` match case-insensitively (``IMG_0001.JPG``).
- Hidden files and folders (``.DS_Store``, macOS ``._IMG_0001.JPG`` resource forks, ``.git``)
  and system clutter (``Thumbs.db``, ``desktop.ini``, ``$RECYCLE.BIN``, ``__MACOSX``...) are
  ignored; deleted photos in a card's recycle bin must not turn up as training data.
- Symbolic links are followed only when their target stays inside the root; a folder that has
  already been entered (a loop, or a second link to the same folder) is not entered again.
- A folder that cannot be listed is recorded and skipped, never fatal.

Images come back sorted by their path relative to the root, as a POSIX string, so splits and
prediction tables do not depend on the order the file system lists entries in.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecoclassify.data.images import classify_os_error
from ecoclassify.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

# Compared lower-cased: Windows and most SD-card file systems are case-insensitive.
HIDDEN_NAMES = frozenset(
    {"thumbs.db", "desktop.ini", "$recycle.bin", "system volume information", "__macosx"}
)

SkipCallback = Callable[[Path, str], None]


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden or system clutter that is never an image source.

    Args:
        name: A single path component, not a path.

    Returns:
        True for dot-names (``.DS_Store``, ``._IMG_0001.JPG``) and the names in ``HIDDEN_NAMES``.
    """
    return name.startswith(".") or name.lower() in HIDDEN_NAMES


def is_image_name(name: str) -> bool:
    """Whether a file name has one of ``IMAGE_EXTENSIONS``, in any letter case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class DiscoveryResult:
    """The outcome of :func:`discover_images`.

    Attributes:
        root: The folder that was searched, as given.
        images: Image paths (``root / relative``), sorted by relative POSIX path.
        skipped: ``(path, reason)`` for everything passed over, in the same order. Reasons:
            ``not_an_image``, ``hidden``, ``symlink_outside_root``, ``symlink_loop``,
            ``already_visited``, ``broken_symlink``, ``not_a_file`` (socket, device...),
            ``permission_denied``, ``not_found`` (vanished during the walk), ``unreadable``.
    """

    root: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        """Counts of skipped entries per reason, for a one-line summary."""
        counts: dict[str, int] = {}
        for _, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def _check_root(root: Path | str) -> tuple[Path, Path]:
    root = Path(root)
    if not root.exists():
        raise DataError(f"Image folder does not exist. Received: root='{root}'")
    if not root.is_dir():
        raise DataError(f"Image folder must be a folder, not a file. Received: root='{root}'")
    return root, root.resolve()


def _sort_key(entry: os.DirEntry[str], is_dir: bool) -> str:
    # A folder sorts as "name/", which makes the depth-first walk yield paths in exactly the
    # order of their relative POSIX strings ("a.jpg" < "a/x.jpg"), so streaming needs no sort.
    return entry.name + "/" if is_dir else entry.name


class _Walker:
    """Depth-first walk that reports skipped entries through a callback."""

    def __init__(self, root: Path, real_root: Path, recursive: bool, on_skip: SkipCallback):
        self.root = root
        self.real_root = real_root
        self.recursive = recursive
        self.on_skip = on_skip
        self.visited: set[tuple[int, int]] = set()

    def walk(self) -> Iterator[Path]:
        st = os.stat(self.root)
        self.visited.add((st.st_dev, st.st_ino))
        yield from self._walk_dir(self.root, ancestors=((st.st_dev, st.st_ino),))

    def _entries(self, folder: Path) -> list[tuple[str, os.DirEntry[str], bool]] | None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            self.on_skip(folder, classify_os_error(exc))
            return None
        keyed = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links; the link rules are applied later
            except OSError:
                is_dir = False
            keyed.append((_sort_key(entry, is_dir), entry, is_dir))
        keyed.sort(key=lambda item: item[0])
        return keyed

    def _link_problem(self, path: Path) -> str | None:
        """Why a symlink must not be followed, or None if its target is inside the root."""
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            return "broken_symlink"
        except (RuntimeError, OSError) as exc:  # RuntimeError: pre-3.13 pathlib's "Symlink loop"
            if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
                return "symlink_loop"
            return classify_os_error(exc)
        if not target.is_relative_to(self.real_root):
            return "symlink_outside_root"
        return None

    def _walk_dir(self, folder: Path, ancestors: tuple[tuple[int, int], ...]) -> Iterator[Path]:
        entries = self._entries(folder)
        if entries is None:
            return
        for _, entry, is_dir in entries:
            path = folder / entry.name
            if is_hidden(entry.name):
                self.on_skip(path, "hidden")
                continue
            try:
                is_link = entry.is_symlink()
            except OSError as exc:
                self.on_skip(path, classify_os_error(exc))
                continue
            if is_link and (self.recursive or not is_dir):  # a link we would not use is noise
                problem = self._link_problem(path)
                if problem:
                    self.on_skip(path, problem)
                    continue
            if is_dir:
                if self.recursive:
                    yield from self._enter(path, entry, ancestors)
                continue
            try:
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if not is_file:
                self.on_skip(path, "broken_symlink" if is_link else "not_a_file")
            elif is_image_name(entry.name):
                yield path
            else:
                self.on_skip(path, "not_an_image")

    def _enter(
        self, path: Path, entry: os.DirEntry[str], ancestors: tuple[tuple[int, int], ...]
    ) -> Iterator[Path]:
        try:
            st = entry.stat()  # follows links: identifies the real folder
        except OSError as exc:
            self.on_skip(path, classify_os_error(exc))
            return
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            self.on_skip(path, "symlink_loop")
        elif key in self.visited:
            self.on_skip(path, "already_visited")
        else:
            self.visited.add(key)
            yield from self._walk_dir(path, ancestors + (key,))


def iter_images(
    root: Path | str, recursive: bool = True, on_skip: SkipCallback | None = None
) -> Iterator[Path]:
    """Streams image paths under ``root`` in sorted order, without listing everything first.

    The order is the same as :func:`discover_images` (relative POSIX path), because each
    folder's entries are sorted before the depth-first walk enters them.

    Args:
        root: Folder to search. Checked immediately, before the first path is produced.
        recursive: Whether to descend into sub-folders.
        on_skip: Called with ``(path, reason)`` for every entry passed over.

    Returns:
        An iterator of paths of the form ``root / relative``.

    Raises:
        DataError: If ``root`` does not exist or is not a folder.
    """
    root, real_root = _check_root(root)
    walker = _Walker(root, real_root, recursive, on_skip or (lambda path, reason: None))
    return walker.walk()


def discover_images(root: Path | str, recursive: bool = True) -> DiscoveryResult:
    """Lists the image files under ``root`` and everything that was passed over.

    Args:
        root: Folder to search.
        recursive: Whether to descend into sub-folders.

    Returns:
        A :class:`DiscoveryResult` with sorted images and skipped entries.

    Raises:
        DataError: If ``root`` does not exist or is not a folder.
    """
    result = DiscoveryResult(root=Path(root))
    # The walk already yields relative-POSIX order (see _sort_key), so no global sort is needed;
    # skipped entries are reported at their place in the same walk.
    on_skip = lambda path, reason: result.skipped.append((path, reason))  # noqa: E731
    result.images = list(iter_images(root, recursive, on_skip=on_skip))
    return result
