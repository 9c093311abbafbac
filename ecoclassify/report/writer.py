"""The evaluation report: metrics, tables, plots and one self-contained HTML page.

:func:`write_report` is shared by training (``RUN_DIR/report/``, on the test split) and
``ecoclassify evaluate`` (a new folder, on any labelled set), so both reports are the same.
It writes, each file atomically:

- ``metrics.json``: every number, with stable keys (documented in :func:`write_report`);
- ``per_class.csv``, ``confusion_matrix.csv`` (counts), ``confusion_matrix_normalized.csv``
  (row shares), ``thresholds.csv``, ``per_group.csv`` (when there are groups);
- ``predictions_test.csv`` (or the name given): one row per image with its probabilities;
- ``excluded.csv``: unreadable images and why (when there were any);
- PNG plots (confusion matrix, PR curves, reliability diagram, thresholds, training curves,
  per-group bars);
- ``report.html`` (images embedded as base64, no network) and ``report.md``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ecoclassify.report import plots
from ecoclassify.report.metrics import DEFAULT_TARGET_PRECISIONS, DETAIL_KEYS, choose_group_columns, evaluate_predictions
from ecoclassify.files import (
    CONFUSION_FILE, CONFUSION_NORMALIZED_FILE, EXCLUDED_FILE, GROUPS_FILE, HTML_FILE, MARKDOWN_FILE, METRICS_FILE,
    PER_CLASS_FILE, TEST_PREDICTIONS_FILE, THRESHOLDS_FILE, atomic_write, write_csv, write_json, write_text,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: thresholds carry supported, n_images and a one-sided Clopper-Pearson bound
#: Plot files by role, in the order the report shows them.
PLOT_FILES = {
    "thresholds": "thresholds.png",
    "confusion_matrix": "confusion_matrix.png",
    "pr_curves": "pr_curves.png",
    "reliability": "reliability_diagram.png",
    "training_curves": "training_curves.png",
}
_KNOWN_FILES = {METRICS_FILE, PER_CLASS_FILE, CONFUSION_FILE, CONFUSION_NORMALIZED_FILE, THRESHOLDS_FILE,
                GROUPS_FILE, TEST_PREDICTIONS_FILE, EXCLUDED_FILE, HTML_FILE, MARKDOWN_FILE, *PLOT_FILES.values()}


@dataclass
class Report:
    """A written report.

    Attributes:
        out_dir: The folder holding it.
        metrics: The contents of its ``metrics.json``.
        files: Role -> path of every file written (``"html"``, ``"metrics"``, plot roles...).
        images: Plot role -> PNG bytes, as embedded in the HTML.
    """

    out_dir: Path
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def html_path(self) -> Path:
        """``report.html``, the page to open in a browser."""
        return self.out_dir / HTML_FILE

    @property
    def summary(self) -> dict[str, Any]:
        """The flat summary numbers of ``metrics["test"]`` (no tables): what a run's own
        ``metrics.json`` keeps under ``test``."""
        return {key: value for key, value in self.metrics["test"].items() if key not in DETAIL_KEYS}


def write_report(
    out_dir: Path | str,
    y_true: Sequence[int],
    proba: np.ndarray,
    classes: Sequence[str],
    frame: pd.DataFrame,
    *,
    history: Optional[pd.DataFrame] = None,
    config: Any = None,
    splits: Optional[Mapping[str, pd.DataFrame]] = None,
    facts: Optional[Mapping[str, Any]] = None,
    excluded: Optional[pd.DataFrame] = None,
    target_precisions: Optional[Sequence[float]] = None,
    group_columns: Optional[Sequence[str]] = None,
    not_predicted: Sequence[str] = (),
    kind: str = "training",
    title: Optional[str] = None,
    notes: Sequence[str] = (),
    predictions_file: str = TEST_PREDICTIONS_FILE,
) -> Report:
    """Compute every metric of one evaluated set and write the whole report into ``out_dir``.

    Args:
        out_dir: Folder for the report (created; files written here are replaced).
        y_true: True class index of each image.
        proba: ``(n_images, n_classes)`` predicted probabilities, columns in ``classes`` order.
        classes: Class names: the model's, plus e.g. ``other`` (see ``not_predicted``).
        frame: The evaluated images, one row per ``y_true`` entry: ``filepath``, ``label`` and any
            group columns (``site``, ``camera``, ``group``).
        history: ``history.csv`` of the training run, for the training curves.
        config: The run's :class:`~ecoclassify.config.Config`, summarised in the report.
        splits: ``{split name: samples}`` for the images-per-class-and-split table.
        facts: Run facts put at the top level of ``metrics.json`` (training: ``classes``,
            ``epochs``, ``monitor``, ``best_monitor_value``, ``split_counts``).
        excluded: Unreadable images (``filepath``, ``label``, ``error``, ``detail``).
        target_precisions: Auto-labelling targets; default ``config.report.target_precisions``.
        group_columns: Columns of ``frame`` for per-group metrics; default: those of ``site``,
            ``camera``, ``location``, ``station`` and ``group`` that exist (see
            :func:`ecoclassify.report.metrics.choose_group_columns`).
        not_predicted: Classes the model cannot output (e.g. ``other``).
        kind: ``"training"`` (a run's test split) or ``"evaluation"`` (``ecoclassify evaluate``).
        title: Page title; default from the experiment name.
        notes: Sentences shown at the top of the report (e.g. how unknown labels were treated).
        predictions_file: File name of the per-image predictions.

    Returns:
        The :class:`Report`. Its ``metrics`` (``metrics.json``) has the keys: ``schema_version``,
        ``kind``, ``created``, ``versions``, ``title``, ``notes``, everything in ``facts``, ``split_counts``,
        ``test`` (see :func:`ecoclassify.report.metrics.evaluate_predictions`, plus ``groups_skipped``),
        ``unreadable`` (``n_images``, ``by_reason``) and ``files``.
    """
    from ecoclassify.report.context import ReportContext
    from ecoclassify.report.html import render_html
    from ecoclassify.report.markdown import render_markdown

    out_dir = Path(out_dir)
    classes = list(classes)
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    frame = frame.reset_index(drop=True)
    if len(frame) != len(y_true):
        raise ValueError(f"frame has {len(frame)} rows but y_true has {len(y_true)} entries")
    if len(y_true) == 0:
        raise ValueError("a report needs at least one evaluated image")
    if target_precisions is None:
        target_precisions = config.report.target_precisions if config is not None else DEFAULT_TARGET_PRECISIONS
    columns, skipped = choose_group_columns(frame, group_columns)
    log.info("report: computing the metrics of %d images", len(y_true))
    test = evaluate_predictions(y_true, proba, classes, target_precisions=target_precisions,
                                groups={c: frame[c].tolist() for c in columns}, not_predicted=not_predicted)
    test["groups_skipped"] = skipped
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs proved consistent
    excluded = excluded if excluded is not None else pd.DataFrame(columns=["filepath", "label", "error", "detail"])
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "title": title or _default_title(config, kind),
        "notes": list(notes),
        **dict(facts or {}),
    }
    metrics.setdefault("split_counts", {name: int(len(part)) for name, part in (splits or {}).items()}
                       or {"test": int(len(y_true))})
    metrics["test"] = test
    metrics["unreadable"] = {"n_images": int(len(excluded)),
                             "by_reason": {str(k): int(v) for k, v in excluded["error"].value_counts().items()}
                             if len(excluded) else {}}
    report = Report(out_dir, metrics)
    files = report.files

    proba_norm = proba / proba.sum(axis=1, keepdims=True)
    files["per_class"] = write_csv(out_dir / PER_CLASS_FILE, pd.DataFrame(test["per_class"]))
    cm = test["confusion_matrix"]
    files["confusion_matrix"] = write_csv(out_dir / CONFUSION_FILE, _matrix_frame(cm["counts"], classes))
    files["confusion_matrix_normalized"] = write_csv(out_dir / CONFUSION_NORMALIZED_FILE,
                                                     _matrix_frame(cm["normalized"], classes))
    files["thresholds"] = write_csv(out_dir / THRESHOLDS_FILE, thresholds_frame(test["thresholds"]))
    if test["groups"]:
        files["per_group"] = write_csv(out_dir / GROUPS_FILE, pd.concat(
            [pd.DataFrame(rows).assign(column=column) for column, rows in test["groups"].items()])
            [["column", "group", "n_images", "n_classes", "accuracy", "balanced_accuracy", "macro_f1", "mAP"]])
    files["predictions"] = write_csv(out_dir / predictions_file,
                                     predictions_frame(frame, y_true, proba_norm, classes, not_predicted, columns))
    if len(excluded):
        files["excluded"] = write_csv(out_dir / EXCLUDED_FILE, excluded)

    log.info("report: drawing the plots")
    report.images = _draw_plots(test, y_true, proba_norm, classes, history, config, metrics.get("monitor"))
    for role, data in report.images.items():
        name = PLOT_FILES.get(role, f"{role}.png")
        files[f"plot_{role}"] = atomic_write(out_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
    files["html"] = out_dir / HTML_FILE
    files["markdown"] = out_dir / MARKDOWN_FILE
    files["metrics"] = out_dir / METRICS_FILE
    metrics["files"] = {role: path.name for role, path in files.items()}
    context = ReportContext(metrics=metrics, images=report.images, config=config,
                            split_table=split_table(splits), excluded=excluded)
    log.info("report: writing report.html, report.md and metrics.json")
    write_text(files["html"], render_html(context))
    write_text(files["markdown"], render_markdown(context))
    write_json(files["metrics"], metrics)
    for stale in _KNOWN_FILES - {p.name for p in files.values()} - {predictions_file}:
        (out_dir / stale).unlink(missing_ok=True)  # left by an earlier report in the same folder
    log.info("report: %s", files["html"])
    return report


def _versions() -> dict[str, str]:
    """Versions of what computed the report (TensorFlow and Keras only if already loaded: the report
    itself never needs them)."""
    import matplotlib
    import sklearn

    from ecoclassify import __version__

    versions = {"ecoclassify": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
                "matplotlib": matplotlib.__version__}
    for name in ("tensorflow", "keras"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = module.__version__
    return versions


def _default_title(config: Any, kind: str) -> str:
    name = getattr(getattr(config, "experiment", None), "name", None)
    what = "Test-set report" if kind == "training" else "Evaluation report"
    return f"{what}: {name}" if name else what


def _matrix_frame(matrix: list[list[Any]], classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame(matrix, columns=classes)
    table.insert(0, "true \\ predicted", classes)
    return table


def thresholds_frame(thresholds: Mapping[str, Any]) -> pd.DataFrame:
    """The auto-labelling thresholds as one long table (``scope`` ``overall`` or ``class``)."""
    rows = [{"scope": "overall", "class": "", **row} for row in thresholds["overall"]]
    for name, per_target in thresholds["per_class"].items():
        rows += [{"scope": "class", "class": name, **row} for row in per_target]
    for row in thresholds["per_class_combined"]:
        unreachable, weak = row["classes_unreachable"], row["classes_not_supported"]
        notes = [row["note"]] if row["note"] else []
        notes += [f"never auto-labelled (unreachable): {', '.join(unreachable)}"] if unreachable else []
        notes += [f"own threshold not supported by the data: {', '.join(weak)}"] if weak else []
        rows.append({"scope": "per_class_combined", "class": "", "reachable": row["n_auto_labelled"] > 0,
                     **{k: v for k, v in row.items() if k not in ("classes_unreachable", "classes_not_supported")},
                     "note": "; ".join(notes)})
    order = ["scope", "class", "target_precision", "reachable", "supported", "threshold", "precision",
             "precision_lower_bound", "bound_method", "recall", "n_images", "n_auto_labelled", "share_auto_labelled",
             "max_precision", "note"]
    return pd.DataFrame(rows).reindex(columns=order)


def predictions_frame(frame: pd.DataFrame, y_true: np.ndarray, proba: np.ndarray, classes: list[str],
                      not_predicted: Sequence[str] = (), group_columns: Sequence[str] = ()) -> pd.DataFrame:
    """One row per image: ``filepath``, ``true_label``, ``predicted_label``, ``score``, ``correct``,
    group columns, and ``p_<class>`` for every class the model outputs."""
    predicted = proba.argmax(axis=1)
    table = pd.DataFrame({
        "filepath": frame["filepath"].astype(str).to_numpy(),
        "true_label": [classes[i] for i in y_true],
        "predicted_label": [classes[i] for i in predicted],
        "score": proba.max(axis=1),
        "correct": predicted == y_true,
    })
    if "original_label" in frame.columns:  # labels the model does not know, counted as "other"
        table.insert(2, "original_label", frame["original_label"].to_numpy())
    for column in group_columns:
        table[column] = frame[column].to_numpy()
    for index, name in enumerate(classes):
        if name not in not_predicted:
            table[f"p_{name}"] = proba[:, index]
    return table


def split_table(splits: Optional[Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with a total column and row."""
    if not splits:
        return pd.DataFrame()
    counts = {name: part["label"].value_counts() for name, part in splits.items() if "label" in part}
    table = pd.DataFrame(counts).fillna(0).astype(int).sort_index()
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "class"
    return table


def _draw_plots(test: dict[str, Any], y_true: np.ndarray, proba: np.ndarray, classes: list[str],
                history: Optional[pd.DataFrame], config: Any, monitor: Optional[str] = None) -> dict[str, bytes]:
    images: dict[str, bytes] = {}
    predictable = [i for i, name in enumerate(classes) if name not in test["not_predicted_classes"]]
    scores, correct = proba.max(axis=1), proba.argmax(axis=1) == y_true
    cm = test["confusion_matrix"]
    figures = {
        "thresholds": plots.thresholds_figure(scores, correct, test["thresholds"]["targets"],
                                              test["thresholds"]["overall"]),
        "confusion_matrix": plots.confusion_matrix_figure(np.array(cm["counts"]),
                                                          np.array(cm["normalized"], dtype=float), classes),
        "pr_curves": plots.pr_curves_figure(y_true, proba, classes, {
            row["class"]: row["average_precision"] for row in test["per_class"] if classes.index(row["class"])
            in predictable}),
        "reliability": plots.reliability_figure(test["calibration"]["bins"], test["calibration"]["ece"]),
    }
    monitor = getattr(getattr(config, "training", None), "monitor", None) or monitor
    curves = plots.training_curves_figure(history, monitor) if history is not None else None
    if curves is not None:
        figures["training_curves"] = curves
    for column, rows in test["groups"].items():
        figures[f"groups_{_slug(column)}"] = plots.group_figure(rows, column)
    for role, figure in figures.items():
        images[role] = plots.png_bytes(figure)
    return images


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))[:60]
