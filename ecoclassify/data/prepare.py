"""From config to usable, split samples: source -> scan -> exclusions -> class checks -> split.

``prepare_data`` is what ``ecoclassify validate`` reports on and what ``train`` starts from,
so validation and training can never disagree about the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from ecoclassify.config import Config
from ecoclassify.data.crops import expand_to_crops, label_empty_images
from ecoclassify.data.scan import find_duplicates, find_leaks, scan_images
from ecoclassify.data.sources import load_source
from ecoclassify.data.splits import SPLITS, assign_splits, check_class_sizes
from ecoclassify.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything known about the data before training.

    Attributes:
        samples: Usable images with ``filepath``, ``label``, ``split``, ``group`` and scan columns.
        excluded: Images left out with the reason (``filepath``, ``label``, ``error``, ``detail``):
            those that failed to decode and those the source left out without opening them
            (``outside_root``..., or ``multiple_labels`` with ``data.multi_label: drop``).
        skipped: Files found but not images or not reachable, as ``(path, reason)``.
        classes: Sorted class names; the model's output order.
        duplicates: Byte-identical usable images (see :func:`find_duplicates`).
        leaks: Duplicates whose copies sit in different splits.
        warnings: Things worth knowing that do not stop training.
        errors: Things that stop training; empty when the data is usable.
        root: Folder that paths are reported relative to.
    """

    samples: pd.DataFrame
    excluded: pd.DataFrame
    skipped: list[tuple[str, str]]
    classes: list[str]
    duplicates: pd.DataFrame
    leaks: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    root: Path = Path(".")

    @property
    def ok(self) -> bool:
        """Whether training could start on this data."""
        return not self.errors

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with totals."""
        if self.samples.empty:
            return pd.DataFrame()
        if "split" not in self.samples.columns:  # the split could not be made (see errors)
            return self.samples.groupby("label").size().to_frame("total")
        table = pd.crosstab(self.samples["label"], self.samples["split"]).reindex(columns=list(SPLITS), fill_value=0)
        table["total"] = table.sum(axis=1)
        table.index.name = "class"
        return table

    def split_frame(self, name: str) -> pd.DataFrame:
        """The usable samples of one split (``train``, ``val`` or ``test``)."""
        return self.samples[self.samples["split"] == name].reset_index(drop=True)

    def raise_if_unusable(self) -> None:
        """Raise ``DataError`` with every blocking problem when training cannot start."""
        if self.errors:
            raise DataError(" ".join(self.errors) if len(self.errors) == 1 else
                            "the data cannot be used for training:\n" + "\n".join(f"  - {e}" for e in self.errors))


def prepare_data(config: Config, progress: Optional[Callable[[int, int], None]] = None) -> PreparedData:
    """Read, scan and split the configured data, collecting every problem on the way.

    Args:
        config: The validated experiment config.
        progress: Called as ``progress(advance, total)`` while files are scanned (for a progress bar).

    Returns:
        The prepared data; check ``ok`` / call ``raise_if_unusable()`` before training.

    Raises:
        DataError: The source itself cannot be read (missing folder or labels file, bad format).
    """
    data = config.data
    source = load_source(data)
    warnings = list(source.warnings)
    errors: list[str] = []
    if source.samples.empty:
        left_out = f"; {source.warnings[-1]}" if len(source.excluded) else ""  # the warning naming them
        raise DataError(f"no labelled images found for data.source {data.source!r} (root: {source.root}){left_out}")
    scanned = scan_images(source.samples, data.image_size, max_pixels=data.max_image_pixels, progress=progress)
    failed = scanned[scanned["status"] == "failed"]
    # Images the source refused to open (outside the root, undecodable names) are listed with
    # the unreadable ones, whatever on_corrupt says: they are left out, never opened.
    excluded = failed[["filepath", "label", "error", "detail"]].reset_index(drop=True)
    if len(source.excluded):
        excluded = pd.concat([source.excluded, excluded], ignore_index=True)
    if len(failed):
        reasons = failed["error"].value_counts().to_dict()
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        listing = "; ".join(f"{fp} ({reason})" for fp, reason in zip(failed["filepath"][:5], failed["error"][:5]))
        if data.on_corrupt == "error":
            errors.append(f"{len(failed)} image(s) cannot be read ({summary}), and data.on_corrupt is 'error': "
                          f"{listing}{' ...' if len(failed) > 5 else ''}. Fix or remove them, or set "
                          "data.on_corrupt: exclude.")
        else:
            warnings.append(f"{len(failed)} unreadable image(s) excluded ({summary}), e.g. {listing}")
    usable = scanned[scanned["status"] == "ok"].reset_index(drop=True)
    if data.crops is not None and data.crops.empty_label is not None:
        usable = label_empty_images(usable, data.crops, source.root)
    classes = sorted(usable["label"].unique().tolist())
    prepared = PreparedData(usable, excluded, list(source.skipped), classes, usable.iloc[0:0], usable.iloc[0:0],
                            warnings, errors, source.root)
    try:
        check_class_sizes(usable, data.min_images_per_class)
        _check_class_weight_names(config, classes)
        split = assign_splits(usable, data.split, config.experiment.seed)
    except DataError as exc:
        errors.append(str(exc))
        return prepared
    prepared.samples = split.samples
    warnings.extend(split.warnings)
    monitor = config.training.monitor
    if monitor.startswith("val_") and not (split.samples["split"] == "val").any():
        errors.append(f"training.monitor {monitor!r} needs a validation split, and data.split gives no validation "
                      "image. Set data.split.val > 0 (with method 'group', groups may be too large for the "
                      "fraction) or monitor one of: loss, accuracy, macro_f1.")
    prepared.duplicates = find_duplicates(split.samples)
    prepared.leaks = find_leaks(prepared.duplicates)
    if len(prepared.duplicates):
        groups = prepared.duplicates["sha1"].nunique()
        warnings.append(f"{len(prepared.duplicates)} images are byte-identical copies ({groups} distinct contents)")
    if len(prepared.leaks):
        examples = "; ".join(prepared.leaks["filepath"][:4])
        warnings.append(f"leakage: {prepared.leaks['sha1'].nunique()} identical image(s) appear in more than one "
                        f"split, so the test score is optimistic (e.g. {examples})")
    if data.crops is not None:  # after the split: every crop of an image shares the image's split
        use_crops(prepared, config)
    return prepared


def use_crops(prepared: PreparedData, config: Config) -> None:
    """Replaces the image samples by one sample per kept box (``data.crops``), in place.

    Class sizes are checked again on the crops: a box's own label (COCO, Camtrap DP) can
    make classes of its own.
    """
    try:
        crops, prepared.excluded, notes = expand_to_crops(prepared.samples, prepared.excluded, config.data.crops,
                                                          prepared.root)
    except DataError as exc:
        prepared.errors.append(str(exc))
        return
    prepared.warnings.extend(notes)
    prepared.samples = crops.sort_values(["filepath", "box"], kind="stable").reset_index(drop=True)
    prepared.classes = sorted(crops["label"].unique().tolist())
    try:
        check_class_sizes(crops, config.data.min_images_per_class)
        _check_class_weight_names(config, prepared.classes)
    except DataError as exc:
        prepared.errors.append(f"{exc} (counted in crops: data.crops is set)")
    if len(crops) and not (crops["split"] == "train").groupby(crops["label"]).any().all():
        missing = sorted(set(crops["label"]) - set(crops.loc[crops["split"] == "train", "label"]))
        prepared.errors.append(f"class(es) with no training crop after the split: {', '.join(missing)}")


def _check_class_weight_names(config: Config, classes: list[str]) -> None:
    weights = config.training.class_weight
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(classes))
        if unknown:
            raise DataError(f"training.class_weight names classes that are not in the data: {', '.join(unknown)}. "
                            f"Classes: {', '.join(classes)}")
