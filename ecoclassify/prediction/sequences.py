"""Camera-trap sequences: bursts of images from one camera, labelled together.

A camera trap fires several frames per trigger; the animal may be clear in one and a blur in
the next. Averaging the members' probabilities and labelling the sequence as a whole
(DeepFaune does this) corrects many single-frame mistakes.

Rules: images in the same folder (one folder = one camera, the usual SD-card layout) whose
EXIF capture times are at most ``gap`` seconds apart, consecutively, form one sequence; so a
burst at 0, 2 and 4 s with gap 3 s is one sequence although its ends are 4 s apart. An image
without a capture time forms a sequence of its own. A failed file belongs to no sequence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecoclassify.errors import ConfigError

SEQUENCE_COLUMNS = ("sequence_id", "sequence_label", "sequence_score")
UNKNOWN = "unknown"


def assign_sequences(
    frame: pd.DataFrame, classes: list[str], gap_seconds: float, threshold: float | None = None
) -> pd.DataFrame:
    """Adds ``sequence_id``, ``sequence_label`` and ``sequence_score`` to a predictions table.

    Args:
        frame: Predictions with ``root``, ``filepath``, ``status``, ``datetime`` and one
            ``prob_<class>`` column per class, in output order (ids follow it).
        classes: Class names in the model's output order.
        gap_seconds: Largest time between consecutive frames of one sequence.
        threshold: Sequences whose mean top probability is below it are labelled ``unknown``.

    Returns:
        A copy of ``frame`` with the three columns. Ids are 1, 2, ... in order of each
        sequence's first row; the score is the mean probability of the sequence's label.

    Raises:
        ConfigError: ``gap_seconds`` is not a positive number.
    """
    if isinstance(gap_seconds, bool) or not isinstance(gap_seconds, (int, float)) or not gap_seconds > 0:
        raise ConfigError(f"sequence_gap must be a positive number of seconds. Received: sequence_gap={gap_seconds!r}")
    out = frame.copy()
    n = len(out)
    ok = (out["status"] == "ok").to_numpy()
    times = pd.to_datetime(out["datetime"], errors="coerce", format="ISO8601")
    folder = out["root"].astype(str) + "\0" + out["filepath"].astype(str).map(_parent)

    # Group key per row: timed rows chain within their folder; others are alone.
    group = np.full(n, -1, dtype=np.int64)
    timed = ok & times.notna().to_numpy()
    order = pd.DataFrame({"folder": folder, "time": times, "row": np.arange(n)})[timed]
    order = order.sort_values(["folder", "time", "row"], kind="stable")
    if len(order):
        gaps = order["time"].diff().dt.total_seconds().to_numpy()
        new_folder = (order["folder"] != order["folder"].shift()).to_numpy()
        starts = new_folder | ~(gaps <= gap_seconds)  # NaN gap (first row) starts a sequence
        group[order["row"].to_numpy()] = np.cumsum(starts) - 1
    lone = ok & ~timed
    group[lone] = group.max(initial=-1) + 1 + np.arange(lone.sum())

    # Renumber 1.. in order of first appearance, so ids read top to bottom.
    ids = np.zeros(n, dtype=np.int64)
    first_seen: dict[int, int] = {}
    for row in np.flatnonzero(ok):
        ids[row] = first_seen.setdefault(int(group[row]), len(first_seen) + 1)

    probs = out[[f"prob_{name}" for name in classes]].to_numpy(dtype=np.float64)
    labels = np.full(n, None, dtype=object)
    scores = np.full(n, np.nan)
    if ok.any():
        members = pd.DataFrame(probs[ok]).groupby(ids[ok]).mean()
        mean = np.round(members.to_numpy(), 6)
        best = np.argmax(mean, axis=1)  # first maximum: ties go to the earlier class
        best_score = mean[np.arange(len(mean)), best]
        names = np.array(classes, dtype=object)[best]
        if threshold is not None:
            names = np.where(best_score >= threshold, names, UNKNOWN)
        position = {seq: i for i, seq in enumerate(members.index)}
        rows = np.flatnonzero(ok)
        index = np.array([position[seq] for seq in ids[rows]])
        labels[rows] = names[index]
        scores[rows] = best_score[index]
    out["sequence_id"] = pd.array([int(i) if good else None for i, good in zip(ids, ok)], dtype="Int64")
    out["sequence_label"] = pd.Series(labels, index=out.index, dtype="str")
    out["sequence_score"] = scores
    return out


def _parent(filepath: str) -> str:
    return filepath.rpartition("/")[0]
