"""One label per image: the rule every labelled source applies, refusing or leaving out the rest.

A single-label classifier cannot learn from an image with two species; by default such images
stop the run with a list of them (:func:`refuse_multiple_labels`), and with
``data.multi_label: drop`` they are left out and listed in ``excluded.csv``
(:func:`drop_multi_labelled`).
"""

from __future__ import annotations

import pandas as pd

from ecoclassify.errors import DataError


def drop_multi_labelled(frame: pd.DataFrame, where: str, warnings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` without images that have more than one label, and those images as excluded rows.

    Args:
        frame: Samples (``filepath``, ``label``), one row per image and label.
        where: Where they come from, for the warning (e.g. ``"in labels.json"``).
        warnings: Gets a note when images are left out.

    Returns:
        ``(kept, excluded)``; ``excluded`` has ``filepath``, ``label`` (empty), ``error``
        (``multiple_labels``) and ``detail`` (``labels: deer, fox``).
    """
    labels = frame.groupby("filepath")["label"].agg(sorted)
    multi = labels[labels.map(len) > 1]
    excluded = pd.DataFrame({"filepath": multi.index, "label": "", "error": "multiple_labels",
                             "detail": [f"labels: {', '.join(names)}" for names in multi]})
    if len(excluded):
        warnings.append(f"{len(excluded)} image(s) {where} with more than one label are left out "
                        "(data.multi_label: drop) and listed in excluded.csv")
    return frame[~frame["filepath"].isin(multi.index)], excluded


def refuse_multiple_labels(frame: pd.DataFrame, where: str, warnings: list[str]) -> pd.DataFrame:
    """``frame`` with repeated rows of one image and label merged (noted in ``warnings``).

    Raises:
        DataError: An image has more than one label; the message lists up to five of them.
    """
    per_file = frame.groupby("filepath")["label"].nunique()
    multi = per_file[per_file > 1]
    if len(multi):
        examples = "; ".join(
            f"{fp}: {', '.join(sorted(frame.loc[frame['filepath'] == fp, 'label'].unique()))}"
            for fp in list(multi.index)[:5]
        )
        raise DataError(
            f"{len(multi)} image(s) in {where} have more than one label, which a single-label classifier "
            f"cannot learn from (e.g. {examples}). Give each image one label or remove those rows."
        )
    repeated = frame.duplicated("filepath")
    if repeated.any():
        warnings.append(f"{int(repeated.sum())} repeated row(s) for the same image and label in {where} were merged")
        frame = frame[~repeated]
    return frame
