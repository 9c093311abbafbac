"""Classification metrics from true labels and predicted probabilities (scikit-learn underneath).

mAP is the mean over classes of one-vs-rest average precision; classes without a positive
example in the evaluated set have no defined AP and are left out *and named*.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score, f1_score


def average_precisions(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """One-vs-rest average precision per class; ``None`` for classes with no positive example."""
    result: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        positives = y_true == index
        result[name] = float(average_precision_score(positives, proba[:, index])) if positives.any() else None
    return result


def mean_average_precision(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> tuple[float | None, list[str]]:
    """mAP over the classes present in ``y_true``, and the names of the classes left out."""
    per_class = average_precisions(y_true, proba, classes)
    present = [ap for ap in per_class.values() if ap is not None]
    missing = [name for name, ap in per_class.items() if ap is None]
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
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    mean_ap, missing = mean_average_precision(y_true, proba, classes)
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
