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

Then peak RSS of a ``predict`` process over 1,000 and 10,000 small JPEGs (a tiny model),
which must stay flat: memory must not grow with the number of files.

Finally, ``--runtime keras`` against ``--runtime litert`` (issue #19): ``predict`` end to end on
generated 12 MP (4000x3000) JPEGs for efficientnet_lite0, mobilenet_v2 and vgg16 at 224 px
(random weights: speed does not depend on them), images/s and CPU seconds per image of this
process (``time.process_time``: all threads; contention on a shared machine does not inflate
it the way it does wall time), and the litert/keras ratios (goal >= 1.6 on Lite0 and
MobileNetV2). LiteRT's one-off conversion and agreement check happen in a warm-up run and
are reported apart. ``--end-to-end N`` adds the issue's own measurement: whole ``ecoclassify
predict`` processes (TensorFlow start-up and model loading included) over the first N real
camera-trap JPEGs of ``../shared``, CPU seconds per image of the child processes, best of two.

Usage: ``python bench/predict_throughput.py [--images 160] [--skip-rss] [--runtime-images 64]
[--only classic|runtimes] [--end-to-end 150]``.
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
#: What ``predict --runtime`` is compared on: the shipped backbones, at 12 MP.
RUNTIME_BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "vgg16")
TWELVE_MP = (4000, 3000)


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


def timed_predict(classifier: object, frames: Path, runtime: str, batch: int) -> dict[str, float]:
    """One ``predict`` over ``frames``: images/s (wall) and CPU seconds per image (this process)."""
    count = len(list(frames.iterdir()))
    wall, cpu = time.perf_counter(), time.process_time()
    predict(classifier, frames, batch_size=batch, runtime=runtime)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": count / wall, "cpu_s_per_image": cpu / count}


def compare_runtimes(frames: Path, scratch: Path, batch: int) -> dict[str, dict[str, float]]:
    """keras and litert on the same folder, per backbone, in steady state: the model loaded once
    (as for a large card set), warm-ups (Keras tracing, LiteRT conversion and check) untimed."""
    results = {}
    warm_up = sorted(frames.iterdir())[:batch]
    for backbone in RUNTIME_BACKBONES:
        model_dir = save_model(backbone, scratch / f"runtime-{backbone}")
        classifier = load_classifier(model_dir)
        started = time.perf_counter()
        predict(classifier, warm_up, batch_size=batch, runtime="litert")  # converts and checks, once
        conversion = time.perf_counter() - started
        predict(classifier, warm_up, batch_size=batch, runtime="keras")
        keras_result = timed_predict(classifier, frames, "keras", batch)
        litert_result = timed_predict(classifier, frames, "litert", batch)
        record = json.loads((model_dir / "model.litert.json").read_text())
        forward = forward_cpu_per_image(classifier, model_dir / "model.litert.tflite", batch)
        results[backbone] = {
            "keras_images_per_s": keras_result["images_per_s"], "litert_images_per_s": litert_result["images_per_s"],
            "keras_cpu_s_per_image": keras_result["cpu_s_per_image"],
            "litert_cpu_s_per_image": litert_result["cpu_s_per_image"],
            "conversion_s": conversion, "max_abs_diff": record["agreement"]["max_abs_diff"],
            "xnnpack": record["xnnpack"], **forward,
        }
    return results


def forward_cpu_per_image(classifier: object, tflite: Path, batch: int, repeats: int = 4) -> dict[str, float]:
    """CPU seconds per image of the model call alone, on a pre-decoded batch, for both runtimes."""
    from ecoclassify.models.runtimes import KerasRuntime, LiteRTRuntime

    pixels = np.random.default_rng(0).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    result = {}
    for name, runtime in (("keras", KerasRuntime(classifier.model)),
                          ("litert", LiteRTRuntime(model_path=tflite, batch_size=batch))):
        runtime.predict_batch(pixels)
        cpu = time.process_time()
        for _ in range(repeats):
            runtime.predict_batch(pixels)
        result[f"{name}_forward_cpu_s_per_image"] = (time.process_time() - cpu) / (repeats * batch)
    return result


def decode_cpu_per_image(frames: Path, count: int = 16) -> float:
    """CPU seconds per image to decode a 12 MP JPEG to the model's size (the part both runtimes share)."""
    paths = sorted(frames.iterdir())[:count]
    cpu = time.process_time()
    for path in paths:
        load_rgb(path, size=(SIZE, SIZE))
    return (time.process_time() - cpu) / len(paths)


