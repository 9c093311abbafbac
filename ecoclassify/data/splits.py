"""Train / val / test splits: stratified, grouped (no group straddles two splits), or predefined.

Splits depend only on the samples' content and the seed, never on file listing order:
samples are sorted by path before any random draw, and each class (or the set of
groups) gets its own generator derived from the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecoclassify.config import SplitConfig
from ecoclassify.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    """Samples with ``split`` and ``group`` columns, and warnings about the result."""

    samples: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def check_class_sizes(samples: pd.DataFrame, min_images_per_class: int) -> None:
    """Refuse classes with fewer usable images than ``data.min_images_per_class``.

    Raises:
        DataError: Names each class that is too small, with its count.
    """
    counts = samples["label"].value_counts()
    small = counts[counts < min_images_per_class].sort_index()
    if len(small):
        listing = ", ".join(f"{label} ({count})" for label, count in small.items())
        raise DataError(
            f"{len(small)} class(es) have fewer than data.min_images_per_class={min_images_per_class} usable "
            f"images: {listing}. Add images, merge or exclude these classes (data.exclude_labels), "
            "or lower data.min_images_per_class."
        )
    if samples["label"].nunique() < 2:
        raise DataError(f"a classifier needs at least 2 classes. Found: {sorted(samples['label'].unique())}")


def assign_splits(samples: pd.DataFrame, split: SplitConfig, seed: int) -> SplitResult:
    """Assign every sample to train, val or test.

    Args:
        samples: Table with ``filepath`` and ``label`` (and the group or ``split`` column as needed).
        split: The ``data.split`` config.
        seed: ``experiment.seed``; the same seed gives the same split.

    Returns:
        The samples sorted by path with ``split`` and ``group`` columns added.

    Raises:
        DataError: The group or split column is missing, or a class ends up with no training image.
    """
    frame = samples.sort_values("filepath", kind="stable").reset_index(drop=True)
    warnings: list[str] = []
    if split.method == "predefined":
        if "split" not in frame.columns:
            raise DataError(
                "data.split.method 'predefined' needs a split column (CSV) or train/val/test folders. "
                f"Columns found: {', '.join(frame.columns)}"
            )
        frame["group"] = _default_group(frame)
    elif split.method == "stratified":
        frame["split"] = _stratified(frame, split.val, split.test, seed)
        frame["group"] = _default_group(frame)
    else:
        column = str(split.group_by)
        if column not in frame.columns:
            raise DataError(
                f"data.split.group_by {column!r} is not a column of the data. "
                f"Columns found: {', '.join(c for c in frame.columns if c not in ('filepath', 'split'))}"
            )
        groups = frame[column].astype(str).str.strip()
        lonely = groups == ""
        if lonely.any():
            warnings.append(f"{int(lonely.sum())} image(s) without a {column} value form a group each")
            groups = groups.where(~lonely, "__single__" + frame["filepath"])
        frame["group"] = groups
        frame["split"] = _grouped(frame, split.val, split.test, seed)
    _check_coverage(frame, split, warnings)
    return SplitResult(frame, warnings)


def _default_group(frame: pd.DataFrame) -> pd.Series:
    for column in ("sequence", "site"):
        if column in frame.columns:
            return frame[column].astype(str)
    return pd.Series([""] * len(frame), index=frame.index)


def _rng(seed: int, key: str) -> np.random.Generator:
    # A generator per class keyed by its name: adding a class never reshuffles the others.
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _stratified(frame: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    result = pd.Series("train", index=frame.index, dtype=object)
    for label, rows in frame.groupby("label", sort=True):
        order = _rng(seed, str(label)).permutation(rows.index.to_numpy())
        n = len(order)
        n_test, n_val = _share(n, test), _share(n, val)
        while n_test + n_val >= n and (n_test or n_val):
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        result[order[:n_test]] = "test"
        result[order[n_test:n_test + n_val]] = "val"
    return result


def _share(n: int, fraction: float) -> int:
    count = int(round(n * fraction))
    return 1 if fraction > 0 and count == 0 and n >= 3 else count


def _grouped(frame: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Greedy group assignment that keeps class proportions as close as the groups allow.

    Groups are visited in a seeded random order; each goes to the held-out split whose
    per-class squared distance to its target it reduces most, otherwise to train.
    """
    counts = pd.crosstab(frame["group"], frame["label"]).sort_index()
    totals = counts.sum(axis=0).to_numpy(dtype=float)
    targets = {"test": totals * test, "val": totals * val}
    current = {name: np.zeros_like(totals) for name in targets}
    order = _rng(seed, "__groups__").permutation(len(counts))
    assignment: dict[str, str] = {}
    for position in order:
        group = counts.index[position]
        vector = counts.iloc[position].to_numpy(dtype=float)
        best, best_gain = "train", 0.0
        for name in ("test", "val"):
            before = np.sum((targets[name] - current[name]) ** 2)
            after = np.sum((targets[name] - current[name] - vector) ** 2)
            if before - after > best_gain:
                best, best_gain = name, before - after
        if best != "train":
            current[best] += vector
        assignment[group] = best
    return frame["group"].map(assignment)


def _check_coverage(frame: pd.DataFrame, split: SplitConfig, warnings: list[str]) -> None:
    table = pd.crosstab(frame["label"], frame["split"]).reindex(columns=list(SPLITS), fill_value=0)
    no_train = table.index[table["train"] == 0].tolist()
    if no_train:
        raise DataError(
            f"class(es) with no training image after the split: {', '.join(map(str, no_train))}. "
            "Add images or groups for them, or change data.split."
        )
    for name, fraction in (("val", split.val), ("test", split.test)):
        expected = split.method == "predefined" or fraction > 0
        missing = table.index[table[name] == 0].tolist()
        if expected and missing and len(missing) < len(table):
            warnings.append(f"class(es) missing from {name}: {', '.join(map(str, missing))}")
        elif expected and missing:
            warnings.append(f"the {name} split is empty")
