"""Robust, thread-safe image decoding for files as they come off camera-trap SD cards.

Every failure is an :class:`ImageReadError` with a short ``reason``, so a batch job over 100k
files records what went wrong per file instead of crashing:

- ``not_found`` / ``permission_denied``: the operating system could not open the path.
- ``empty``: the file has zero bytes.
- ``unreadable``: no supported image can be identified (a text file named ``.jpg``, a
  zero-filled file from a failed card write, a damaged or too-short header, a folder).
- ``truncated``: the file ends before the image does. A JPEG cut inside its header is
  ``truncated`` too (Pillow runs out of bytes while parsing markers); a file cut before its
  format can even be recognised (the first few bytes) is ``unreadable``.
- ``not_a_regular_file``: a device (``/dev/zero``), FIFO or socket; checked before opening.
- ``too_large``: width*height from the header exceeds ``max_pixels`` (checked before any pixel
  is decoded) or Pillow's own decompression-bomb limit.
- ``decode_error``: anything else Pillow raises while decoding the pixels.

Pillow globals are never changed for good. ``allow_truncated`` needs the process-wide
``ImageFile.LOAD_TRUNCATED_IMAGES``: it is switched on only under an exclusive lock whose shared
side every strict decode holds, so no strict decode ever sees it on; only files that already
failed as ``truncated`` take that path. ``PIL.Image.MAX_IMAGE_PIXELS`` is left alone: images
between its warning threshold (~89 MP) and ``max_pixels`` load with a Pillow
``DecompressionBombWarning``, and above twice that (~179 MP) Pillow refuses (``too_large``)
whatever ``max_pixels`` says; raise ``MAX_IMAGE_PIXELS`` yourself to go beyond.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ecoclassify.data.budget import DECODE_BUDGET
from ecoclassify.data.exif import SWAPPING_ORIENTATIONS, TRANSPOSE, capture_time, exif_of, orientation_of
from ecoclassify.data.truncation import TRUNCATION_GATE
from ecoclassify.errors import ConfigError, DataError

DEFAULT_MAX_PIXELS = 120_000_000

# Formats we let Pillow try. Restricting them keeps a misnamed file from reaching plugins such
# as EPS, which shells out to Ghostscript. Multi-picture JPEGs from some cameras open through
# "JPEG" and report format "MPO" (listing "MPO" here is a KeyError inside Pillow).
PILLOW_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")

# Every PIL.Image.Resampling name, lower-cased: "nearest", "bilinear", "bicubic", "lanczos"...
RESAMPLE_METHODS = {name.lower(): method for name, method in Image.Resampling.__members__.items()}

class ImageReadError(DataError):
    """An image file could not be read.

    Attributes:
        path: The file that failed.
        reason: A short code: ``not_found``, ``permission_denied``, ``not_a_regular_file``,
            ``empty``, ``unreadable``, ``truncated``, ``too_large`` or ``decode_error``.
        detail: Human-readable explanation, including Pillow's message where there is one.
    """

    def __init__(self, path: Path | str, reason: str, detail: str) -> None:
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"Cannot read image {self.path} ({reason}): {detail}")

    def __reduce__(self) -> tuple[type, tuple[Path, str, str]]:
        # Keeps the error picklable, so it can cross a process pool.
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image ready for a model.

    Attributes:
        array: ``uint8`` array of shape (height, width, 3), resized when a size was requested.
        width: Original width after EXIF orientation (not the resized or drafted width).
        height: Original height after EXIF orientation.
        datetime: EXIF DateTimeOriginal, else DateTime, else None.
        mode: Pillow mode of the file as stored (``"RGB"``, ``"CMYK"``, ``"I;16"``...).
    """

    array: np.ndarray
    width: int
    height: int
    datetime: dt.datetime | None
    mode: str


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, read without decoding pixels; fields as in :class:`LoadedImage`.

    ``format`` is Pillow's name: ``"JPEG"``, ``"PNG"``, ``"MPO"`` (multi-picture JPEG)...
    """

    width: int
    height: int
    format: str
    mode: str
    datetime: dt.datetime | None


def classify_os_error(exc: BaseException) -> str:
    """Maps an exception raised while opening or reading a path to a reason code.

    Args:
        exc: Usually an ``OSError`` subclass.

    Returns:
        ``not_found``, ``permission_denied`` or, for anything else, ``unreadable``.
    """
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "not_found"
    if isinstance(exc, PermissionError):
        return "permission_denied"
    return "unreadable"


def _resample_filter(resample: str | Image.Resampling) -> Image.Resampling:
    if isinstance(resample, Image.Resampling):
        return resample
    try:
        return RESAMPLE_METHODS[str(resample).lower()]
    except KeyError:
        allowed = ", ".join(RESAMPLE_METHODS)
        raise ConfigError(
            f"resample must be one of: {allowed}. Received: resample={resample!r}"
        ) from None


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    ints = (int, np.integer)
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, ints) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ConfigError(
            "size must be None or (height, width) with two positive integers. "
            f"Received: size={size!r}"
        )
    return int(size[0]), int(size[1])


def _pillow_failure(path: Path, exc: BaseException, *, stage: str) -> ImageReadError:
    """Maps what Pillow raised while opening (``header``) or decoding (``decode``) a file."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Image.DecompressionBombError):
        detail = f"{exc} Raise PIL.Image.MAX_IMAGE_PIXELS to allow it."
        return ImageReadError(path, "too_large", detail)
    if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the image format
        return ImageReadError(path, classify_os_error(exc), message)
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and "truncated" in str(exc).lower()):
        return ImageReadError(path, "truncated", f"the file ends before the image does ({exc})")
    if stage == "header":
        detail = f"not a supported image or its header is damaged ({message})"
        return ImageReadError(path, "unreadable", detail)
    return ImageReadError(path, "decode_error", message)


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _nonblocking(path: str, flags: int) -> int:
    # Reads of a regular file ignore O_NONBLOCK; it only keeps a FIFO from blocking the open.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _open_regular(path: Path) -> IO[bytes]:
    """Opens ``path`` for reading unless it is a pipe, socket or device, without ever blocking.

    A FIFO named ``x.jpg`` would block ``open`` until something writes to it (forever, in a
    batch job), and opening a device can have side effects: both are refused from ``stat``
    before opening, and the open itself is non-blocking in case the file was swapped between.
    A folder goes on to ``open``, which fails with ``IsADirectoryError``.

    Raises:
        ImageReadError: ``not_a_regular_file``.
        OSError: From ``open``.
    """

    def refuse(mode: int, opened: bool = False) -> ImageReadError:
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        what = "only files are read" if opened else "it is never opened"
        return ImageReadError(path, "not_a_regular_file", f"{kind}, not a regular file: {what}")

    try:
        mode: int | None = os.stat(path).st_mode
    except OSError:
        mode = None  # the open below says why
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise refuse(mode)
    handle = open(path, "rb", opener=_nonblocking)  # noqa: SIM115 - the caller closes it
    try:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode, opened=True)
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def _open_image(path: Path, max_pixels: int | None) -> Iterator[ImageFile.ImageFile]:
    """Opens ``path`` and identifies the image, closing the file whatever happens."""
    try:
        fh: IO[bytes] = _open_regular(path)  # closed by the ExitStack below
    except OSError as exc:
        detail = f"{type(exc).__name__}: {exc.strerror or exc}"
        raise ImageReadError(path, classify_os_error(exc), detail) from exc
    with contextlib.ExitStack() as stack:
        stack.enter_context(fh)
        try:
            if os.fstat(fh.fileno()).st_size == 0:
                raise ImageReadError(path, "empty", "the file has zero bytes")
            prefix = fh.read(16)
            fh.seek(0)
            img = Image.open(fh, formats=PILLOW_FORMATS)
        except ImageReadError:
            raise
        except UnidentifiedImageError as exc:
            detail = "not a supported image"
            if not prefix.strip(b"\0"):
                detail += " (it starts with zero bytes, typical of a failed card write)"
            raise ImageReadError(path, "unreadable", detail) from exc
        except Exception as exc:  # Pillow raises many types for damaged headers
            raise _pillow_failure(path, exc, stage="header") from exc
        stack.enter_context(img)
        pixels = img.width * img.height
        if max_pixels is not None and pixels > max_pixels:
            raise ImageReadError(
                path, "too_large",
                f"{img.width}x{img.height} = {pixels} pixels exceeds max_pixels={max_pixels}",
            )
        yield img


