"""What an image's EXIF block says: orientation and capture time, read without ever failing a photo."""

from __future__ import annotations

import datetime as dt
import re

from PIL import ExifTags, Image

# EXIF orientation -> the transpose that displays the image upright. Same table as
# ImageOps.exif_transpose, applied directly so that rewriting damaged EXIF/XMP metadata (which
# exif_transpose does) can never fail an otherwise good photo.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # transposes and 90-degree rotations
_EXIF_DATETIME = re.compile(r"(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def parse_exifcapture_time(value: object) -> dt.datetime | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        return None
    match = _EXIF_DATETIME.search(value)
    if not match:
        return None
    try:
        return dt.datetime(*(int(part) for part in match.groups()))
    except ValueError:  # "0000:00:00 00:00:00" and other impossible dates cameras write
        return None


def exif_of(img: Image.Image, *, allow_decode: bool) -> Image.Exif:
    """The image's EXIF block; empty when it is damaged, or (``allow_decode=False``) costs a decode."""
    # PngImageFile.getexif() decodes the whole image when eXIf comes after IDAT; a header read
    # must not pay for that, so such a PNG reports no EXIF until it is loaded.
    if not allow_decode and img.format == "PNG" and "exif" not in img.info:
        return Image.Exif()
    try:
        return img.getexif()
    except Exception:  # damaged EXIF must not cost us an otherwise good photo
        return Image.Exif()


def orientation_of(exif: Image.Exif) -> int:
    """EXIF orientation 1..8 (1, upright, when missing or invalid)."""
    try:
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def capture_time(exif: Image.Exif) -> dt.datetime | None:
    """When the photo was taken: ``DateTimeOriginal``, else ``DateTime``; None when neither parses."""
    try:
        original = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
    except Exception:
        original = None
    fallback = exif.get(ExifTags.Base.DateTime)
    return parse_exifcapture_time(original) or parse_exifcapture_time(fallback)