def end_to_end(count: int, scratch: Path) -> dict[str, dict[str, float]]:
    """CPU s per image of whole ``ecoclassify predict`` processes, keras and litert alternated, best of two."""
    import resource

    images = sorted(SHARED.rglob("*.jpg"))[:count]
    listing = scratch / "end-to-end.txt"
    listing.write_text("".join(f"{path}\n" for path in images))
    command = [sys.executable, "-c", "from ecoclassify.cli import main; main()", "predict"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results = {}
    for backbone in ("efficientnet_lite0", "mobilenet_v2"):
        model_dir = save_model(backbone, scratch / f"end-to-end-{backbone}")
        args = [str(model_dir), str(listing), "-o", str(scratch / "end-to-end.csv"), "--overwrite"]
        subprocess.run([*command, *args, "--runtime", "litert"], check=True, capture_output=True, env=env)  # converts
        cpu: dict[str, list[float]] = {"keras": [], "litert": []}
        for runtime in ("keras", "litert", "keras", "litert"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([*command, *args, "--runtime", runtime], check=True, capture_output=True, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu[runtime].append(used / len(images))
        results[backbone] = {runtime: min(values) for runtime, values in cpu.items()}
    return results


def print_runtimes(results: dict[str, dict[str, float]], count: int, batch: int, decode: float) -> None:
    print(f"\npredict --runtime keras vs litert: {count} generated 12 MP JPEGs (4000x3000), {SIZE} px, batch {batch}, "
          f"{os.cpu_count()} CPU core(s), random weights; decoding alone {decode:.3f} CPU s/img")
    print("| backbone | keras img/s | litert img/s | ratio img/s | keras CPU s/img | litert CPU s/img | "
          "ratio CPU | conversion + check s | max abs dp (check) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backbone, r in results.items():
        print(f"| {backbone} | {r['keras_images_per_s']:.2f} | {r['litert_images_per_s']:.2f} | "
              f"{r['litert_images_per_s'] / r['keras_images_per_s']:.2f}x | {r['keras_cpu_s_per_image']:.3f} | "
              f"{r['litert_cpu_s_per_image']:.3f} | {r['keras_cpu_s_per_image'] / r['litert_cpu_s_per_image']:.2f}x | "
              f"{r['conversion_s']:.0f} | {r['max_abs_diff']:.1e} |")
    print("\nmodel call alone (pre-decoded batch), CPU s/img:")
    for backbone, r in results.items():
        keras_cpu, litert_cpu = r["keras_forward_cpu_s_per_image"], r["litert_forward_cpu_s_per_image"]
        print(f"  {backbone}: keras {keras_cpu:.4f}, litert {litert_cpu:.4f}, ratio {keras_cpu / litert_cpu:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--runtime-images", type=int, default=64, help="12 MP JPEGs for the keras/litert comparison")
    parser.add_argument("--runtime-batch", type=int, default=16)
    parser.add_argument("--only", choices=("classic", "runtimes"), help="run one part only")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N",
                        help="also time whole predict processes over N real JPEGs of ../shared, both runtimes")
    args = parser.parse_args(argv)
    results, rss, runtimes, whole = {}, None, None, None
    with tempfile.TemporaryDirectory(prefix="ecoclassify-bench-") as tmp:
        scratch = Path(tmp)
        if args.only != "runtimes":
            source = camera_trap_folder(scratch / "frames", args.images)
            results = {backbone: measure(backbone, scratch / "frames", scratch)
                       for backbone in ("mobilenet_v2", "vgg16")}
            rss = None if args.skip_rss else rss_flatness(scratch)
        if args.only != "classic":
            write_frames(scratch / "frames-12mp", args.runtime_images, size=TWELVE_MP)
            runtimes = compare_runtimes(scratch / "frames-12mp", scratch, args.runtime_batch)
            decode = decode_cpu_per_image(scratch / "frames-12mp")
        if args.end_to_end and SHARED.is_dir():
            whole = end_to_end(args.end_to_end, scratch)
    if runtimes is not None:
        print_runtimes(runtimes, args.runtime_images, args.runtime_batch, decode)
    if whole is not None:
        print(f"\nwhole predict processes over {args.end_to_end} real camera-trap JPEGs, CPU s/img (best of two):")
        for backbone, r in whole.items():
            print(f"  {backbone}: keras {r['keras']:.3f}, litert {r['litert']:.3f}, "
                  f"ratio {r['keras'] / r['litert']:.2f}x")
    if not results:
        return 0
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
