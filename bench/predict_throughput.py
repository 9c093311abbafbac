"""Labelling throughput: ``ecoclassify predict`` against its two limits and a naive script.

For ``mobilenet_v2`` and ``vgg16`` at 224 px, on one folder of >= 3 MP JPEGs (the real
camera-trap frames of ``../shared/data/camera-traps`` when present, else generated ones),
prints img/s measured in this one run for:

- ``predict``: the library function ``ecoclassify predict`` wraps (model loaded once);
- forward only: the model on pre-decoded tensors (``predict_on_batch``, batch 32);
- decode only: ecoclassify's loader with the same threads as ``predict``;
- naive: Pillow open + full decode + resize in a Python loop, then ``model.predict`` per batch;

and the ratios predict / min(forward, decode) (target >= 0.90) and predict / naive (target
>= 3 for mobilenet_v2). On a CPU-only machine decoding and the model share the same cores,
so the first ratio is bounded by ~min/(sum of the two costs); the output says so.

Finally, peak RSS of a ``predict`` process over 1,000 and 10,000 small JPEGs (a tiny model),
which must stay flat: memory must not grow with the number of files.

Usage: ``python bench/predict_throughput.py [--images 160] [--skip-rss]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ecoclassify._tf import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from ecoclassify.benchmarking import _timed, write_frames  # noqa: E402
from ecoclassify.config import Config  # noqa: E402
from ecoclassify.data.images import load_rgb  # noqa: E402
from ecoclassify.models.build import build_model  # noqa: E402
from ecoclassify.models.io import load_classifier  # noqa: E402
from ecoclassify.prediction.labelling import predict  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "camera-traps"
SIZE = 224
BATCH = 32


def camera_trap_folder(folder: Path, count: int) -> str:
    """Fill ``folder`` with ``count`` JPEGs of at least 3 MP; returns where they came from."""
    real = []
    if SHARED.is_dir():
        for path in sorted(SHARED.rglob("*")):
            if path.suffix.lower() in (".jpg", ".jpeg"):
                with Image.open(path) as image:
                    if image.width * image.height >= 3_000_000:
                        real.append(path)
    if not real:
        write_frames(folder, count)
        return "generated 2048x1536 JPEGs"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        shutil.copyfile(real[index % len(real)], folder / f"{index:05d}.jpg")
    megapixels = np.mean([Image.open(p).width * Image.open(p).height for p in real]) / 1e6
    return f"{len(real)} real camera-trap JPEGs >= 3 MP from ../shared (mean {megapixels:.1f} MP), repeated"


def save_model(backbone: str, folder: Path, size: int = SIZE) -> Path:
    config = Config.from_dict({"data": {"source": "demo", "image_size": [size, size]},
                               "model": {"backbone": backbone, "weights": "none",
                                         "custom_cnn": {"filters": [8, 16]}},
                               "augmentation": {"enabled": False}})
    folder.mkdir(parents=True, exist_ok=True)
    build_model(config, 3).save(folder / "model.keras")
    (folder / "labels.json").write_text(json.dumps({"classes": ["a", "b", "c"], "image_size": [size, size]}))
    return folder


def measure(backbone: str, frames: Path, scratch: Path) -> dict[str, float]:
    classifier = load_classifier(save_model(backbone, scratch / backbone))
    model, paths = classifier.model, sorted(frames.iterdir())
    threads = os.cpu_count() or 1
    batch = np.random.default_rng(0).integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    forward = BATCH * _timed(lambda: model.predict_on_batch(batch))

    def decode_all() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: load_rgb(p, size=(SIZE, SIZE)).array, paths[:64]))

    decode = 64 * _timed(decode_all)

    predict(classifier, paths[:BATCH], batch_size=BATCH)  # warm-up: tracing
    start = time.perf_counter()
    predict(classifier, frames, batch_size=BATCH)
    ours = len(paths) / (time.perf_counter() - start)

    def naive() -> None:
        for first in range(0, len(paths), BATCH):
            arrays = []
            for path in paths[first:first + BATCH]:
                with Image.open(path) as image:
                    arrays.append(np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)))
            model.predict(np.stack(arrays), verbose=0)

    start = time.perf_counter()
    naive()
    naive_rate = len(paths) / (time.perf_counter() - start)
    return {"predict": ours, "forward": forward, "decode": decode, "naive": naive_rate}


RSS_SCRIPT = """
import resource, sys
from ecoclassify.prediction.labelling import predict
predict(sys.argv[1], sys.argv[2], batch_size=32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(model_dir: Path, folder: Path) -> float:
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(model_dir), str(folder)], capture_output=True,
                            text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def rss_flatness(scratch: Path) -> tuple[float, float]:
    model_dir = save_model("custom_cnn", scratch / "tiny", size=64)
    rng = np.random.default_rng(0)
    small = scratch / "small"
    small.mkdir()
    sources = []
    for index in range(16):
        path = small / f"src_{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(path, quality=85)
        sources.append(path.read_bytes())
    results = []
    for count in (1_000, 10_000):
        folder = scratch / f"n{count}"
        folder.mkdir()
        for index in range(count):
            (folder / f"{index:06d}.jpg").write_bytes(sources[index % len(sources)])
        results.append(peak_rss_mb(model_dir, folder))
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ecoclassify-bench-") as tmp:
        scratch = Path(tmp)
        source = camera_trap_folder(scratch / "frames", args.images)
        results = {backbone: measure(backbone, scratch / "frames", scratch) for backbone in ("mobilenet_v2", "vgg16")}
        rss = None if args.skip_rss else rss_flatness(scratch)
    print(f"{args.images} images: {source}; {SIZE} px, batch {BATCH}, {os.cpu_count()} CPU core(s)")
    for backbone, r in results.items():
        limit = min(r["forward"], r["decode"])
        shared = 1 / (1 / r["forward"] + 1 / r["decode"])  # both on the same cores, no overlap gain
        print(f"{backbone}: predict {r['predict']:.1f} img/s | forward only {r['forward']:.1f} | decode only "
              f"{r['decode']:.1f} | naive script {r['naive']:.1f}")
        print(f"  predict / min(forward, decode) = {r['predict'] / limit:.2f}  (target >= 0.90; "
              f"{shared / limit:.2f} if decode and model simply shared the cores)")
        print(f"  predict / naive = {r['predict'] / r['naive']:.2f}" + ("  (target >= 3)" if backbone == "mobilenet_v2"
                                                                        else ""))
    if rss is not None:
        print(f"peak RSS of predict: {rss[0]:.0f} MB for 1,000 images, {rss[1]:.0f} MB for 10,000 "
              f"(ratio {rss[1] / rss[0]:.2f}; flat means ~1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
