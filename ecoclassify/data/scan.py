"""Scan: open and decode every image once, before training, and record what fails and why.

A failure is never silent and never crashes an epoch later: each file gets a ``status``
(``ok`` or ``failed``) with a reason code from :mod:`ecoclassify.data.images`, plus its
size, EXIF time and a content hash used to find duplicates and split leakage.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from ecoclassify.data.images import ImageReadError, load_rgb

SCAN_COLUMNS = ("status", "error", "detail", "width", "height", "exif_datetime", "sha1")


def scan_images(
    samples: pd.DataFrame,
    image_size: tuple[int, int],
    *,
    max_pixels: int,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> pd.DataFrame:
    """Decode every sample once (at the training size) and add the scan columns.

    Pillow releases the GIL while decoding, so a thread pool uses every core.

    Args:
        samples: Table with a ``filepath`` column.
        image_size: ``(height, width)`` the images are decoded to, as training will.
        max_pixels: Images with more pixels are ``too_large`` failures (decompression bombs).
        workers: Decoding threads; defaults to the number of CPUs.
        progress: Called as ``progress(advance, total)`` as files finish (for a progress bar).

    Returns:
        A copy of ``samples`` with the columns in ``SCAN_COLUMNS``.
    """
    paths = samples["filepath"].tolist()
    workers = workers or os.cpu_count() or 1

    def check(path: str) -> dict[str, object]:
        result = _check_one(Path(path), image_size, max_pixels)
        if progress is not None:
            progress(1, len(paths))
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(check, paths))
    scanned = samples.copy()
    for column in SCAN_COLUMNS:
        scanned[column] = [row[column] for row in rows]
    return scanned


def _check_one(path: Path, image_size: tuple[int, int], max_pixels: int) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(SCAN_COLUMNS, None)
    try:
        loaded = load_rgb(path, size=image_size, max_pixels=max_pixels)
        row["sha1"] = _sha1(path)
    except ImageReadError as exc:
        row.update(status="failed", error=exc.reason, detail=exc.detail)
        return row
    except OSError as exc:  # e.g. the file vanished between decode and hashing
        row.update(status="failed", error="unreadable", detail=str(exc))
        return row
    row.update(
        status="ok",
        error="",
        detail="",
        width=loaded.width,
        height=loaded.height,
        exif_datetime=loaded.datetime.isoformat(sep=" ") if loaded.datetime else "",
    )
    return row


def _sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_duplicates(scanned: pd.DataFrame) -> pd.DataFrame:
    """Byte-identical images: one row per file that shares its content with another.

    Returns:
        Columns ``sha1``, ``filepath``, ``label`` (and ``split`` when present), grouped by hash.
    """
    ok = scanned[scanned["status"] == "ok"]
    shared = ok[ok.duplicated("sha1", keep=False)]
    columns = [c for c in ("sha1", "filepath", "label", "split") if c in shared.columns]
    return shared[columns].sort_values(["sha1", "filepath"]).reset_index(drop=True)


def find_leaks(duplicates: pd.DataFrame) -> pd.DataFrame:
    """Duplicate groups whose copies sit in more than one split (test images seen in training)."""
    if "split" not in duplicates.columns or duplicates.empty:
        return duplicates.iloc[0:0]
    spread = duplicates.groupby("sha1")["split"].nunique()
    return duplicates[duplicates["sha1"].isin(spread[spread > 1].index)].reset_index(drop=True)