def read_header(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Reads size, format, mode and capture time without decoding any pixels.

    Args:
        path: Image file.
        max_pixels: Files whose header claims more pixels raise ``too_large``; None disables
            our check (Pillow's own limit still applies).

    Returns:
        The header. Width and height are after EXIF orientation, like :func:`load_rgb`'s.

    Raises:
        ImageReadError: With one of the module's reason codes.
    """
    path = Path(path)
    with TRUNCATION_GATE.strict(), _open_image(path, max_pixels) as img:
        exif = exif_of(img, allow_decode=False)
        width, height = img.size
        if orientation_of(exif) in SWAPPING_ORIENTATIONS:
            width, height = height, width
        return ImageHeader(width, height, img.format or "", img.mode, capture_time(exif))


def _grey_to_uint8(img: Image.Image) -> Image.Image:
    """Scales high-bit-depth greyscale to 0..255 instead of letting Pillow clip it."""
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        scaled = (values.astype(np.uint32) * 255 + 32767) // 65535  # i.e. round(v / 257)
    elif img.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        # Mode "I" is how Pillow holds most 16-bit data; treat it as 16-bit when it fits.
        scaled = (values.astype(np.int64) * 255 + 32767) // 65535
    elif img.mode == "F" and values.size and np.nanmin(values) >= 0 and np.nanmax(values) <= 1:
        scaled = np.rint(np.nan_to_num(values) * 255)
    else:
        # Genuine 32-bit integers or floats in physical units (thermal, elevation): stretch the
        # finite values over 0..255 so the picture is visible; NaN and inf become 0.
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        low = values[finite].min() if finite.any() else 0.0
        high = values[finite].max() if finite.any() else 0.0
        span = high - low or 1.0
        scaled = np.where(finite, np.rint((values - low) / span * 255), 0)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _grey_to_uint8(img).convert("RGB")
    if mode in ("P", "PA"):
        # Via RGBA so palette transparency is honoured the same way for every file; the alpha
        # is then dropped like any other alpha channel.
        return img.convert("RGBA").convert("RGB")
    try:
        return img.convert("RGB")  # drops alpha; CMYK, YCbCr, LAB, HSV, 1, L, LA convert directly
    except ValueError:
        return img.convert("RGBA").convert("RGB")


@contextlib.contextmanager
def _upright_rgb(
    img: ImageFile.ImageFile, request: Callable[[int, int], tuple[int, int] | None]
) -> Iterator[tuple[Image.Image, int, int, Image.Exif]]:
    """Decodes an opened image under the decode budget and yields it upright, in RGB.

    Args:
        img: From :func:`_open_image`, not loaded yet.
        request: Called with the upright full size ``(width, height)``; returns the smallest
            upright size the caller needs, or None for full resolution. A JPEG is decoded
            reduced in the DCT domain (1/2, 1/4, 1/8) to at least that size.

    Yields:
        ``(image, width, height, exif)``: the upright RGB image (reduced JPEGs are smaller than
        ``width`` x ``height``, the upright full size) and the EXIF block. The budget is held
        until the caller's block ends, while it still works on the decoded pixels.
    """
    orientation = orientation_of(exif_of(img, allow_decode=False))
    stored_w, stored_h = img.size  # before draft() shrinks it
    if img.format in ("JPEG", "MPO"):
        swapped = orientation in SWAPPING_ORIENTATIONS
        wanted = request(*((stored_h, stored_w) if swapped else (stored_w, stored_h)))
        if wanted is not None:
            # Pillow keeps the result at least as large as asked, so a later resize never
            # upsamples. Ask in stored orientation: a 90-degree EXIF rotation swaps the sides.
            want_w, want_h = wanted
            img.draft("RGB", (want_h, want_w) if swapped else (want_w, want_h))
    # img.size is the drafted size now: what will really be decoded.
    with DECODE_BUDGET.hold(img.width * img.height):
        img.load()
        # After load, so a PNG's trailing eXIf chunk counts too.
        exif = exif_of(img, allow_decode=True)
        orientation = orientation_of(exif)
        width, height = (stored_h, stored_w) if orientation in SWAPPING_ORIENTATIONS else (stored_w, stored_h)
        out = img.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else img
        yield _to_rgb(out), width, height, exif


def _decode(
    path: Path, size: tuple[int, int] | None, max_pixels: int | None, resample: Image.Resampling
) -> LoadedImage:
    with _open_image(path, max_pixels) as img:
        mode = img.mode
        try:
            wanted = None if size is None else (size[1], size[0])
            with _upright_rgb(img, lambda width, height: wanted) as (out, width, height, exif):
                if size is not None and out.size != (size[1], size[0]):
                    out = out.resize((size[1], size[0]), resample=resample)
                array = np.array(out, dtype=np.uint8)
        except (ImageReadError, MemoryError):  # running out of memory is not the file's fault
            raise
        except Exception as exc:
            raise _pillow_failure(path, exc, stage="decode") from exc
        return LoadedImage(array, width, height, capture_time(exif), mode)


def load_rgb(
    path: Path | str,
    size: tuple[int, int] | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
    resample: str | Image.Resampling = "bilinear",
) -> LoadedImage:
    """Decodes an image file to an RGB ``uint8`` array. Thread-safe; always closes the file.

    Applies the EXIF orientation, takes the first frame of multi-frame files and converts every
    mode to RGB: alpha is dropped (palette images go through RGBA first), 16-bit greyscale is
    scaled by 1/257, float images in 0..1 are scaled by 255 and other float or 32-bit images
    are min-max stretched. JPEGs are decoded at a reduced scale when ``size`` allows it.

    Args:
        path: Image file.
        size: (height, width) of the returned array, or None for the full image.
        max_pixels: Files whose header claims more pixels raise ``too_large`` before decoding;
            None disables our check (Pillow's own limit still applies).
        allow_truncated: Return the decodable part of a truncated file (the rest is filled by
            the decoder) instead of raising ``truncated``.
        resample: One of ``RESAMPLE_METHODS`` or a ``PIL.Image.Resampling`` member.

    Returns:
        The pixels and the original (post-orientation) width and height.

    Raises:
        ImageReadError: With one of the module's reason codes.
        ConfigError: If ``size`` or ``resample`` is invalid.
    """
    path = Path(path)
    size = _check_size(size)
    resample_filter = _resample_filter(resample)
    try:
        with TRUNCATION_GATE.strict():
            return _decode(path, size, max_pixels, resample_filter)
    except ImageReadError as exc:
        if not (allow_truncated and exc.reason == "truncated"):
            raise
    # Only files that really are truncated pay for the exclusive lock.
    with TRUNCATION_GATE.tolerant():
        return _decode(path, size, max_pixels, resample_filter)
