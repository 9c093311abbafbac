"""Shared fixtures: tiny real images, class folders, CSV and YAML files written to ``tmp_path``.

Kept small and generic so every test module (config, data, training, predict) can reuse them.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pytest
import yaml
from PIL import Image

SHARED_REASON = "../shared not present (a user's clone): real camera-trap data and weights are only in CI"


def _make_image(
    path: Path | str,
    size: int | tuple[int, int] = 32,
    colour: tuple[int, int, int] | None = None,
    **save_options: Any,
) -> Path:
    """Write a small real image (format from the suffix) and return its path.

    Without ``colour`` the pixels are noise seeded by the path, so every file has different
    bytes (no accidental duplicates) and the same path always gets the same bytes.
    ``size`` is a side length or ``(height, width)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = (size, size) if isinstance(size, int) else size
    if colour is None:
        rng = np.random.default_rng(zlib.crc32(path.as_posix().encode("utf-8")))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[...] = colour
    Image.fromarray(pixels, "RGB").save(path, **save_options)
    return path


def _write_class_folders(
    root: Path | str, counts: Mapping[str, int], suffix: str = ".jpg", size: int = 32
) -> dict[str, list[Path]]:
    """Write ``root/<class>/img_NNN<suffix>`` with ``counts[class]`` distinct images per class."""
    root = Path(root)
    written: dict[str, list[Path]] = {}
    for label, count in counts.items():
        written[label] = [_make_image(root / label / f"img_{i:03d}{suffix}", size) for i in range(count)]
    return written


def _write_csv(path: Path | str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file with ``header`` and ``rows``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_config(folder: Path | str, config: Mapping[str, Any], name: str = "config.yaml") -> Path:
    """Write ``config`` as a YAML file in ``folder`` and return its path."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def _folder_snapshot(folder: Path | str) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) as ``{relative posix path: bytes}``; folders as b"<dir>"."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(folder.rglob("*"))
    }


# The helpers as fixtures, so test modules take them as arguments instead of importing conftest.


@pytest.fixture
def make_image():
    """``make_image(path, size=32, colour=None, **save_options) -> Path``."""
    return _make_image


@pytest.fixture
def write_class_folders():
    """``write_class_folders(root, {"deer": 6, "fox": 6}, suffix=".jpg") -> {class: [paths]}``."""
    return _write_class_folders


@pytest.fixture
def write_csv():
    """``write_csv(path, header, rows) -> Path``."""
    return _write_csv


@pytest.fixture
def write_config():
    """``write_config(folder, mapping, name="config.yaml") -> Path``."""
    return _write_config


@pytest.fixture
def folder_snapshot():
    """``folder_snapshot(folder) -> {relative path: bytes}``, to assert a folder is unchanged."""
    return _folder_snapshot


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` next to the repository (real camera-trap data and weights); skipped when absent."""
    path = Path(__file__).resolve().parents[2] / "shared"
    if not path.is_dir():
        pytest.skip(SHARED_REASON)
    return path
