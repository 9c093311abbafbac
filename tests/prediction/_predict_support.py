"""Helpers shared by the predict, sort and sequence tests: a tiny trained model and odd image files.

Not a test module (no ``test_`` prefix); imported by ``test_predict.py``, ``test_sort.py`` and ``test_sequences.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

COLOURS = {"deer": (150, 90, 40), "fox": (40, 90, 160), "owl": (60, 150, 60)}

# Run the CLI with the commands registered, whether or not cli.py wires them itself yet.
CLI = [sys.executable, "-c", "from ecoclassify.cli.app import main; from ecoclassify.cli.predict_commands import predict_command, "
       "sort_command; main.add_command(predict_command); main.add_command(sort_command); main()"]


def train_tiny_model(folder: Path) -> Path:
    """Build the tiny custom CNN, fit it for a few steps on class colours, save a run-like folder.

    Returns:
        ``folder`` holding ``model.keras`` and ``labels.json`` (classes deer, fox, owl; 32 px).
    """
    import json

    import keras

    from ecoclassify.config import Config
    from ecoclassify.models.build import build_model

    config = Config.from_dict({
        "experiment": {"name": "tiny", "output_dir": str(folder), "seed": 7},
        "data": {"source": "folders", "root": str(folder), "image_size": [32, 32]},
        "model": {"backbone": "custom_cnn", "weights": "none",
                  "custom_cnn": {"filters": [8, 16], "convs_per_block": 1}, "head": {"dense": [16], "dropout": 0.0}},
        "augmentation": {"enabled": False},
    })
    keras.utils.set_random_seed(7)
    model = build_model(config, len(COLOURS))
    rng = np.random.default_rng(0)
    images, labels = [], []
    for index, colour in enumerate(COLOURS.values()):
        for _ in range(24):
            images.append(np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8))
            labels.append(index)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(np.stack(images), np.array(labels), epochs=6, batch_size=12, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "labels.json").write_text(json.dumps({"classes": list(COLOURS), "image_size": [32, 32]}))
    return folder


def coloured(path: Path, label: str, size: tuple[int, int] = (40, 48), seed: int = 0, **save_options) -> Path:
    """An image of a class colour plus noise (format from the suffix); returns its path."""
    rng = np.random.default_rng(seed)
    height, width = size
    pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


def exif_time(when: dt.datetime, orientation: int | None = None) -> Image.Exif:
    """EXIF with DateTimeOriginal (and an orientation), as a camera writes it."""
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = when.strftime("%Y:%m:%d %H:%M:%S")
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    return exif


def jpeg_bytes(label: str = "deer", size: tuple[int, int] = (48, 64)) -> bytes:
    buffer = io.BytesIO()
    coloured_array = np.clip(np.array(COLOURS[label]) + np.random.default_rng(1).normal(0, 20, (*size, 3)), 0, 255)
    Image.fromarray(coloured_array.astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose valid header claims ``width`` x ``height`` but holds one row of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``ecoclassify ARGS`` in a fresh Python process."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


_CACHE: dict[str, Path] = {}


def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model, trained once per test session whichever module asks first."""
    if "model" not in _CACHE:
        _CACHE["model"] = train_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    return _CACHE["model"]
