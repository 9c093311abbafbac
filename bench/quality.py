"""Model quality on real camera-trap images: ecoclassify's shipped configs against the textbook recipe.

For two split policies (``stratified``, and ``source``: grouped by the ``source`` column, so the
test images come from sources never seen in training) and three seeds each, this trains

1. the textbook VGG16 recipe written by hand in plain Keras (``bench/textbook_recipe.py``) on
   exactly the splits of the ecoclassify runs (read from their ``splits.csv``), same image size;
2. ``ecoclassify.train`` with ``configs/camera_traps_vgg16_{transfer,finetune}.yaml``;
3. the same with ``configs/camera_traps_efficientnet_lite0_{transfer,finetune}.yaml`` (genuine
   ImageNet weights), plus the transfer config with the toolkit's default ``training.monitor``;
4. the no-transfer baselines ``configs/camera_traps_custom_cnn.yaml`` and
   ``configs/camera_traps_mobilenet_v2_scratch.yaml``;
5. the issue's reference, a linear probe (scikit-learn logistic regression on the pooled features
   of each pretrained backbone), on the same splits;

and reports test accuracy, macro-F1 and mAP (mean ± sd over seeds) and per-class F1. For every
ecoclassify run it also recomputes macro-F1 and mAP with scikit-learn from the saved
``model.keras`` and the test rows of ``splits.csv`` and checks them against ``metrics.json``.
Seeds and split policy are ``--set``-style overrides of the shipped configs
(``load_config(path, overrides=[...])``).

Usage::

    python bench/quality.py                 # everything; writes bench/results/quality.md
    python bench/quality.py --quick         # smoke run: 1 seed, few epochs; writes into --work-dir
    python bench/quality.py --report-only   # render the report again from the saved results

A benchmark, not a test: it needs ``../shared`` (images and weights) and about 105 CPU minutes
(69 minutes wall on an otherwise idle 2-core machine; see the timings it writes). ``--policies``,
``--seeds`` and ``--only`` run a part of it.
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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ecoclassify._tf import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
# Every run builds new models, so TensorFlow's retracing warnings are expected here.
logging.getLogger("tensorflow").addFilter(lambda record: "triggered tf.function retracing" not in record.getMessage())

import keras  # noqa: E402

from ecoclassify.config import load_config  # noqa: E402
from ecoclassify.data.images import load_rgb  # noqa: E402
from ecoclassify.data.prepare import prepare_data  # noqa: E402
from ecoclassify.training.session import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import textbook_recipe  # noqa: E402
from quality_report import Context, Entry, Result, load_results, render, save_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
POLICIES = {
    "stratified": ["data.split.method=stratified"],
    "source": ["data.split.method=group", "data.split.group_by=source"],
}
#: The keras-io guide trains the new head for 20 epochs; the long variant matches ecoclassify's head budget.
TEXTBOOK_HEAD_EPOCHS = 20
TEXTBOOK_LONG_HEAD_EPOCHS = 100


ENTRIES = (
    Entry("textbook_head", "textbook VGG16 (keras-io), stage 1: frozen", "HED VGG16"),
    Entry("textbook", "textbook VGG16 (keras-io), stage 2: + block5 at 1e-5", "HED VGG16"),
    Entry("textbook_long", "textbook VGG16, stage 1 only, as many epochs as ecoclassify's head", "HED VGG16"),
    Entry("probe_vgg16", "linear probe: logistic regression on pooled features", "HED VGG16"),
    Entry("vgg16_transfer", "ecoclassify vgg16 transfer", "HED VGG16", "camera_traps_vgg16_transfer.yaml",
          ("training.epochs=5",)),
    Entry("vgg16_finetune", "ecoclassify vgg16 fine-tune", "HED VGG16", "camera_traps_vgg16_finetune.yaml",
          ("training.stages.0.epochs=5", "training.stages.1.epochs=1")),
    Entry("probe_lite0", "linear probe: logistic regression on pooled features", "ImageNet"),
    Entry("lite0_transfer", "ecoclassify efficientnet_lite0 transfer", "ImageNet",
          "camera_traps_efficientnet_lite0_transfer.yaml", ("training.epochs=5",)),
    # The shipped configs monitor val_loss; this row measures the toolkit's default monitor instead.
    Entry("lite0_transfer_f1", "same, best epoch by val_macro_f1 (toolkit default)", "ImageNet",
          "camera_traps_efficientnet_lite0_transfer.yaml", ("training.epochs=5",), ("training.monitor=val_macro_f1",)),
    Entry("lite0_finetune", "ecoclassify efficientnet_lite0 fine-tune", "ImageNet",
          "camera_traps_efficientnet_lite0_finetune.yaml", ("training.stages.0.epochs=5", "training.stages.1.epochs=1")),
    Entry("custom_cnn", "ecoclassify custom_cnn from scratch", "none", "camera_traps_custom_cnn.yaml",
          ("training.epochs=2",)),
    Entry("mobilenet_v2", "ecoclassify mobilenet_v2 from scratch", "none", "camera_traps_mobilenet_v2_scratch.yaml",
          ("training.epochs=2",)),
)


def epochs_text(args: argparse.Namespace, textbook: Textbook) -> str:
    parts = [(f"textbook {textbook.head_epochs} + {textbook.finetune_epochs} (fixed), long variant "
              f"{textbook.long_head_epochs}")]
    for entry in ENTRIES:
        if entry.config:
            config = load_config(CONFIGS / entry.config, overrides(entry, "stratified", 0, args))
            stages = " + ".join(f"{s.epochs}" for s in config.training.stages)
            parts.append(f"{entry.key} at most {stages} (early stopping, patience "
                         f"{config.training.early_stopping.patience})")
    return "; ".join(parts)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Images:
    """Decoded images by size and path, shared by every run (each image is decoded once per size)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[int, int, str], np.ndarray] = {}

    def get(self, paths: list[str], size: tuple[int, int]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(paths) if (*size, p) not in self.arrays]
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            for path, array in zip(missing, pool.map(lambda p: load_rgb(p, size=size).array, missing)):
                self.arrays[(*size, path)] = array
        return np.stack([self.arrays[(*size, p)] for p in paths])


