"""Classification metrics from true labels and predicted probabilities (scikit-learn underneath).

Everything here is pure: arrays in, JSON-ready dicts out. :func:`evaluate_predictions` gathers
the whole metrics block of a report; the other functions are its parts and are public so they
can be tested and reused on their own. Auto-labelling thresholds live in
:mod:`ecoclassify.report.thresholds`.

Conventions:

- ``y_true`` holds class indices into ``classes``; ``proba`` is ``(n, n_classes)`` with columns in
  ``classes`` order. Rows are renormalised to sum to one in float64 (scikit-learn's ``log_loss``
  refuses rows that do not, and float32 softmax outputs are only close).
- mAP is the mean over classes of one-vs-rest average precision; classes without a positive
  example in the evaluated set have no defined AP and are left out *and named*.
- Macro averages run over the classes present in ``y_true`` or the predictions, as scikit-learn
  defines them, so a class absent from the evaluated set is not scored as a zero.
- A metric that is undefined on the given data (kappa with a single label, recall of a class
  with no example) is ``None``, never NaN, so ``metrics.json`` stays valid JSON.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from ecoclassify.report.inputs import check_inputs
from ecoclassify.report.thresholds import DEFAULT_TARGET_PRECISIONS, auto_label_thresholds

#: Equal-width confidence bins of the expected calibration error (Guo et al., 2017).
ECE_BINS = 15
#: Top-k accuracies reported when the model has more than k classes.
TOP_K = (3, 5)
#: Keys of :func:`evaluate_predictions`' block that hold tables, not summary numbers.
DETAIL_KEYS = ("classes", "not_predicted_classes", "per_class", "confusion_matrix", "calibration", "thresholds",
               "groups", "groups_skipped")
#: A group column with more distinct values than this gets no per-group table (e.g. bursts).
MAX_GROUPS = 50
#: Columns tried, in order, for per-group metrics when none is named (``group`` is splits.csv's).
GROUP_COLUMNS = ("site", "camera", "location", "station", "group")
#: splits.csv's ``group`` column (tried last) may hold burst ids; it needs groups of this many
#: images on average to get a table.
MIN_MEAN_GROUP_SIZE = 5


def _num(value: Any) -> Optional[float]:
    """A float for JSON, or ``None`` for undefined (NaN) values."""
    value = float(value)
    return None if math.isnan(value) else value


def average_precisions(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """One-vs-rest average precision per class; ``None`` for classes with no positive example."""
    result: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        positives = np.asarray(y_true) == index
        result[name] = float(average_precision_score(positives, proba[:, index])) if positives.any() else None
    return result


def mean_average_precision(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                           exclude: Sequence[str] = ()) -> tuple[float | None, list[str]]:
    """mAP over the classes present in ``y_true``, and the names of the classes left out.

    Args:
        y_true: True class indices.
        proba: Predicted probabilities, columns in ``classes`` order.
        classes: Class names.
        exclude: Classes to leave out although present (e.g. an ``other`` class the model
            cannot predict); they are named among the left-out classes.
    """
    per_class = average_precisions(y_true, proba, classes)
    present = [ap for name, ap in per_class.items() if ap is not None and name not in exclude]
    missing = [name for name, ap in per_class.items() if ap is None or name in exclude]
    return (float(np.mean(present)) if present else None), missing


def headline_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro/weighted F1 and mAP of one evaluated set.

    Args:
        y_true: True class indices.
        proba: ``(n, n_classes)`` predicted probabilities, columns in ``classes`` order.
        classes: Class names.

    Returns:
        A JSON-ready dict; ``map_excluded_classes`` names classes without positives.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    mean_ap, missing = mean_average_precision(y_true, proba, classes)
    with warnings.catch_warnings():
        # Small sets (one site, one class) trip these; the results are still the defined ones.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return {
            "n_images": int(len(y_true)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            # Macro over the classes present in y_true or y_pred, as scikit-learn defines it.
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
            "mAP": mean_ap,
            "map_excluded_classes": missing,
        }


def summary_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str],
                    not_predicted: Sequence[str] = ()) -> dict[str, Any]:
    """Every scalar metric of one evaluated set: :func:`headline_metrics` plus the rest.

    Args:
        y_true: True class indices.
        proba: Predicted probabilities, columns in ``classes`` order.
        classes: Class names.
        not_predicted: Classes the model cannot output (their ``proba`` column is zero), such as
            the ``other`` class that gathers labels unknown to the model. They count as errors
            in accuracy and F1, have no AP, and their images are left out of the log loss
            (the model gives their true class probability zero, an infinite loss).

    Returns:
        Headline keys plus macro/weighted precision and recall, ``cohen_kappa``, ``log_loss``
        (with ``log_loss_n_images``), ``top_3_accuracy`` and ``top_5_accuracy`` (``None`` unless
        the model has more than k classes) and ``ece``. All values are flat (no nesting), so the
        dict can be tabulated across runs.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    result = headline_metrics(y_true, proba, classes)
    mean_ap, missing = mean_average_precision(y_true, proba, classes, exclude=not_predicted)
    result.update(mAP=mean_ap, map_excluded_classes=missing)
    for average in ("macro", "weighted"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="A single label was found")
            precision, recall, _, _ = precision_recall_fscore_support(
                y_true, y_pred, labels=None if average == "macro" else labels, average=average, zero_division=0)
        result[f"{average}_precision"] = float(precision)
        result[f"{average}_recall"] = float(recall)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one label only: kappa is undefined -> None
        warnings.simplefilter("ignore", RuntimeWarning)
        result["cohen_kappa"] = _num(cohen_kappa_score(y_true, y_pred, labels=labels))
    scored = ~np.isin(y_true, [classes.index(name) for name in not_predicted])
    result["log_loss"] = (float(log_loss(y_true[scored], proba[scored], labels=labels))
                          if scored.any() else None)
    result["log_loss_n_images"] = int(scored.sum())
    for k in TOP_K:  # with k classes or fewer, top-k accuracy is 1 by definition: not worth a number
        result[f"top_{k}_accuracy"] = (float(top_k_accuracy_score(y_true, proba, k=k, labels=labels))
                                       if k < len(classes) else None)
    result["ece"] = calibration(y_true, proba)["ece"]
    return result


