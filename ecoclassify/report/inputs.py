"""Checking the arrays every metric takes: true class indices and predicted probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_inputs(y_true: Sequence[int], proba: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, proba)`` as arrays, rows of ``proba`` normalised to sum 1.

    Raises:
        ValueError: The shapes do not match, a class index is out of range, or a row of
            ``proba`` is negative or sums to zero.
    """
    y_true = np.asarray(y_true, dtype=int).reshape(-1)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(y_true), n_classes):
        raise ValueError(f"proba must have shape (n_images, n_classes) = ({len(y_true)}, {n_classes}). "
                         f"Received: {proba.shape}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError(f"y_true must hold class indices in [0, {n_classes}). Received: {sorted(set(y_true))[:10]}")
    totals = proba.sum(axis=1, keepdims=True)
    if (proba < 0).any() or (totals <= 0).any():
        raise ValueError("proba must hold non-negative probabilities with a positive sum in every row")
    return y_true, proba / totals
