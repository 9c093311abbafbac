"""What ``ecoclassify predict`` reads: folders, image files and text files listing paths.

Each INPUT becomes an :class:`InputSpec`; :func:`iter_work` streams one :class:`WorkItem` per
image file in a reproducible order without ever listing everything first, so a card with a
million photos costs no more memory than one with a hundred. Every file gets a ``root`` (the
folder its ``filepath`` is relative to), which the output records so ``sort`` and ``--resume``
can find the file again.

Rules, the same as training's discovery (:mod:`ecoclassify.data.discovery`):

- Folders are walked in relative-POSIX-path order; hidden files and folders (``._IMG.JPG``,
  ``.DS_Store``), non-images (videos, ``.txt``) and unsafe symlinks are skipped with a reason.
- A file INPUT is an image (by extension), a list file (``.txt``, ``.lst``, ``.list`` or no
  extension) or anything else, which is skipped like a video in a folder.
- A list file names one path per line, relative to the list file's folder or absolute; blank
  lines and lines starting with ``#`` are ignored. A listed file that does not exist is not
  skipped: it becomes a ``not_found`` failure, because the user asked for it by name.
- A file reached twice (a folder and one of its sub-folders both given, a file listed twice)
  is processed once; the repeats are skipped as ``duplicate``.
"""

from __future__ import annotations

import codecs
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ecoclassify.data.discovery import IMAGE_EXTENSIONS, is_hidden, is_image_name, iter_images
from ecoclassify.errors import ConfigError, DataError, RunError

SkipCallback = Callable[[Path, str], None]

# Suffixes of list files; any other non-image file given as INPUT is skipped as not an image.
LIST_SUFFIXES = ("", ".txt", ".lst", ".list")

# Bytes read to decide whether an INPUT file is a text list (binary files hold NUL bytes).
_SNIFF_BYTES = 65536


@dataclass(frozen=True)
class InputSpec:
    """One INPUT argument, checked.

    Attributes:
        kind: ``folder``, ``image`` (a single image file), ``list`` (a text file of paths) or
            ``other`` (any other file: skipped as ``not_an_image``).
        path: The argument as an absolute path (symlinks kept, so mount names stay readable).
    """

    kind: str
    path: Path


@dataclass(frozen=True)
class WorkItem:
    """One file to classify.

    Attributes:
        root: Absolute folder that ``filepath`` is relative to, as a string.
        filepath: POSIX path relative to ``root``.
    """

    root: str
    filepath: str

    @property
    def path(self) -> Path:
        """The file itself."""
        return Path(self.root, self.filepath)


