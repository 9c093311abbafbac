"""Score thresholds for auto-labelling: accept the model's label when its score is high enough.

Camera-trap users cut their workload by accepting confident predictions unchecked and reviewing
the rest. A precision measured on a few images says little: 11 of 11 right is compatible with
a true precision of 0.76. Every threshold therefore comes with the images its precision rests
on and a one-sided 95 % Clopper-Pearson lower bound (exact binomial; conservative, so it never
promises more than the data show).

For a target precision, the threshold reported is the *lowest* score threshold whose
auto-labelled images have a lower bound at or above the target: it labels the most images the
data can vouch for. When no threshold is supported that way, it is the lowest threshold whose
*measured* precision reaches the target, marked ``supported: false`` and described as *not
supported by the data*, never as met. Precision is not monotonic in the threshold, so every
observed score is tried; tied scores are never split (no threshold can separate them). When
no threshold reaches a target even on the measured precision, the result says so in words and
gives the best precision that is reachable.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from ecoclassify.report.inputs import check_inputs

#: Target precisions used when the config gives none (``report.target_precisions``).
DEFAULT_TARGET_PRECISIONS = (0.95, 0.99)
#: Confidence of the one-sided lower bound on a threshold's precision.
BOUND_CONFIDENCE = 0.95
#: How the lower bound is computed, as ``metrics.json`` and the reports name it.
BOUND_METHOD = "clopper-pearson"
#: The same in words, for the reports.
BOUND_TEXT = "one-sided 95 % Clopper-Pearson (exact binomial) lower bound"


def wilson_lower_bound(successes: int, trials: int, z: float = 1.959964) -> Optional[float]:
    """Lower end of the Wilson score interval of a proportion (``None`` for zero trials).

    With the default ``z`` this is the lower end of the *two-sided* 95 % interval, which is a
    one-sided 97.5 % bound; ``z=1.644854`` gives a one-sided 95 % bound. The reports use
    :func:`clopper_pearson_lower_bound` instead: Wilson's bound is not conservative for
    proportions near 1, exactly where auto-labelling targets lie.
    """
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denominator)


def clopper_pearson_lower_bound(successes: int, trials: int,
                                confidence: float = BOUND_CONFIDENCE) -> Optional[float]:
    """One-sided Clopper-Pearson lower confidence bound of a proportion (``None`` for zero trials).

    The exact binomial bound: the smallest true proportion under which seeing ``successes`` or
    more of ``trials`` still has probability ``1 - confidence``. With no failure it is
    ``(1 - confidence) ** (1 / trials)``, so 59 of 59 right is the fewest images that support
    0.95 and 299 of 299 the fewest that support 0.99 at 95 % confidence.

    Args:
        successes: Correct auto-labels.
        trials: Auto-labelled images.
        confidence: One-sided confidence level in (0, 1).
    """
    if trials == 0:
        return None
    if successes == 0:
        return 0.0
    from scipy.stats import beta  # late: scipy.stats costs a noticeable import for the CLI

    return float(beta.ppf(1 - confidence, successes, trials - successes + 1))


def _bounds(hits: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """:func:`clopper_pearson_lower_bound` of many proportions at once (``trials`` > 0)."""
    from scipy.stats import beta

    hits, trials = np.asarray(hits, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bounds = beta.ppf(1 - BOUND_CONFIDENCE, np.maximum(hits, 1), trials - hits + 1)
    return np.where(hits > 0, bounds, 0.0)


def _support(row: dict[str, Any], n_hits: int, n_auto: int) -> None:
    """Adds the lower bound of ``row``'s precision, whether it supports the target, and why not."""
    bound = clopper_pearson_lower_bound(n_hits, n_auto)
    target = row["target_precision"]
    row["precision_lower_bound"] = bound
    row["bound_method"] = BOUND_METHOD
    row["supported"] = bound is not None and bound >= target - 1e-12
    if bound is not None and not row["supported"]:
        row["note"] = (f"not supported by the data: {_images(n_auto)}, lower bound {bound:.3f} < target {target:g} "
                       f"(precision {n_hits / n_auto:.3f} measured; {_needed_text(target, n_auto - n_hits)})")


