"""Which JPEG decoder should feed the model? Measures the candidate designs in one run.

Prints img/s for decoding camera-trap-sized JPEGs to the model's input size with:

1. Pillow full decode + resize, one thread (the naive script);
2. Pillow ``draft()`` (DCT-domain downscale) + resize, one thread;
3. ecoclassify's loader (``load_rgb``: draft + EXIF orientation + colour modes) in a thread
   pool of one thread per core (Pillow releases the GIL while decoding);
4. the same loader inside ``tf.data`` (``numpy_function`` in a parallel ``map``), as training uses it;
5. ``tf.io.decode_jpeg`` full size + ``tf.image.resize`` in a parallel ``tf.data`` map;
6. ``tf.io.decode_jpeg(ratio=k)`` (libjpeg's DCT downscale) + resize, parallel ``tf.data``.

TensorFlow's decoder ignores EXIF orientation and CMYK/16-bit handling, so it is only a
speed reference: ecoclassify uses its own loader wherever images are read.

Usage: ``python bench/decode_options.py [--images 48] [--size 224] [--folder DIR]``. Without
``--folder`` it uses the real camera-trap JPEGs of ``../shared/data/camera-traps`` larger than
3 MP when present, else generates 12 MP JPEGs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ecoclassify._tf import quiet_tensorflow  # noqa: E402
from ecoclassify.data.images import load_rgb  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "camera-traps"


def large_jpegs(folder: Path | None, count: int, scratch: Path) -> list[Path]:
    """Camera-trap-sized JPEGs: the given folder, the shared real images >= 3 MP, or generated 12 MP ones."""
    if folder is None and SHARED.is_dir():
        candidates = []
        for path in sorted(SHARED.rglob("*")):
            if path.suffix.lower() in (".jpg", ".jpeg"):
                with Image.open(path) as image:
                    if image.width * image.height >= 3_000_000:
                        candidates.append(path)
        if candidates:
            return (candidates * (count // len(candidates) + 1))[:count]
    if folder is not None:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:count]
    rng = np.random.default_rng(0)
    base = (rng.random((3000 // 8, 4000 // 8, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(base).resize((4000, 3000), Image.Resampling.BICUBIC)
    paths = []
    for i in range(min(count, 8)):
        path = scratch / f"frame_{i}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return (paths * (count // len(paths) + 1))[:count]


def rate(fn, paths: list[Path]) -> float:
    fn(paths[:2])  # warm-up: imports, graph tracing, file cache
    start = time.perf_counter()
    fn(paths)
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args(argv)
    size = (args.size, args.size)
    workers = os.cpu_count() or 1
    quiet_tensorflow()
    import tensorflow as tf

    def pillow_full(paths):
        for p in paths:
            with Image.open(p) as im:
                np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR))

    def pillow_draft(paths):
        for p in paths:
            with Image.open(p) as im:
                im.draft("RGB", size)
                np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR))

    def loader_pool(paths):
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda p: load_rgb(p, size=size).array, paths))

    def tf_dataset(decode):
        def run(paths):
            ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
            for _ in ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(16).prefetch(2):
                pass
        return run

    def loader_numpy_function(path):
        image = tf.numpy_function(lambda p: load_rgb(p.decode(), size=size).array, [path], tf.uint8)
        image.set_shape((*size, 3))
        return image

    def tf_full(path):
        return tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), size)

    def tf_ratio(path):
        return tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(path), channels=3, ratio=8), size)

    with tempfile.TemporaryDirectory() as tmp:
        paths = large_jpegs(args.folder, args.images, Path(tmp))
        pixels = np.mean([Image.open(p).width * Image.open(p).height for p in set(paths)]) / 1e6
        results = [
            ("Pillow full decode + resize, 1 thread", rate(pillow_full, paths)),
            ("Pillow draft + resize, 1 thread", rate(pillow_draft, paths)),
            (f"ecoclassify load_rgb, {workers} threads", rate(loader_pool, paths)),
            ("ecoclassify load_rgb in tf.data (training pipeline)", rate(tf_dataset(loader_numpy_function), paths)),
            ("tf.io.decode_jpeg full + resize, tf.data", rate(tf_dataset(tf_full), paths)),
            ("tf.io.decode_jpeg ratio=8 + resize, tf.data", rate(tf_dataset(tf_ratio), paths)),
        ]
    print(f"{len(paths)} JPEGs of {pixels:.1f} MP on average -> {args.size} px; {workers} CPU core(s)")
    naive = results[0][1]
    for name, value in results:
        print(f"  {name:55s} {value:7.1f} img/s  ({value / naive:4.1f}x naive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