def resolve_inputs(inputs: str | os.PathLike | list[str | os.PathLike] | tuple) -> list[InputSpec]:
    """Checks every INPUT before any work starts, so a typo fails in a second, not an hour in.

    Args:
        inputs: A folder, image file or list file, or a sequence of them.

    Returns:
        One :class:`InputSpec` per input, in the order given.

    Raises:
        ConfigError: No input was given.
        DataError: An input does not exist or is a file that is neither an image nor text.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ConfigError("inputs must name at least one folder, image file or list file. Received: inputs=[]")
    specs = []
    for raw in inputs:
        path = Path(os.path.abspath(os.fspath(raw)))
        if path.is_dir():
            specs.append(InputSpec("folder", path))
        elif not path.exists():
            raise DataError(f"INPUT does not exist. Received: '{raw}'")
        elif is_image_name(path.name) and not is_hidden(path.name):
            specs.append(InputSpec("image", path))
        elif path.suffix.lower() in LIST_SUFFIXES:
            _check_list_file(path, raw)
            specs.append(InputSpec("list", path))
        else:
            # A shell glob (``card/*``) passes videos and other clutter too; skip them like a
            # folder walk would rather than stop the whole run.
            specs.append(InputSpec("other", path))
    return specs


def _check_list_file(path: Path, raw: object) -> None:
    if not path.is_file():
        # A FIFO (or ``<(find ...)``) would block the sniff below, and its lines could not be read twice.
        raise DataError(f"INPUT list file must be a regular file; save the list to a file first. Received: '{raw}' "
                        "(not a regular file)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read INPUT '{raw}': {exc.strerror or exc}") from None
    try:
        if b"\0" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        # Incremental: a multi-byte character cut at the sniff boundary is not an error.
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError:
        raise DataError(
            f"INPUT must be a folder, an image file ({' '.join(IMAGE_EXTENSIONS)}) or a UTF-8 text "
            f"file listing image paths. Received: '{raw}' (a binary file)"
        ) from None


def iter_work(specs: list[InputSpec], recursive: bool, on_skip: SkipCallback | None = None) -> Iterator[WorkItem]:
    """Streams the files to classify, input by input, each input in sorted order.

    Args:
        specs: From :func:`resolve_inputs`.
        recursive: Whether folders are searched below their top level.
        on_skip: Called with ``(path, reason)`` for everything passed over.

    Yields:
        One :class:`WorkItem` per image file, each file once.
    """
    skip = on_skip or (lambda path, reason: None)
    seen: set[tuple[str, str]] = set()
    # Files arrive folder by folder, so a small cache makes the per-file identity check cheap.
    real_folder = functools.lru_cache(maxsize=4096)(os.path.realpath)
    for spec in specs:
        for item in _iter_spec(spec, recursive, skip):
            # Identity = real parent folder + name: overlapping inputs collapse, but two links
            # with different names to one photo stay two rows, as discovery reports them.
            path = item.path
            key = (real_folder(str(path.parent)), path.name)
            if key in seen:
                skip(path, "duplicate")
                continue
            seen.add(key)
            yield item


def _iter_spec(spec: InputSpec, recursive: bool, skip: SkipCallback) -> Iterator[WorkItem]:
    if spec.kind == "folder":
        root = str(spec.path)
        for path in iter_images(spec.path, recursive=recursive, on_skip=skip):
            yield WorkItem(root, path.relative_to(spec.path).as_posix())
    elif spec.kind == "image":
        yield WorkItem(str(spec.path.parent), spec.path.name)
    elif spec.kind == "list":
        yield from _iter_list(spec.path, skip)
    else:
        skip(spec.path, "hidden" if is_hidden(spec.path.name) else "not_an_image")


def _iter_list(list_file: Path, skip: SkipCallback) -> Iterator[WorkItem]:
    base = list_file.parent
    try:
        handle = open(list_file, encoding="utf-8-sig", errors="strict")
    except OSError as exc:
        raise DataError(f"cannot read list file '{list_file}': {exc.strerror or exc}") from None
    with handle:
        line_number = 0
        try:
            for line_number, line in enumerate(handle, start=1):  # noqa: B007 - used in the error
                entry = line.rstrip("\r\n")
                if not entry.strip() or entry.lstrip().startswith("#"):
                    continue
                if entry != entry.strip() and not (base / entry).exists():
                    entry = entry.strip()  # stray spaces around a name, unless the name has them
                item = _listed_item(base, entry)
                relative_parts = Path(item.filepath).parts
                if any(is_hidden(part) for part in relative_parts):
                    skip(item.path, "hidden")
                elif not is_image_name(item.filepath):
                    skip(item.path, "not_an_image")
                else:
                    yield item
        except UnicodeDecodeError:
            raise DataError(f"list file '{list_file}' is not UTF-8 text (line {line_number + 1})") from None


def _listed_item(base: Path, entry: str) -> WorkItem:
    """Root and relative path of a listed entry: the list's folder when it is inside it."""
    path = Path(os.path.normpath(base / entry))  # absolute entries replace base
    try:
        relative = path.relative_to(base)
    except ValueError:
        return WorkItem(str(path.parent), path.name)
    return WorkItem(str(base), relative.as_posix())


def count_refusing_output(output: Path | None, specs: list[InputSpec], items: Iterable[WorkItem]) -> int:
    """Counts the files to classify, refusing an output that is one of them or a list file read.

    ``-o`` pointing at a photo (a shell completion gone wrong) with ``--overwrite`` would replace
    that photo with a table at the end of the run.

    Args:
        output: The output file, or None.
        specs: From :func:`resolve_inputs`.
        items: From :func:`iter_work` (consumed).

    Returns:
        The number of items.

    Raises:
        RunError: The output exists and is an INPUT file or one of the items.
    """
    if output is None or not output.exists():
        return sum(1 for _ in items)

    def refuse(what: str) -> RunError:
        return RunError(f"output must not be a file this run reads: it is {what}. Give another output. "
                        f"Received: output='{output}'")

    for spec in specs:
        if spec.kind != "folder" and spec.path.exists() and os.path.samefile(spec.path, output):
            raise refuse(f"the INPUT {spec.kind} file '{spec.path}'")
    total = 0
    for item in items:
        total += 1
        # The name first: one stat per file with the output's name, not per file.
        if item.path.name == output.name and os.path.exists(item.path) and os.path.samefile(item.path, output):
            raise refuse(f"the image '{item.path}' (found under the INPUT '{item.root}')")
    return total
