"""What both report pages (HTML and Markdown) show: the summary metrics in words, the notes worth
knowing, the config summary and how each value of ``metrics.json`` is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# What each summary metric means, in words an ecologist can put in a methods section.
SUMMARY = [
    ("accuracy", "Accuracy", "share of images whose top label is right"),
    ("balanced_accuracy", "Balanced accuracy", "mean recall over classes: rare species count as much as common ones"),
    ("macro_f1", "Macro-F1", "mean F1 over classes (F1 balances precision and recall)"),
    ("mAP", "mAP", "mean average precision over classes: ranking quality, independent of any threshold"),
    ("cohen_kappa", "Cohen's kappa", "agreement with the true labels beyond chance (1 perfect, 0 chance)"),
    ("top_3_accuracy", "Top-3 accuracy", "share of images whose true label is among the 3 highest scores"),
    ("top_5_accuracy", "Top-5 accuracy", "share of images whose true label is among the 5 highest scores"),
    ("weighted_f1", "Weighted F1", "F1 averaged over classes, weighted by their number of images"),
    ("macro_precision", "Macro precision", "mean over classes of the share of predictions that are right"),
    ("macro_recall", "Macro recall", "mean over classes of the share of their images found"),
    ("weighted_precision", "Weighted precision", "precision averaged over classes by their number of images"),
    ("weighted_recall", "Weighted recall", "recall averaged over classes by their number of images (= accuracy)"),
    ("log_loss", "Log loss", "mean negative log probability given to the true label (lower is better)"),
    ("ece", "Expected calibration error", "mean gap between confidence and accuracy over 15 bins (0 is perfect)"),
    ("n_images", "Images evaluated", "readable, labelled images the metrics are computed on"),
]


@dataclass
class ReportContext:
    """What the renderers need besides ``metrics.json``."""

    metrics: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    config: Any = None
    split_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)


def format_value(key: str, value: Any) -> str:
    """How the report writes a value of ``metrics.json``, by its key.

    Shares are percentages, thresholds get four decimals (they are applied to scores), target
    precisions are written as given, other fractions get three decimals.
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if key.startswith("share") or key == "normalized":
            return f"{value:.1%}"
        if key == "threshold":
            return f"{value:.4f}"
        if key in ("target_precision", "targets"):
            return f"{value:g}"
        return f"{value:.3f}"
    return str(value)


def report_notes(m: dict[str, Any], test: dict[str, Any]) -> list[str]:
    """The "worth knowing" sentences shown at the top of the HTML and Markdown reports."""
    notes = list(m.get("notes", []))
    if test["map_excluded_classes"]:
        notes.append("mAP leaves out classes with no image in this set or that the model cannot predict: "
                     + ", ".join(test["map_excluded_classes"]) + ".")
    if test["not_predicted_classes"]:
        notes.append("Not a class of the model (every image of it is an error; left out of the log loss, which "
                     f"uses {test['log_loss_n_images']} images): {', '.join(test['not_predicted_classes'])}.")
    unreadable = m.get("unreadable", {})
    if unreadable.get("n_images"):
        reasons = ", ".join(f"{n} {r}" for r, n in unreadable["by_reason"].items())
        notes.append(f"{unreadable['n_images']} unreadable image(s) were left out ({reasons}); "
                     "they are listed in excluded.csv.")
    if test["n_images"] < 100:
        notes.append(f"Only {test['n_images']} images were evaluated: every number here is uncertain by several "
                     "percentage points. Use the 95 % lower bounds in the auto-labelling tables.")
    return notes


def config_summary(config: Any) -> list[tuple[str, str]]:
    """``(setting, value)`` pairs describing a run's config in a few lines."""
    if config is None:
        return []
    data, model, training, aug = config.data, config.model, config.training, config.augmentation
    split = data.split
    split_text = f"{split.method}" + (f" by {split.group_by}" if split.group_by else "")
    if split.method != "predefined":
        split_text += f" (val {split.val:g}, test {split.test:g})"
    active = [f"{k} {getattr(aug, k):g}" for k in ("rotation", "zoom", "translation", "contrast", "brightness", "crop")
              if getattr(aug, k) > 0]
    stages = "; ".join(
        f"{s.name or i}: {s.epochs} epoch(s), {s.optimizer} lr {s.learning_rate:g}, trainable "
        f"{s.trainable if isinstance(s.trainable, str) else s.trainable.model_dump()}"
        for i, s in enumerate(training.stages or [], start=1))
    rows = [
        ("experiment", f"{config.experiment.name} (seed {config.experiment.seed})"),
        ("data", f"{data.source}: {data.labels or data.root or 'built-in demo'}"),
        ("image size", f"{data.image_size[0]} × {data.image_size[1]} px"),
        ("split", split_text),
        ("backbone", f"{model.backbone}, weights {model.weights}"),
        ("head", f"{model.head.pooling} pooling, dense {model.head.dense}, dropout {model.head.dropout:g}"),
        ("augmentation", (f"flip {aug.flip}" + (", " + ", ".join(active) if active else ""))
         if aug.active else "none"),
        ("training", f"batch {training.batch_size}, class weight {training.class_weight}, monitor {training.monitor}"),
        ("stages", stages),
    ]
    if config.provenance:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in config.provenance.items() if k != "created")))
    return rows
