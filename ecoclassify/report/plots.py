"""The report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built from ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global backend is switched, no window can open on a headless cluster node, nothing leaks
between threads, and a figure is freed as soon as its bytes are taken.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve

#: Colours shared with report.html's stylesheet.
INK, MUTED, ACCENT, GOOD, BAD = "#1f2933", "#7b8794", "#2f6f5e", "#2f6f5e", "#b44d3a"
DPI = 110


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(MUTED)
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(True, color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)


def png_bytes(figure: Figure) -> bytes:
    """Render ``figure`` to PNG bytes (white background)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def confusion_matrix_figure(counts: np.ndarray, normalised: np.ndarray, classes: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix as colour, with counts (and row %) written in each cell.

    Colour shows the share of each true class (row), so rare classes are as readable as
    common ones; the numbers are the raw counts.
    """
    n = len(classes)
    side = min(18.0, max(4.5, 0.55 * n + 2.5))
    figure = _figure(side + 1.2, side)
    ax = figure.add_subplot()
    shown = np.nan_to_num(np.asarray(normalised, dtype=float), nan=0.0)
    image = ax.imshow(shown, cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
    colourbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    colourbar.set_label("share of the true class (row)", fontsize=9)
    ax.set_xticks(range(n), labels=classes, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.tick_params(labelsize=9 if n <= 20 else 7)
    if n <= 30:  # beyond that the numbers no longer fit; the CSV has them
        size = 9 if n <= 12 else 7
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0:
                    continue
                share = shown[i, j]
                text = f"{counts[i, j]}" if n > 12 else f"{counts[i, j]}\n{share:.0%}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size,
                        color="white" if share > 0.55 else INK)
    ax.set_title("Confusion matrix", loc="left", fontsize=12, color=INK)
    return figure


def pr_curves_figure(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                     average_precisions: dict[str, Optional[float]]) -> Figure:
    """One-vs-rest precision-recall curve of every class with a positive example."""
    scored = [(i, name) for i, name in enumerate(classes) if average_precisions.get(name) is not None]
    figure = _figure(8.5, 5.6)
    ax = figure.add_subplot()
    _style(ax)
    colours = _palette(len(scored))
    for (index, name), colour in zip(scored, colours):
        precision, recall, _ = precision_recall_curve(y_true == index, proba[:, index])
        ax.step(recall, precision, where="post", color=colour, linewidth=1.6 if len(scored) <= 12 else 1.0,
                label=f"{name} (AP {average_precisions[name]:.3f})")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("recall (share of the class's images found)")
    ax.set_ylabel("precision (share of predictions that are right)")
    ax.set_title("Precision-recall curves, one class against the rest", loc="left", fontsize=12, color=INK)
    if scored:
        columns = 1 if len(scored) <= 12 else 2 if len(scored) <= 30 else 3
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8, ncols=columns)
    return figure


def reliability_figure(bins: list[dict[str, Any]], ece: Optional[float]) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, image counts underneath."""
    figure = _figure(7.5, 6.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for ax in (top, bottom):
        _style(ax)
    width = bins[0]["upper"] - bins[0]["lower"]
    centres = np.array([(b["lower"] + b["upper"]) / 2 for b in bins])
    filled = [i for i, b in enumerate(bins) if b["n_images"]]
    accuracy = np.array([bins[i]["accuracy"] for i in filled])
    confidence = np.array([bins[i]["confidence"] for i in filled])
    top.plot([0, 1], [0, 1], linestyle="--", color=MUTED, linewidth=1, zorder=4, label="perfect calibration")
    top.bar(centres[filled], accuracy, width=width * 0.92, color=ACCENT, alpha=0.85, label="accuracy in bin")
    # The gap between a bar's top and its red mark is what ECE averages.
    top.vlines(centres[filled], np.minimum(accuracy, confidence), np.maximum(accuracy, confidence), color=BAD,
               linewidth=2, alpha=0.6)
    top.scatter(centres[filled], confidence, color=BAD, marker="_", s=180, linewidths=2.4, zorder=3,
                label="mean confidence in bin")
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    title = "Reliability diagram" + (f" (ECE {ece:.3f})" if ece is not None else "")
    top.set_title(title, loc="left", fontsize=12, color=INK)
    top.legend(loc="upper left", frameon=False, fontsize=8)
    bottom.bar(centres, [b["n_images"] for b in bins], width=width * 0.92, color=MUTED)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top score)")
    bottom.set_ylabel("images")
    return figure


def thresholds_figure(scores: np.ndarray, correct: np.ndarray, targets: Sequence[float],
                      overall: list[dict[str, Any]]) -> Figure:
    """Precision and share auto-labelled as the score threshold rises, with the chosen thresholds."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    taken = np.arange(1, len(scores) + 1)
    precision = np.cumsum(correct[order]) / taken
    share = taken / len(scores)
    figure = _figure(8.5, 4.8)
    ax = figure.add_subplot()
    _style(ax)
    ax.step(sorted_scores, precision, where="post", color=ACCENT, linewidth=1.8, label="precision of auto-labels")
    ax.step(sorted_scores, share, where="post", color="#3e6db5", linewidth=1.8,
            label="share of images auto-labelled")
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for number, row in enumerate(overall):
        ax.axhline(row["target_precision"], color=MUTED, linewidth=0.8, linestyle=":")
        if row["reachable"]:  # labelled in the legend: close thresholds would overprint text labels
            ax.axvline(row["threshold"], color=BAD, linewidth=1.2, linestyle=styles[number % len(styles)],
                       label=f"threshold {row['threshold']:.3f} for precision {row['target_precision']:g}"
                       + ("" if row.get("supported", True) else " (not supported by the data)"))
    # Top scores never fall below 1 / n_classes: start the axis near the lowest one seen.
    ax.set_xlim(max(0.0, float(sorted_scores.min()) - 0.05) if len(scores) else 0.0, 1.0)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("score threshold (images at or above it are auto-labelled)")
    ax.set_ylabel("fraction")
    ax.set_title("Auto-labelling: precision and workload saved by threshold", loc="left", fontsize=12, color=INK)
    ax.legend(loc="lower left", frameon=True, framealpha=0.9, edgecolor="none", fontsize=8)
    return figure


def training_curves_figure(history: pd.DataFrame, monitor: Optional[str] = None) -> Optional[Figure]:
    """Loss, accuracy and macro-F1 per epoch for training and validation (``None`` without data)."""
    if history is None or history.empty or "epoch" not in history.columns:
        return None
    panels = [name for name in ("loss", "accuracy", "macro_f1") if name in history.columns]
    if not panels:
        return None
    figure = _figure(4.0 * len(panels) + 0.6, 3.8)
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    epochs = history["epoch"].to_numpy() + 1  # people count epochs from 1
    for ax, name in zip(axes, panels):
        _style(ax)
        ax.plot(epochs, history[name], color="#3e6db5", marker="o", markersize=3, linewidth=1.6, label="training")
        if f"val_{name}" in history.columns:
            ax.plot(epochs, history[f"val_{name}"], color=ACCENT, marker="o", markersize=3, linewidth=1.6,
                    label="validation")
        ax.set_title(name.replace("_", "-").replace("macro-f1", "macro-F1"), loc="left", fontsize=11, color=INK)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=False, fontsize=8)
    if monitor and monitor in history.columns and history[monitor].notna().any():
        best = history[monitor].idxmin() if monitor.endswith("loss") else history[monitor].idxmax()
        for ax in axes:
            ax.axvline(epochs[best], color=BAD, linewidth=1, linestyle="--")
        axes[0].annotate(f"best {monitor}", (epochs[best], axes[0].get_ylim()[1]), xytext=(3, -10),
                         textcoords="offset points", fontsize=8, color=BAD)
    return figure


def group_figure(rows: list[dict[str, Any]], column: str) -> Figure:
    """Accuracy and macro-F1 of each group as horizontal bars."""
    names = [r["group"] for r in rows]
    height = max(2.4, 0.34 * len(rows) + 1.4)
    figure = _figure(8.0, height)
    ax = figure.add_subplot()
    _style(ax)
    positions = np.arange(len(rows))
    for offset, key, colour in ((-0.2, "accuracy", "#3e6db5"), (0.2, "macro_f1", ACCENT)):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        ax.barh(positions + offset, values, height=0.38, color=colour, label=key.replace("_", "-"))
    ax.set_yticks(positions, labels=[f"{n} ({r['n_images']})" for n, r in zip(names, rows)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title(f"Per {column}: accuracy and macro-F1 (images in brackets)", loc="left", fontsize=12, color=INK)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return figure


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]
