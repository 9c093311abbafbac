"""``ecoclassify benchmark``: how fast will labelling run on *this* machine?

Measures, in one run, the three rates that bound ``ecoclassify predict``: the model's own
forward speed on decoded tensors, the decoder's speed on camera-trap-sized JPEGs with the same
parallelism, and the end-to-end speed of ``predict`` on a folder of such JPEGs. Users plan a
run from the last number; the first two say which side limits it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ecoclassify.data.images import load_rgb
from ecoclassify.files import LABELS_FILE, MODEL_FILE
from ecoclassify.config.backbones import get_backbone

#: Generated test frames: the size of a common 3 MP camera-trap image.
FRAME_SIZE = (2048, 1536)


@dataclass
class BenchmarkResult:
    """Images per second for one backbone and input size on this machine."""

    backbone: str
    image_size: int
    batch_size: int
    workers: int
    forward: float
    decode: float
    end_to_end: float

    @property
    def efficiency(self) -> float:
        """End-to-end speed as a share of the slower of forward and decode (1.0 = at the limit)."""
        return self.end_to_end / min(self.forward, self.decode)

    def format(self) -> str:
        """A short table for the terminal."""
        limit = "model" if self.forward < self.decode else "decoder"
        return "\n".join([
            f"backbone {self.backbone} at {self.image_size} px, batch {self.batch_size}, "
            f"{self.workers} decoding thread(s), {os.cpu_count()} CPU core(s)",
            f"  model forward only   {self.forward:8.1f} img/s",
            f"  JPEG decode only     {self.decode:8.1f} img/s  ({FRAME_SIZE[0]}x{FRAME_SIZE[1]} frames)",
            f"  ecoclassify predict  {self.end_to_end:8.1f} img/s  ({self.efficiency:.0%} of the {limit}'s limit)",
            f"  100,000 images take about {100_000 / self.end_to_end / 3600:.1f} h",
        ])


def write_frames(folder: Path, count: int, distinct: int = 8,
                 size: tuple[int, int] = FRAME_SIZE) -> list[Path]:
    """Write ``count`` camera-trap-sized JPEGs (smooth noise, realistic file sizes) into ``folder``.

    ``distinct`` different frames are repeated; ``size`` is ``(width, height)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    sources = []
    for index in range(min(distinct, count)):
        coarse = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"frame_{index:05d}.jpg"
        image.save(path, quality=90)
        sources.append(path)
    paths = list(sources)
    for index in range(len(sources), count):
        path = folder / f"frame_{index:05d}.jpg"
        path.write_bytes(sources[index % len(sources)].read_bytes())
        paths.append(path)
    return paths


def _timed(fn, minimum_seconds: float = 2.0) -> float:
    """Calls per second of ``fn`` after one warm-up call, timed over at least ``minimum_seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= minimum_seconds and calls >= 2:
            return calls / elapsed


def benchmark(
    backbone: str = "mobilenet_v2",
    image_size: Optional[int] = None,
    *,
    batch_size: int = 32,
    images: int = 128,
    workers: Optional[int] = None,
) -> BenchmarkResult:
    """Measure forward, decode and end-to-end ``predict`` speed with random weights.

    Speed does not depend on the weights' values, so nothing is downloaded.

    Args:
        backbone: Registered backbone name.
        image_size: Model input side; defaults to the backbone's default size.
        batch_size: Images per model call.
        images: JPEGs in the end-to-end folder (more gives steadier numbers).
        workers: Decoding threads; defaults to the number of CPU cores, as ``predict`` does.

    Returns:
        The three rates in images per second.
    """
    from ecoclassify.config import Config
    from ecoclassify.models.build import build_model
    from ecoclassify.models.io import load_classifier
    from ecoclassify.prediction.labelling import predict

    spec = get_backbone(backbone, key="--backbone")
    size = image_size or spec.default_size
    workers = workers or os.cpu_count() or 1
    config = Config.from_dict({"data": {"source": "demo", "image_size": [size, size]},
                               "model": {"backbone": backbone, "weights": "none"},
                               "augmentation": {"enabled": False}})
    classes = ["a", "b", "c"]
    model = build_model(config, len(classes))
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    forward = batch_size * _timed(lambda: model.predict_on_batch(batch))  # compiled, as predict runs it
    with tempfile.TemporaryDirectory(prefix="ecoclassify-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        model.save(run_dir / MODEL_FILE)
        (run_dir / LABELS_FILE).write_text(json.dumps({"classes": classes, "image_size": [size, size]}))
        frames = write_frames(Path(tmp) / "frames", images)
        sample = frames[: max(2 * workers, min(32, len(frames)))]

        def decode_all() -> None:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda p: load_rgb(p, size=(size, size)).array, sample))

        decode = len(sample) * _timed(decode_all)
        classifier = load_classifier(run_dir)  # loaded once: the timing is about images, not start-up
        predict(classifier, frames[:batch_size], batch_size=batch_size, threads=workers)  # warm-up: tracing
        start = time.perf_counter()
        predict(classifier, Path(tmp) / "frames", batch_size=batch_size, threads=workers)
        end_to_end = len(frames) / (time.perf_counter() - start)
    return BenchmarkResult(backbone, size, batch_size, workers, forward, decode, end_to_end)


def result_dict(result: BenchmarkResult) -> dict:
    """JSON-ready form of a result, with the efficiency ratio."""
    return {**asdict(result), "efficiency": round(result.efficiency, 3)}