def per_class_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str],
                      not_predicted: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Precision, recall, F1, support and average precision of every class.

    Returns:
        One dict per class, in ``classes`` order: ``class``, ``support`` (true images),
        ``n_predicted``, ``precision``, ``recall``, ``f1`` (``None`` when undefined: precision of
        a class never predicted, recall of a class with no image), ``average_precision``
        (``None`` without positives or for ``not_predicted`` classes) and ``predictable``.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    aps = average_precisions(y_true, proba, classes)
    rows = []
    for index, name in enumerate(classes):
        predicted = int((y_pred == index).sum())
        rows.append({
            "class": name,
            "support": int(support[index]),
            "n_predicted": predicted,
            "precision": _num(precision[index]),
            "recall": _num(recall[index]),
            # F1 = 2TP / (2TP + FP + FN): undefined (None) only for a class neither present nor predicted.
            "f1": _num(f1[index]),
            "average_precision": None if name in not_predicted else aps[name],
            "predictable": name not in not_predicted,
        })
    return rows


def confusion_matrices(y_true: Sequence[int], proba: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix counts (rows: true class, columns: predicted) and its row-normalised form.

    Rows of classes with no image are all NaN in the normalised matrix (nothing to divide).
    """
    y_true, proba = check_inputs(y_true, proba, n_classes)
    counts = confusion_matrix(y_true, proba.argmax(axis=1), labels=list(range(n_classes)))
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)
    return counts, normalised


def calibration(y_true: Sequence[int], proba: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error of the top score, and its reliability-diagram bins.

    The top score (confidence) of each image falls in one of ``n_bins`` equal-width bins
    ``((m-1)/M, m/M]``; ECE is the image-weighted mean of ``|accuracy - mean confidence|`` over
    the bins. A perfectly calibrated model that says 0.8 is right 80 % of the time: ECE 0.

    Returns:
        ``{"ece", "n_bins", "bins": [{"lower", "upper", "n_images", "confidence", "accuracy"}]}``;
        empty bins have ``None`` confidence and accuracy.
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for m in range(n_bins):
        inside = index == m
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += count / len(y_true) * abs(acc - conf)
        bins.append({"lower": m / n_bins, "upper": (m + 1) / n_bins, "n_images": count,
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if len(y_true) else None, "n_bins": n_bins, "bins": bins}


def choose_group_columns(frame: pd.DataFrame, wanted: Optional[Sequence[str]] = None
                         ) -> tuple[list[str], dict[str, str]]:
    """The columns of ``frame`` worth per-group metrics, and why others were passed over.

    Args:
        frame: The evaluated samples (one row per image).
        wanted: Columns asked for by name; by default the ``GROUP_COLUMNS`` that exist, ``group``
            only with ``MIN_MEAN_GROUP_SIZE`` images per group on average (it often holds burst
            ids). A column equal to one already chosen (``group`` is often the ``site``) is not
            repeated.

    Returns:
        ``(columns, skipped)`` where ``skipped`` maps a column to the reason it has no table.
    """
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for column in (wanted if wanted is not None else GROUP_COLUMNS):
        if column not in frame.columns:
            if wanted is not None:
                skipped[column] = f"not a column of the data (columns: {', '.join(map(str, frame.columns))})"
            continue
        values = frame[column].fillna("").astype(str).str.strip()
        distinct = values[values != ""].nunique()
        if distinct == 0:
            if wanted is not None:
                skipped[column] = "the column is empty"
            continue
        if any(values.equals(frame[other].fillna("").astype(str).str.strip()) for other in chosen):
            continue
        if distinct > MAX_GROUPS:
            skipped[column] = f"{distinct} distinct values (more than {MAX_GROUPS}): too many for a per-group table"
            continue
        if wanted is None and column == "group" and len(values) / distinct < MIN_MEAN_GROUP_SIZE:
            skipped[column] = (f"{len(values) / distinct:.1f} images per {column} on average (fewer than "
                               f"{MIN_MEAN_GROUP_SIZE}): groups too small to compare")
            continue
        chosen.append(column)
    return chosen, skipped


def group_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str], groups: Sequence[Any],
                  not_predicted: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The main metrics for each value of a group column (a site, a camera).

    Images with an empty group value form the group ``"(none)"``.

    Returns:
        One dict per group, sorted by name: ``group``, ``n_images``, ``n_classes`` (present),
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``mAP``.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    names = pd.Series(list(groups), dtype=object).fillna("").astype(str).str.strip().replace("", "(none)")
    rows = []
    for name in sorted(names.unique()):
        mask = (names == name).to_numpy()
        part = headline_metrics(y_true[mask], proba[mask], classes)
        rows.append({
            "group": name,
            "n_images": int(mask.sum()),
            "n_classes": int(len(np.unique(y_true[mask]))),
            "accuracy": part["accuracy"],
            "balanced_accuracy": part["balanced_accuracy"],
            "macro_f1": part["macro_f1"],
            "mAP": mean_average_precision(y_true[mask], proba[mask], classes, exclude=not_predicted)[0],
        })
    return rows


def evaluate_predictions(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str], *,
                         target_precisions: Sequence[float] = DEFAULT_TARGET_PRECISIONS,
                         groups: Optional[Mapping[str, Sequence[Any]]] = None,
                         not_predicted: Sequence[str] = ()) -> dict[str, Any]:
    """The complete metrics block of a report (``metrics.json["test"]``).

    Args:
        y_true: True class indices.
        proba: Predicted probabilities, columns in ``classes`` order.
        classes: Class names (the model's, plus e.g. ``other`` for labels it does not know).
        target_precisions: Targets for the auto-labelling thresholds.
        groups: ``{column: value per image}`` for per-group metrics.
        not_predicted: Classes the model cannot output (see :func:`summary_metrics`).

    Returns:
        :func:`summary_metrics`' keys plus ``per_class``, ``confusion_matrix`` (``labels``,
        ``counts``, ``normalized``), ``calibration``, ``thresholds`` and ``groups``.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    counts, normalised = confusion_matrices(y_true, proba, len(classes))
    block = summary_metrics(y_true, proba, classes, not_predicted)
    block.update(
        classes=list(classes),
        not_predicted_classes=list(not_predicted),
        per_class=per_class_metrics(y_true, proba, classes, not_predicted),
        confusion_matrix={"labels": list(classes), "counts": counts.tolist(),
                          "normalized": [[_num(v) for v in row] for row in normalised]},
        calibration=calibration(y_true, proba),
        thresholds=auto_label_thresholds(y_true, proba, classes, target_precisions),
        groups={column: group_metrics(y_true, proba, classes, values, not_predicted)
                for column, values in (groups or {}).items()},
    )
    return block