def overrides(entry: Entry, policy: str, seed: int, args: argparse.Namespace) -> list[str]:
    values = [f"experiment.seed={seed}", f"experiment.output_dir={args.work_dir.resolve()}",
              f"experiment.name={entry.key}-{policy}-seed{seed}", *POLICIES[policy]]
    size = args.size or (args.vgg16_size if entry.key.startswith("vgg16") else None)
    if size:
        values.append(f"data.image_size=[{size},{size}]")
    return values + list(entry.overrides) + list(entry.quick if args.quick else ())


def usable_seeds(policy: str, args: argparse.Namespace) -> tuple[dict[int, pd.DataFrame], dict[int, str]]:
    """The first ``args.seeds`` seeds whose split gives every class a training image, with that split.

    The split comes from ``prepare_data``, the function ``train`` starts from; every run's
    ``splits.csv`` is checked against it.
    """
    chosen: dict[int, pd.DataFrame] = {}
    skipped: dict[int, str] = {}
    entry = next(e for e in ENTRIES if e.key == "vgg16_finetune")
    seed = 0
    while len(chosen) < args.seeds:
        prepared = prepare_data(load_config(CONFIGS / entry.config, overrides(entry, policy, seed, args)))
        if prepared.ok:
            chosen[seed] = prepared.samples[["filepath", "label", "split", "source"]]
        else:
            skipped[seed] = " ".join(prepared.errors)
        seed += 1
    return chosen, skipped


def run_ecoclassify(entry: Entry, policy: str, seed: int, args: argparse.Namespace, images: Images) -> Result:
    config = load_config(CONFIGS / entry.config, overrides(entry, policy, seed, args))
    wall, cpu = time.perf_counter(), cpu_seconds()
    run = train(config, verbose=0)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    result = check_run(run.run_dir, images)
    result.entry, result.policy, result.seed = entry.key, policy, seed
    result.wall_s, result.cpu_s, result.epochs = wall, cpu, run.metrics["epochs"]
    result.size = config.data.image_size[0]
    return result


