"""The built-in demo data set: small synthetic "camera-trap-like" images, generated deterministically.

It exists so the quickstart and the tests run anywhere offline. It is **synthetic**: drawn
shapes of a few animal-like classes on textured backgrounds from three "sites", with day
and infrared-night frames, bursts of three images and EXIF DateTimeOriginal timestamps.
It teaches nothing about real animals; use it to learn the tool, not to judge a model.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_CLASSES = ("bird", "deer", "empty", "fox")
DEMO_SITES = ("site_a", "site_b", "site_c")
_VERSION = 1
_DONE = ".complete"

# Background palettes per site (ground, vegetation) and animal colours: enough structure
# that a small CNN learns the classes in a minute, enough variation that it must generalise.
_SITE_COLOURS = {
    "site_a": ((120, 110, 70), (60, 100, 40)),
    "site_b": ((150, 130, 100), (90, 110, 60)),
    "site_c": ((90, 90, 80), (40, 80, 50)),
}
_ANIMAL_COLOURS = {"deer": (125, 85, 50), "fox": (205, 105, 35), "bird": (35, 35, 45)}


def default_demo_root(images_per_class: int, image_size: int) -> Path:
    """Where the demo set is cached: ``$ECOCLASSIFY_CACHE`` or ``~/.cache/ecoclassify``."""
    base = Path(os.environ.get("ECOCLASSIFY_CACHE") or Path.home() / ".cache" / "ecoclassify")
    return base / f"demo-v{_VERSION}-{images_per_class}x{image_size}px"


def ensure_demo_dataset(root: Path | None = None, images_per_class: int = 60, image_size: int = 64) -> Path:
    """Create the demo data set under ``root`` unless it is already complete there.

    The folder holds ``<class>/<site>_<nnnn>.jpg`` images and ``labels.csv`` with the columns
    ``filepath,label,site,datetime,sequence``. Generation is deterministic (fixed seed), and
    the folder is written to a temporary sibling and renamed, so a crash never leaves half a set.

    Args:
        root: Target folder; defaults to :func:`default_demo_root`.
        images_per_class: Images of each class (spread over the three sites).
        image_size: Side length of the square images in pixels.

    Returns:
        The folder containing ``labels.csv``.
    """
    root = Path(root) if root is not None else default_demo_root(images_per_class, image_size)
    if (root / _DONE).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _generate(tmp, images_per_class, image_size)
        (tmp / _DONE).write_text(f"ecoclassify demo data set v{_VERSION}\n")
        if root.exists():  # an incomplete earlier attempt
            shutil.rmtree(root)
        os.replace(tmp, root)
    except FileExistsError:  # another process finished first; its set is identical
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _generate(folder: Path, images_per_class: int, size: int) -> None:
    rng = np.random.default_rng(20240601)
    rows = []
    start = datetime(2024, 6, 1, 6, 0, 0)
    for label in DEMO_CLASSES:
        (folder / label).mkdir()
        for index in range(images_per_class):
            burst, frame = divmod(index, 3)
            site = DEMO_SITES[burst % len(DEMO_SITES)]
            when = start + timedelta(hours=7 * burst + 3 * DEMO_CLASSES.index(label), seconds=2 * frame)
            night = not 6 <= when.hour < 19
            image = _draw(label, site, night, size, rng)
            name = f"{label}/{site}_{index:04d}.jpg"
            exif = Image.Exif()
            exif[0x0110] = "ecoclassify demo camera"  # Model
            exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
            image.save(folder / name, quality=90, exif=exif)
            sequence = f"{site}-{label}-{burst:03d}"
            rows.append((name, label, site, when.isoformat(sep=" "), sequence))
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "label", "site", "datetime", "sequence"])
        writer.writerows(rows)


def _draw(label: str, site: str, night: bool, size: int, rng: np.random.Generator) -> Image.Image:
    ground, plants = _SITE_COLOURS[site]
    # Background: vertical gradient from vegetation to ground plus blotchy noise.
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    base = (1 - t) * np.array(plants) + t * np.array(ground)
    noise = rng.normal(0, 18, (size // 4 + 1, size // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:size, :size]
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1))
    draw = ImageDraw.Draw(image)
    s = size / 64.0
    if label != "empty":
        colour = tuple(int(c * rng.uniform(0.8, 1.2)) for c in _ANIMAL_COLOURS[label])
        cx, cy = rng.uniform(18, 46) * s, rng.uniform(24, 44) * s
        scale = rng.uniform(0.8, 1.25) * s
        facing = 1 if rng.random() < 0.5 else -1
        _ANIMALS[label](draw, cx, cy, scale, facing, colour)
    if night:
        grey = np.asarray(image.convert("L"), dtype=np.float32) * 0.6 + 40
        image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    return image


def _deer(draw: ImageDraw.ImageDraw, cx: float, cy: float, k: float, facing: int, colour: tuple) -> None:
    draw.ellipse([cx - 13 * k, cy - 6 * k, cx + 13 * k, cy + 6 * k], fill=colour)
    for dx in (-9, -5, 5, 9):  # long legs
        draw.line([cx + dx * k, cy + 4 * k, cx + dx * k, cy + 17 * k], fill=colour, width=max(1, int(2 * k)))
    hx = cx + facing * 14 * k
    draw.line([cx + facing * 10 * k, cy - 3 * k, hx, cy - 13 * k], fill=colour, width=max(1, int(4 * k)))
    draw.ellipse([hx - 3 * k, cy - 17 * k, hx + 3 * k, cy - 11 * k], fill=colour)


def _fox(draw: ImageDraw.ImageDraw, cx: float, cy: float, k: float, facing: int, colour: tuple) -> None:
    draw.ellipse([cx - 9 * k, cy - 4 * k, cx + 9 * k, cy + 4 * k], fill=colour)
    for dx in (-6, 6):  # short legs
        draw.line([cx + dx * k, cy + 2 * k, cx + dx * k, cy + 8 * k], fill=(40, 30, 20), width=max(1, int(2 * k)))
    tail = [(cx - facing * 8 * k, cy), (cx - facing * 20 * k, cy + 2 * k), (cx - facing * 8 * k, cy + 3 * k)]
    draw.polygon(tail, fill=colour)
    hx = cx + facing * 10 * k
    draw.polygon([(hx, cy - 8 * k), (hx + facing * 7 * k, cy - 2 * k), (hx - facing * 2 * k, cy)], fill=colour)
    draw.polygon([(hx, cy - 8 * k), (hx + facing * 2 * k, cy - 12 * k), (hx + facing * 3 * k, cy - 6 * k)], fill=colour)


def _bird(draw: ImageDraw.ImageDraw, cx: float, cy: float, k: float, facing: int, colour: tuple) -> None:
    cy -= 14 * k  # birds sit or fly higher in the frame
    draw.ellipse([cx - 5 * k, cy - 3 * k, cx + 5 * k, cy + 3 * k], fill=colour)
    draw.polygon([(cx - 3 * k, cy), (cx + 2 * k, cy), (cx - 6 * k, cy - 10 * k)], fill=colour)
    draw.polygon([(cx - 1 * k, cy), (cx + 4 * k, cy), (cx + 8 * k, cy - 9 * k)], fill=colour)
    draw.polygon([(cx + facing * 5 * k, cy - 1 * k), (cx + facing * 9 * k, cy), (cx + facing * 5 * k, cy + 1 * k)],
                 fill=(200, 170, 40))


_ANIMALS = {"deer": _deer, "fox": _fox, "bird": _bird}