def _needed_text(target: float, errors: int) -> str:
    needed = images_needed(target, errors)
    if needed is None:
        return "no number of images supports a target of 1"
    return f"with {errors} error(s) it needs at least {needed} images"


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def images_needed(target: float, errors: int = 0, confidence: float = BOUND_CONFIDENCE) -> Optional[int]:
    """The fewest auto-labelled images, ``errors`` of them wrong, whose lower bound reaches ``target``.

    ``images_needed(0.95)`` is 59 and ``images_needed(0.99)`` 299; every error raises the
    count (``images_needed(0.95, 1)`` is 93). ``None`` for a target of 1, which no finite
    number of images supports.
    """
    if target >= 1.0:
        return None

    def enough(n: int) -> bool:
        return clopper_pearson_lower_bound(n - errors, n, confidence) >= target - 1e-12  # type: ignore[operator]

    high = errors + 1
    while not enough(high):  # the bound grows with n at a fixed number of errors
        high *= 2
    low = high // 2 if high > errors + 1 else errors  # enough(high) holds; enough(low) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, target: float, n_total: int,
                            n_positives: int) -> dict[str, Any]:
    """The lowest score threshold whose auto-labelled images support ``target`` precision.

    Images with ``score >= threshold`` are auto-labelled; the lowest threshold whose precision
    has a lower bound at or above ``target`` labels the most images the data vouch for. When
    none does, the lowest threshold whose measured precision reaches ``target`` is returned
    with ``supported`` false. Candidate thresholds are the observed scores, so tied scores are
    always kept together.

    Args:
        scores: Score of each candidate image (its top probability).
        correct: Whether its predicted label is right.
        target: Target precision in (0, 1].
        n_total: Images the share auto-labelled is counted against.
        n_positives: Images recall is counted against (``None`` recall when 0).

    Returns:
        ``target_precision``, ``reachable``, ``supported`` (reachable *and* the lower bound of the
        precision reaches the target), ``threshold``, ``precision``, ``precision_lower_bound``
        (:func:`clopper_pearson_lower_bound`, named in ``bound_method``), ``recall``, ``n_images``
        (the candidate images the threshold was chosen on), ``n_auto_labelled`` (those at or
        above it: the precision and its bound rest on them), ``share_auto_labelled``,
        ``max_precision`` (for an unreachable target: the best precision any threshold gives)
        and ``note`` (why a target is unreachable or not supported; empty otherwise).
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    result: dict[str, Any] = {"target_precision": float(target), "reachable": False, "supported": False,
                              "threshold": None, "precision": None, "precision_lower_bound": None,
                              "bound_method": BOUND_METHOD, "recall": None, "n_images": int(len(scores)),
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
    # Prefer the lowest threshold the data support; a lower one that only meets the target on
    # these few images would be flagged although a higher one is trustworthy.
    bounds = _bounds(hits[ends], taken[ends])
    supported = np.flatnonzero(bounds >= target - 1e-12)
    end = ends[supported[-1]] if len(supported) else ends[ok[-1]]
    n_auto, n_hits = int(taken[end]), int(hits[end])
    result.update(
        reachable=True,
        threshold=float(sorted_scores[end]),
        precision=n_hits / n_auto,
        recall=(n_hits / n_positives) if n_positives else None,
        n_auto_labelled=n_auto,
        share_auto_labelled=n_auto / n_total if n_total else 0.0,
    )
    _support(result, n_hits, n_auto)
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
      unreachable are never auto-labelled): the precision, recall and share one gets in practice,
      with the lower bound of that precision and whether it supports the target. A class whose
      own threshold is not supported still takes part here (``classes_not_supported`` names it).

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
        row = {
            "target_precision": target,
            "precision": n_hits / n_auto if n_auto else None,
            "recall": n_hits / n if n else None,
            "n_images": n,
            "n_auto_labelled": n_auto,
            "share_auto_labelled": n_auto / n if n else 0.0,
            "classes_unreachable": [name for name, t in zip(classes, cut) if t is None],
            "classes_not_supported": [name for name in classes if result["per_class"][name][position]["reachable"]
                                      and not result["per_class"][name][position]["supported"]],
            "note": "",
        }
        _support(row, n_hits, n_auto)
        result["per_class_combined"].append(row)
    return result


def threshold_summary_lines(thresholds: dict[str, Any]) -> list[str]:
    """Plain-text lines for a terminal: each overall target, then the per-class verdicts.

    A target whose lower bound falls short is printed as *not supported by the data*, with
    its image count and bound, never with a threshold that reads as usable.
    """
    lines = []
    for row in thresholds["overall"]:
        target = f"{row['target_precision']:g}"
        if row["supported"]:
            lines.append(f"precision {target}: threshold {row['threshold']:.4f} auto-labels "
                         f"{row['share_auto_labelled']:.1%} of images ({_images(row['n_auto_labelled'])}, "
                         f"lower bound {row['precision_lower_bound']:.3f})")
        else:
            lines.append(f"precision {target}: {row['note']}")
    for position, target in enumerate(thresholds["targets"]):
        rows = {name: per_target[position] for name, per_target in thresholds["per_class"].items()}
        supported = [name for name, row in rows.items() if row["supported"]]
        weak = [f"{name} ({_images(row['n_auto_labelled'])}, lower bound {row['precision_lower_bound']:.3f})"
                for name, row in rows.items() if row["reachable"] and not row["supported"]]
        unreachable = [name for name, row in rows.items() if not row["reachable"]]
        parts = [f"supported for {', '.join(supported)}" if supported else "supported for no class"]
        if weak:
            parts.append(f"not supported by the data for {', '.join(weak)}")
        if unreachable:
            parts.append(f"not reachable for {', '.join(unreachable)}")
        lines.append(f"per-class thresholds for precision {target:g}: {'; '.join(parts)}")
    if lines:
        lines.append(f"(bounds: {BOUND_TEXT}; details in thresholds.csv)")
    return lines
