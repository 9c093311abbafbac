"""Score thresholds for auto-labelling: accept the model's label when its score is high enough.

Camera-trap users cut their workload by accepting confident predictions unchecked and reviewing
the rest. For a target precision, the threshold reported is the *lowest* score threshold whose
auto-labelled images reach that precision on the evaluated set: it labels the most images
while meeting the target. Precision is not monotonic in the threshold, so every observed score
is tried; tied scores are never split (no threshold can separate them). When no threshold
reaches a target, the result says so in words and gives the best precision that is reachable.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from ecoclassify.report.inputs import check_inputs

#: Target precisions used when the config gives none (``report.target_precisions``).
DEFAULT_TARGET_PRECISIONS = (0.95, 0.99)


def wilson_lower_bound(successes: int, trials: int, z: float = 1.959964) -> Optional[float]:
    """Lower end of the Wilson 95 % interval of a proportion (``None`` for zero trials)."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denominator)


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, target: float, n_total: int,
                            n_positives: int) -> dict[str, Any]:
    """The lowest score threshold whose auto-labelled images reach ``target`` precision.

    Images with ``score >= threshold`` are auto-labelled; the lowest such threshold labels the
    most images while keeping their precision (share correct) at or above ``target``.
    Candidate thresholds are the observed scores, so tied scores are always kept together.

    Args:
        scores: Score of each candidate image (its top probability).
        correct: Whether its predicted label is right.
        target: Target precision in (0, 1].
        n_total: Images the share auto-labelled is counted against.
        n_positives: Images recall is counted against (``None`` recall when 0).

    Returns:
        ``target_precision``, ``reachable``, ``threshold``, ``precision``, ``precision_lower_95``
        (Wilson), ``recall``, ``n_auto_labelled``, ``share_auto_labelled``, and for an unreachable
        target ``max_precision`` (the best precision any threshold gives) and ``note`` (why).
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    result: dict[str, Any] = {"target_precision": float(target), "reachable": False, "threshold": None,
                              "precision": None, "precision_lower_95": None, "recall": None,
                              "n_auto_labelled": 0, "share_auto_labelled": 0.0, "max_precision": None, "note": ""}
    if len(scores) == 0:
        result["note"] = "no image is predicted with this label, so nothing can be auto-labelled"
        return result
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], np.cumsum(correct[order])
    taken = np.arange(1, len(scores) + 1)
    # Only the last position of a run of tied scores is a threshold one could actually apply.
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    precision = hits[ends] / taken[ends]
    ok = np.flatnonzero(precision >= target - 1e-12)
    if len(ok) == 0:
        result["max_precision"] = float(precision.max())
        top = taken[ends[0]]
        result["note"] = (f"not reachable: even the {top} most confident prediction(s) are right only "
                          f"{precision[0]:.1%} of the time, and no threshold does better than "
                          f"{precision.max():.1%}")
        return result
    end = ends[ok[-1]]
    n_auto, n_hits = int(taken[end]), int(hits[end])
    result.update(
        reachable=True,
        threshold=float(sorted_scores[end]),
        precision=n_hits / n_auto,
        precision_lower_95=wilson_lower_bound(n_hits, n_auto),
        recall=(n_hits / n_positives) if n_positives else None,
        n_auto_labelled=n_auto,
        share_auto_labelled=n_auto / n_total if n_total else 0.0,
    )
    return result


def auto_label_thresholds(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str],
                          targets: Sequence[float] = DEFAULT_TARGET_PRECISIONS) -> dict[str, Any]:
    """Score thresholds for auto-labelling at each target precision, overall and per class.

    An image is auto-labelled with its top class when its top score reaches the threshold.

    - ``overall``: one threshold for all classes. Precision is the share of auto-labelled images
      whose label is right; recall is the share of *all* images labelled automatically and
      correctly.
    - ``per_class``: a threshold for each class, over the images predicted as that class.
      Recall is counted against the class's true images; the share against all images.
    - ``per_class_combined``: every class at its own threshold at once (classes whose target is
      unreachable are never auto-labelled): the precision, recall and share one gets in practice.

    Returns:
        ``{"targets", "overall": [row per target], "per_class": {class: [row per target]},
        "per_class_combined": [row per target]}``; rows as in :func:`threshold_for_precision`.
    """
    y_true, proba = check_inputs(y_true, proba, len(classes))
    y_pred, score = proba.argmax(axis=1), proba.max(axis=1)
    correct = y_pred == y_true
    n = len(y_true)
    targets = sorted({float(t) for t in targets})
    result: dict[str, Any] = {
        "targets": targets,
        "overall": [threshold_for_precision(score, correct, t, n, n) for t in targets],
        "per_class": {},
        "per_class_combined": [],
    }
    for index, name in enumerate(classes):
        mine = y_pred == index
        result["per_class"][name] = [
            threshold_for_precision(score[mine], correct[mine], t, n, int((y_true == index).sum())) for t in targets]
    for position, target in enumerate(targets):
        cut = np.array([result["per_class"][name][position]["threshold"] for name in classes], dtype=object)
        limits = np.array([np.inf if t is None else t for t in cut], dtype=np.float64)
        auto = score >= limits[y_pred]
        n_auto, n_hits = int(auto.sum()), int((auto & correct).sum())
        result["per_class_combined"].append({
            "target_precision": target,
            "precision": n_hits / n_auto if n_auto else None,
            "precision_lower_95": wilson_lower_bound(n_hits, n_auto),
            "recall": n_hits / n if n else None,
            "n_auto_labelled": n_auto,
            "share_auto_labelled": n_auto / n if n else 0.0,
            "classes_unreachable": [name for name, t in zip(classes, cut) if t is None],
        })
    return result