def check_run(run_dir: Path, images: Images) -> Result:
    """Recompute the test metrics with scikit-learn from the saved model and ``splits.csv``."""
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str, keep_default_na=False)
    labels = json.loads((run_dir / "labels.json").read_text())
    classes, size = labels["classes"], tuple(labels["image_size"])
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    test = splits[splits["split"] == "test"]
    y_true = test["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    proba = model.predict(images.get(list(test["filepath"]), size), batch_size=32, verbose=0).astype("float64")
    proba /= proba.sum(axis=1, keepdims=True)
    present = [k for k in range(len(classes)) if (y_true == k).any()]
    sk_f1 = f1_score(y_true, proba.argmax(axis=1), average="macro")
    sk_map = float(np.mean([average_precision_score(y_true == k, proba[:, k]) for k in present]))
    frame = test[["filepath", "label"]].assign(predicted=[classes[k] for k in proba.argmax(axis=1)])
    frame = pd.concat([frame.reset_index(drop=True), pd.DataFrame(proba, columns=classes)], axis=1)
    frame.to_csv(run_dir / "bench_test_predictions.csv", index=False)
    result = Result("", "", 0, y_true, proba, classes)
    result.check = {"run_dir": str(run_dir), "f1_diff": abs(sk_f1 - saved["macro_f1"]),
                    "map_diff": abs(sk_map - saved["mAP"]), "json_macro_f1": saved["macro_f1"],
                    "json_mAP": saved["mAP"], "splits": splits[["filepath", "split"]]}
    del model
    return result


class Textbook:
    """The hand-written recipe, trained on the splits of an ecoclassify run."""

    def __init__(self, weights: Path, size: int, images: Images, finetune_epochs: int, head_epochs: int,
                 long_head_epochs: int) -> None:
        self.weights, self.size, self.images = weights, (size, size), images
        self.finetune_epochs, self.head_epochs, self.long_head_epochs = finetune_epochs, head_epochs, long_head_epochs
        self.block4: dict[str, np.ndarray] = {}
        self.equivalence: float | None = None
        self.features_match: float | None = None
        self.shared_s = (0.0, 0.0)

    def features(self, paths: list[str]) -> np.ndarray:
        missing = [p for p in paths if p not in self.block4]
        if missing:
            wall, cpu = time.perf_counter(), cpu_seconds()
            computed = textbook_recipe.vgg16_block4_features(self.weights, self.images.get(missing, self.size))
            self.block4.update(zip(missing, computed))
            self.shared_s = (self.shared_s[0] + time.perf_counter() - wall, self.shared_s[1] + cpu_seconds() - cpu)
        return np.stack([self.block4[p] for p in paths])

    def pretrained_pooled(self, paths: list[str]) -> np.ndarray:
        """Pooled block5 features of the pretrained VGG16 (what a frozen head stage sees)."""
        return textbook_recipe.build(self.weights, self.size, 2, 0).pooled_block5(self.features(paths))

    def run(self, splits: pd.DataFrame, classes: list[str], policy: str, seed: int) -> list[Result]:
        index = {name: i for i, name in enumerate(classes)}
        frames = {name: splits[splits["split"] == name] for name in ("train", "test")}
        self.features(list(splits["filepath"]))  # every image once, timed as shared work
        block4 = {name: self.features(list(frame["filepath"])) for name, frame in frames.items()}
        labels = {name: frame["label"].map(index).to_numpy() for name, frame in frames.items()}
        results = []
        for head_epochs, finetune_epochs in ((self.head_epochs, self.finetune_epochs), (self.long_head_epochs, 0)):
            wall, cpu = time.perf_counter(), cpu_seconds()
            model, test = textbook_recipe.train(block4, labels, len(classes), self.weights, self.size, seed,
                                                head_epochs, finetune_epochs)
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            for stage, proba in test.items():
                key = "textbook" if stage == "finetune" else ("textbook_head" if finetune_epochs else "textbook_long")
                epochs = head_epochs + (finetune_epochs if stage == "finetune" else 0)
                results.append(Result(key, policy, seed, labels["test"], proba.astype("float64"), classes, wall, cpu,
                                      epochs, self.size[0]))
            if finetune_epochs and self.equivalence is None:  # the cached path equals the real model on images
                sample = list(frames["test"]["filepath"][:16])
                direct = model.end_to_end_model().predict(self.images.get(sample, self.size), verbose=0)
                self.equivalence = float(np.abs(direct - test["finetune"][: len(sample)]).max())
        return results


class LinearProbe:
    """Logistic regression on frozen pooled features: the issue's reference, on the benchmark's splits."""

    def __init__(self, key: str, size: int, features) -> None:
        self.key, self.size, self.compute = key, size, features
        self.pooled: dict[str, np.ndarray] = {}

    def run(self, splits: pd.DataFrame, classes: list[str], policy: str, seed: int) -> Result:
        missing = [p for p in splits["filepath"] if p not in self.pooled]
        if missing:
            self.pooled.update(zip(missing, self.compute(missing)))
        index = {name: i for i, name in enumerate(classes)}
        frames = {name: splits[splits["split"] == name] for name in ("train", "test")}
        x = {name: np.stack([self.pooled[p] for p in frame["filepath"]]) for name, frame in frames.items()}
        y = {name: frame["label"].map(index).to_numpy() for name, frame in frames.items()}
        wall, cpu = time.perf_counter(), cpu_seconds()
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
        probe.fit(x["train"], y["train"])
        proba = np.zeros((len(y["test"]), len(classes)))
        proba[:, probe.classes_] = probe.predict_proba(x["test"])
        return Result(self.key, policy, seed, y["test"], proba, classes, time.perf_counter() - wall,
                      cpu_seconds() - cpu, None, self.size)


def lite0_pooled(weights: Path, size: int, images: Images):
    """A function computing pooled EfficientNet-Lite0 features (ImageNet weights) for paths."""
    def compute(paths: list[str]) -> np.ndarray:
        from ecoclassify.models.efficientnet_lite import build_efficientnet_lite0
        from ecoclassify.models.layers import BackbonePreprocessing

        backbone = build_efficientnet_lite0((size, size, 3), weights)
        pixels = BackbonePreprocessing("lite")(images.get(paths, (size, size)).astype("float32"))
        return backbone.predict(pixels, batch_size=32, verbose=0).mean(axis=(1, 2))
    return compute


def report_line(result: Result, detail: str) -> None:
    m = result.metrics()
    print(f"{result.policy:10s} seed {result.seed} {result.entry:15s} {result.size} px: accuracy {m['accuracy']:.3f} "
          f"macro-F1 {m['macro_f1']:.3f} mAP {m['mAP']:.3f}; {result.wall_s:4.0f} s wall, {result.cpu_s:4.0f} s CPU; "
          f"{detail}", flush=True)


def feature_difference(run_dir: Path, textbook: Textbook, images: Images, paths: list[str]) -> float:
    """Largest relative difference between ecoclassify's pooled VGG16 features and the textbook's.

    Same images, weights file and size: a difference would mean different decoding, resizing,
    preprocessing or weights loading, so anything between the two rows is down to training.
    """
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    extractor = keras.Model(model.inputs, model.get_layer("pooling").output)
    ours = extractor.predict(images.get(paths, textbook.size), verbose=0)
    theirs = textbook.pretrained_pooled(paths)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, few epochs: a smoke run")
    parser.add_argument("--seeds", type=int, help="seeds per split policy (default 3, --quick 1)")
    parser.add_argument("--vgg16-size", type=int, default=160,
                        help="image side for the VGG16 configs and the textbook recipe (default 160; 224 costs 2x)")
    parser.add_argument("--size", type=int, help="image side for every model (default: each config's own, "
                        "except --vgg16-size)")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--only", nargs="+", choices=["textbook"] + [e.key for e in ENTRIES if e.config],
                        help="what to run (default everything)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "quality", help="where run folders go")
    parser.add_argument("--output", type=Path, help="markdown report (default bench/results/quality.md, "
                        "or WORK_DIR/quality-quick.md with --quick)")
    parser.add_argument("--report-only", action="store_true",
                        help="render the report again from WORK_DIR/quality-results.json without training")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.output = args.output or (args.work_dir / "quality-quick.md" if args.quick else REPO / "bench/results/quality.md")
    return args


def run_all(args: argparse.Namespace, textbook: Textbook, probes: list[LinearProbe], images: Images, saved: Path
            ) -> tuple[list[Result], dict[tuple[str, int], pd.DataFrame], dict[str, dict[int, str]]]:
    """Every selected model on every split policy and usable seed; results saved after each split."""
    entries = [e for e in ENTRIES if e.config and (args.only is None or e.key in args.only)]
    wants_textbook = args.only is None or "textbook" in args.only
    results: list[Result] = []
    splits: dict[tuple[str, int], pd.DataFrame] = {}
    skipped: dict[str, dict[int, str]] = {}
    for policy in args.policies:
        prepared, skipped[policy] = usable_seeds(policy, args)
        for seed, split in prepared.items():
            expected = split[["filepath", "split"]].astype(str).sort_values("filepath").reset_index(drop=True)
            for entry in entries:
                result = run_ecoclassify(entry, policy, seed, args, images)
                report_line(result, f"{result.epochs} epochs; metrics.json - sklearn: macro-F1 "
                                    f"{result.check['f1_diff']:.1g}, mAP {result.check['map_diff']:.1g}")
                written = result.check.pop("splits")[["filepath", "split"]].astype(str)
                if not written.sort_values("filepath").reset_index(drop=True).equals(expected):
                    raise SystemExit(f"{entry.key} wrote a splits.csv that differs from prepare_data's "
                                     f"for {policy} seed {seed}: {result.check['run_dir']}")
                results.append(result)
                if entry.key == "vgg16_transfer" and textbook.features_match is None and wants_textbook:
                    sample = list(split[split["split"] == "test"]["filepath"][:16])
                    textbook.features_match = feature_difference(Path(result.check["run_dir"]), textbook, images,
                                                                 sample)
                keras.backend.clear_session()
                gc.collect()
            # The textbook recipe trains on the train rows of a run's splits.csv (checked equal to
            # the prepared split above), or on the prepared split when no ecoclassify config ran.
            runs = [r for r in results if r.check and r.policy == policy and r.seed == seed]
            frame = (pd.read_csv(Path(runs[0].check["run_dir"]) / "splits.csv", dtype=str, keep_default_na=False)
                     if runs else split)
            splits[(policy, seed)] = frame.merge(split[["filepath", "source"]], on="filepath", how="left")
            if wants_textbook:
                classes = sorted(frame["label"].unique())
                for result in textbook.run(frame, classes, policy, seed):
                    report_line(result, f"{result.epochs} epochs")
                    results.append(result)
                for probe in probes:
                    results.append(probe.run(frame, classes, policy, seed))
                    report_line(results[-1], "scikit-learn LogisticRegression(class_weight='balanced')")
                keras.backend.clear_session()
                gc.collect()
            save_results(saved, results, splits, None)
    return results, splits, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    saved = args.work_dir / "quality-results.json"
    if args.report_only:
        results, splits, context = load_results(saved)
    else:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        started, wall, cpu, load = datetime.now(), time.perf_counter(), cpu_seconds(), os.getloadavg()
        images = Images()
        finetune = load_config(CONFIGS / "camera_traps_vgg16_finetune.yaml",
                               overrides(next(e for e in ENTRIES if e.key == "vgg16_finetune"), "stratified", 0, args))
        textbook = Textbook(finetune.model.weights, finetune.data.image_size[0], images,
                            finetune.training.stages[1].epochs, 5 if args.quick else TEXTBOOK_HEAD_EPOCHS,
                            10 if args.quick else TEXTBOOK_LONG_HEAD_EPOCHS)
        lite0 = load_config(CONFIGS / "camera_traps_efficientnet_lite0_transfer.yaml",
                            overrides(next(e for e in ENTRIES if e.key == "lite0_transfer"), "stratified", 0, args))
        probes = [LinearProbe("probe_vgg16", textbook.size[0], textbook.pretrained_pooled),
                  LinearProbe("probe_lite0", lite0.data.image_size[0],
                              lite0_pooled(lite0.model.weights, lite0.data.image_size[0], images))]
        results, splits, skipped = run_all(args, textbook, probes, images, saved)
        command = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        context = Context(
            command=f"python bench/quality.py {command}".strip(), started=f"{started:%Y-%m-%d %H:%M}",
            vgg16_size=args.size or args.vgg16_size, epochs=epochs_text(args, textbook), skipped=skipped,
            wall_s=time.perf_counter() - wall, cpu_s=cpu_seconds() - cpu, textbook_shared_cpu_s=textbook.shared_s[1],
            equivalence=textbook.equivalence, features_match=textbook.features_match, load_at_start=load)
        save_results(saved, results, splits, context)
    finetune_epochs = {e.key: load_config(CONFIGS / e.config, overrides(e, "stratified", 0, args)).training.stages[-1].epochs
                       for e in ENTRIES if e.key.endswith("finetune")}
    text = render(results, splits, ENTRIES, context, finetune_epochs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
