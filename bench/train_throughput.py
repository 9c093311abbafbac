"""Training throughput: ecoclassify's training loop against a hand-written ``model.fit``.

Prints two ratios, each measured in this one run on this machine:

1. toolkit epoch time / hand-written ``model.fit`` epoch time on the same tf.data input and
   the same model (target <= 1.10): what the toolkit's callbacks, checkpointing and logging
   cost per epoch.
2. head-stage epoch time with the feature cache / without it, for a frozen VGG16 (target
   <= 0.10 from the second epoch): what ``training.cache_features`` saves.

Usage: ``python bench/train_throughput.py [--images 192] [--size 128] [--epochs 4]``.
Images are generated (noise JPEGs in class colours); the timing does not depend on content.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ecoclassify._tf import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402

from ecoclassify.config import Config  # noqa: E402
from ecoclassify.data.pipeline import make_dataset  # noqa: E402
from ecoclassify.models.build import build_model  # noqa: E402
from ecoclassify.training.session import train  # noqa: E402

CLASSES = {"a": (150, 90, 40), "b": (40, 90, 160), "c": (60, 150, 60)}


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (training and validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def write_images(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        label, colour = list(CLASSES.items())[i % len(CLASSES)]
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / label / f"{i:05d}.jpg", quality=90)


def config(root: Path, out: Path, size: int, epochs: int, **training) -> Config:
    return Config.from_dict({
        "experiment": {"name": "bench", "output_dir": str(out), "seed": 1},
        "data": {"source": "folders", "root": str(root), "image_size": [size, size],
                 "split": {"val": 0.2, "test": 0.1}},
        "model": {"backbone": training.pop("backbone", "mobilenet_v2"), "weights": "none",
                  "head": {"dense": [64], "dropout": 0.2}},
        "augmentation": {"enabled": False},
        "training": {"batch_size": 32, "epochs": epochs, "early_stopping": {"enabled": False}, **training},
    })


def steady(times: list[float]) -> float:
    """Median epoch time from the second epoch on (the first pays tracing and decoding)."""
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def toolkit_vs_plain_fit(root: Path, out: Path, size: int, epochs: int) -> tuple[float, float]:
    cfg = config(root, out, size, epochs, mode="scratch", cache_features=False)
    timer = EpochTimer()
    run = train(cfg, callbacks=[timer], verbose=0)
    toolkit = steady(timer.times)

    import pandas as pd

    splits = pd.read_csv(run.run_dir / "splits.csv")
    classes = sorted(CLASSES)
    index = {c: i for i, c in enumerate(classes)}
    frames = {s: splits[splits["split"] == s] for s in ("train", "val")}
    data = {s: make_dataset(f["filepath"], (size, size), 32, labels=f["label"].map(index), num_classes=3,
                            shuffle=s == "train", seed=1) for s, f in frames.items()}
    keras.utils.set_random_seed(1)
    model = build_model(cfg, 3)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.F1Score(average="macro")])
    plain_timer = EpochTimer()
    model.fit(data["train"], validation_data=data["val"], epochs=epochs, callbacks=[plain_timer], verbose=0)
    return toolkit, steady(plain_timer.times)


def cache_vs_images(root: Path, out: Path, size: int, epochs: int) -> tuple[float, float]:
    results = []
    for cache in (True, False):
        timer = EpochTimer()
        train(config(root, out, size, epochs, backbone="vgg16", mode="transfer", cache_features=cache),
              callbacks=[timer], verbose=0)
        results.append(steady(timer.times))
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "images", Path(tmp) / "runs"
        write_images(root, args.images, args.size)
        toolkit, plain = toolkit_vs_plain_fit(root, out, args.size, args.epochs)
        cached, uncached = cache_vs_images(root, out, args.size, args.epochs)
    print(f"machine: {os.cpu_count()} CPU(s), keras {keras.__version__}; {args.images} images at {args.size} px, "
          f"batch 32, median epoch from the 2nd of {args.epochs}")
    print(f"mobilenet_v2 epoch: ecoclassify {toolkit:.2f} s / hand-written fit {plain:.2f} s "
          f"= {toolkit / plain:.3f}  (target <= 1.10)")
    print(f"frozen vgg16 head epoch: cached features {cached:.3f} s / images {uncached:.2f} s "
          f"= {cached / uncached:.3f}  (target <= 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
