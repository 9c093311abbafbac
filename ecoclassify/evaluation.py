"""``ecoclassify evaluate``: a trained model on any labelled set, with the training report's layout.

Flow: model (run folder or ``.keras`` + ``labels.json``) -> labelled set (class folders, CSV or
COCO Camera Traps, read by the same sources as training) -> labels checked against the
model's -> every image decoded once (unreadable files recorded, not fatal) -> predictions ->
:func:`ecoclassify.report.write_report` into a new folder.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ecoclassify.config import Config, DataConfig, load_config
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.files import CONFIG_FILE, EVALUATIONS_DIR, HISTORY_FILE, HTML_FILE, MODEL_FILE, PREDICTIONS_FILE
from ecoclassify.run import new_run_dir

log = logging.getLogger(__name__)

UNKNOWN_LABEL_POLICIES = ("error", "other")

DataSpec = Union[DataConfig, Mapping[str, Any], str, Path]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced.

    Attributes:
        output_dir: The new folder holding the report.
        metrics: Contents of its ``metrics.json`` (``metrics["test"]`` holds the metrics).
        classes: Classes the metrics are computed over (the model's, plus ``other`` if added).
        predictions: One row per evaluated image (as in ``predictions.csv``).
        excluded: Unreadable images with the reason (as in ``excluded.csv``).
        unknown_labels: Labels of the data the model does not know, with their image counts.
        warnings: Notes from reading the data (ignored files, label filters).
    """

    output_dir: Path
    metrics: dict[str, Any]
    classes: list[str]
    predictions: pd.DataFrame
    excluded: pd.DataFrame
    unknown_labels: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def report_path(self) -> Path:
        """``report.html`` of this evaluation."""
        return self.output_dir / HTML_FILE


def evaluate(
    model: Union[str, Path],
    data: DataSpec,
    output: Union[str, Path, None] = None,
    *,
    unknown_labels: Literal["error", "other"] = "error",
    other_label: str = "other",
    overwrite: bool = False,
    root: Union[str, Path, None] = None,
    exclude_labels: Sequence[str] = (),
    group_by: Optional[str] = None,
    target_precisions: Optional[Sequence[float]] = None,
    batch_size: int = 32,
    progress: Optional[Callable[[int, int], None]] = None,
    predict_progress: Optional[Callable[[int, int], None]] = None,
    detections: Union[str, Path, None] = None,
    compare_with: Union[str, Path, None] = None,
) -> EvaluationResult:
    """Evaluate a trained classifier on a labelled set and write a report into a new folder.

    Args:
        model: A run folder (``model.keras`` + ``labels.json``) or a ``.keras`` file with
            ``labels.json`` beside it.
        data: The labelled images: a folder with one subfolder per class, a ``.csv`` file
            (``filepath,label`` plus e.g. ``site``), a COCO Camera Traps ``.json`` file, or a
            ``data`` config section (:class:`DataConfig` or mapping) for full control.
        output: Folder for the report. By default a new
            ``<run folder>/evaluations/<data name>-<timestamp>/``. An existing non-empty folder
            is refused unless ``overwrite`` is set.
        unknown_labels: ``"error"``: labels the model does not know stop the evaluation with a
            list of them. ``"other"``: their images are counted as ``other_label``: the
            model's own class of that name if it has one, else an extra class the model can
            never predict (all its images count as errors).
        other_label: Name of that class.
        overwrite: Allow writing into an existing, non-empty ``output`` folder (report files
            are replaced; other files are left alone).
        root: Base folder for relative paths in a CSV or COCO file (default: the file's folder).
        exclude_labels: Labels to leave out of the evaluation (e.g. ``empty``).
        group_by: Column for per-group metrics (default: ``site``/``camera`` when present).
        target_precisions: Auto-labelling targets; default: the run's ``report.target_precisions``.
        batch_size: Images per prediction batch.
        progress: Called as ``progress(advance, total)`` while images are checked.
        predict_progress: Called as ``progress(advance, total)`` while images are labelled.
        detections: A detector's output for the images (``file`` relative to the data's root):
            evaluate a crop model on its boxes instead (image-level, crop-level and per-site
            scores; see :mod:`ecoclassify.prediction.crop_evaluation`). ``unknown_labels`` and
            ``target_precisions`` do not apply: labels the model does not know count as errors.
        compare_with: With ``detections``: a whole-frame model whose per-site scores on the
            same images are put beside the crop model's.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        ConfigError: An argument is invalid (unknown policy, data of an unknown kind).
        ModelError: The model cannot be loaded.
        DataError: The data cannot be read, holds no readable image, or has unknown labels.
        RunError: ``output`` exists and is not empty (without ``overwrite``) or is a run folder.
    """
    from ecoclassify.data.scan import scan_images
    from ecoclassify.data.sources import load_source
    from ecoclassify.models.io import load_classifier, resolve_model_path

    if unknown_labels not in UNKNOWN_LABEL_POLICIES:
        raise ConfigError(f"unknown_labels must be one of: {', '.join(UNKNOWN_LABEL_POLICIES)}. "
                          f"Received: {unknown_labels!r}")
    model_path, _ = resolve_model_path(model)
    run_dir = model_path.parent
    run_config = _run_config(run_dir)
    data_config = data_config_for(data, image_size=(8, 8), root=root)
    if exclude_labels:
        data_config = data_config.model_copy(
            update={"exclude_labels": sorted(set(data_config.exclude_labels) | set(exclude_labels))})
    out_dir = _check_output(output, overwrite)  # before the slow part: fail fast on a clash

    log.info("loading the model %s", model_path)
    classifier = load_classifier(model_path)
    data_config = data_config.model_copy(update={"image_size": classifier.image_size})
    source = load_source(data_config)
    if source.samples.empty:
        raise DataError(f"no labelled images found in {_describe(data_config)}")
    for warning in source.warnings:
        log.warning(warning)
    samples = source.samples.copy()
    if group_by and group_by not in samples.columns:
        raise DataError(f"group_by {group_by!r} is not a column of the data. Columns found: "
                        f"{', '.join(c for c in samples.columns if c != 'filepath')}")
    if detections is not None:
        return _evaluate_crops(model_path, samples, source, data_config, Path(detections), out_dir, compare_with,
                               group_by, batch_size)
    classes = list(classifier.classes)
    unknown = {str(k): int(v) for k, v in samples.loc[~samples["label"].isin(classes), "label"]
               .value_counts().sort_index().items()}
    notes = []
    if unknown and unknown_labels == "error":
        listing = ", ".join(f"{name} ({count})" for name, count in unknown.items())
        raise DataError(
            f"{len(unknown)} label(s) of the data are not classes of the model: {listing}. The model knows: "
            f"{', '.join(classes)}. Leave them out (exclude_labels / --exclude-label), or count them as "
            f"'{other_label}' (unknown_labels='other' / --unknown-labels other).")
    eval_classes, not_predicted = list(classes), []
    if unknown:
        samples["original_label"] = samples["label"]
        samples.loc[~samples["label"].isin(classes), "label"] = other_label
        if other_label not in classes:
            eval_classes.append(other_label)
            not_predicted.append(other_label)
        listing = ", ".join(f"{name} ({count})" for name, count in unknown.items())
        notes.append(f"Labels the model does not know were counted as '{other_label}': {listing}."
                     + (" The model cannot predict this class, so these images all count as errors."
                        if not_predicted else f" '{other_label}' is a class of the model."))

    scanned = scan_images(samples, classifier.image_size, max_pixels=data_config.max_image_pixels, progress=progress)
    failed = scanned["status"] == "failed"
    excluded = scanned.loc[failed, ["filepath", "label", "error", "detail"]].reset_index(drop=True)
    if len(source.excluded):  # refused by the source (outside the root...): listed, never opened
        excluded = pd.concat([source.excluded, excluded], ignore_index=True)
    usable = scanned[~failed].reset_index(drop=True)
    if excluded.shape[0]:
        log.warning("%d unreadable image(s) recorded and left out", len(excluded))
    if usable.empty:
        reasons = ", ".join(f"{n} {r}" for r, n in excluded["error"].value_counts().items())
        raise DataError(f"none of the {len(scanned)} images in {_describe(data_config)} can be read ({reasons})")

    log.info("labelling %d images with the model", len(usable))
    proba, late = _predict(classifier, usable["filepath"].tolist(), batch_size, data_config.max_image_pixels,
                           predict_progress)
    if late.any():  # read at the check, unreadable now (changed or removed meanwhile): listed too
        excluded = pd.concat([excluded, usable.loc[late, ["filepath", "label"]].assign(
            error="changed_since_check", detail="readable when the images were checked, not when classified")],
            ignore_index=True)
        usable, proba = usable[~late].reset_index(drop=True), proba[~late]
        if usable.empty:
            raise DataError(f"none of the images in {_describe(data_config)} could be classified")
    if not_predicted:
        proba = np.hstack([proba, np.zeros((len(proba), len(not_predicted)), dtype=proba.dtype)])
    index = {name: i for i, name in enumerate(eval_classes)}
    y_true = usable["label"].map(index).to_numpy()

    if out_dir is None:
        out_dir = new_run_dir(run_dir / EVALUATIONS_DIR, _data_name(data_config))
    from ecoclassify.report.writer import write_report

    history = pd.read_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else None
    facts = {
        "classes": classes,
        "model": str(model_path),
        "data": {"source": data_config.source, "path": str(data_config.labels or data_config.root),
                 "images_listed": int(len(samples)), "images_evaluated": int(len(usable))},
        "unknown_labels": {"policy": unknown_labels, "other_label": other_label, "counts": unknown},
        "skipped_files": len(source.skipped),
        "split_counts": {"evaluated": int(len(usable))},
    }
    report = write_report(
        out_dir, y_true, proba, eval_classes, usable, history=history, config=run_config,
        splits={"evaluated": usable}, facts=facts, excluded=excluded, target_precisions=target_precisions,
        group_columns=[group_by] if group_by else None, not_predicted=not_predicted, kind="evaluation",
        title=f"Evaluation of {_model_name(model_path, run_config)} on {_data_name(data_config)}", notes=notes,
        predictions_file=PREDICTIONS_FILE,
    )
    predictions = pd.read_csv(out_dir / PREDICTIONS_FILE)
    return EvaluationResult(out_dir, report.metrics, eval_classes, predictions, excluded, unknown,
                            list(source.warnings))


def _evaluate_crops(model_path: Path, samples: pd.DataFrame, source: Any, data_config: DataConfig, detections: Path,
                    out_dir: Optional[Path], compare_with: Union[str, Path, None], group_by: Optional[str],
                    batch_size: int) -> EvaluationResult:
    from ecoclassify.files import EXCLUDED_FILE, IMAGE_PREDICTIONS_FILE
    from ecoclassify.prediction.crop_evaluation import evaluate_on_detections
    from ecoclassify.prediction.options import PredictOptions

    if out_dir is None:
        out_dir = new_run_dir(model_path.parent / EVALUATIONS_DIR, _data_name(data_config) + "-crops")
    metrics = evaluate_on_detections(model_path, samples, source.root, detections, out_dir, compare_with=compare_with,
                                     group_by=group_by, options=PredictOptions(batch_size=batch_size))
    predictions = pd.read_csv(out_dir / IMAGE_PREDICTIONS_FILE)
    excluded = pd.read_csv(out_dir / EXCLUDED_FILE)
    classes = sorted({row["class"] for row in metrics["image_level"]["per_class"]})
    return EvaluationResult(out_dir, metrics, classes, predictions, excluded, {}, list(source.warnings))


def data_config_for(data: DataSpec, *, image_size: tuple[int, int], root: Union[str, Path, None] = None
                    ) -> DataConfig:
    """A :class:`DataConfig` for a labelled set given as a path or a ``data`` section.

    A folder is a ``folders`` source, a ``.csv`` file a ``csv`` source, a ``.json`` file a
    ``coco`` source (``root``: base of its relative paths).

    Raises:
        ConfigError: The path is of no known kind or the mapping is not a valid ``data`` section.
    """
    if isinstance(data, DataConfig):
        return data
    if isinstance(data, Mapping):
        values = {"image_size": list(image_size), **dict(data)}
        try:
            return DataConfig.model_validate(values)
        except Exception as exc:  # pydantic's ValidationError: report it like a config error
            raise ConfigError(f"data is not a valid data section: {exc}") from None
    path = Path(data).expanduser()
    values: dict[str, Any] = {"image_size": image_size}
    if path.is_dir():
        values.update(source="folders", root=path)
    elif path.suffix.lower() == ".csv":
        values.update(source="csv", labels=path, root=Path(root) if root else None)
    elif path.suffix.lower() == ".json":
        values.update(source="coco", labels=path, root=Path(root) if root else None)
    elif not path.exists():
        raise DataError(f"data must be an existing folder, .csv or .json file. Received: '{path}' (not found)")
    else:
        raise ConfigError("data must be a folder with one subfolder per class, a .csv file (filepath,label,...) or "
                          f"a COCO Camera Traps .json file. Received: '{path}'")
    return DataConfig(**values)


def _check_output(output: Union[str, Path, None], overwrite: bool) -> Optional[Path]:
    if output is None:
        return None
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise RunError(f"output must be a folder. Received: '{out}' (an existing file)")
    if (out / MODEL_FILE).exists() or (out / CONFIG_FILE).exists():
        raise RunError(f"output '{out}' is a run folder; an evaluation goes into a folder of its own "
                       f"(leave output out to get {out / EVALUATIONS_DIR}/<name>-<time>/)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RunError(f"output folder '{out}' exists and is not empty; choose a new folder, or set "
                       "overwrite=True (--overwrite) to replace the report files in it")
    return out  # created by the report writer, so a failed evaluation leaves no empty folder


def _predict(classifier: Any, paths: list[str], batch_size: int, max_pixels: int,
             progress: Optional[Callable[[int, int], None]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for ``paths`` through predict's own decoder and batching, and which files failed."""
    from ecoclassify.prediction.options import PredictOptions
    from ecoclassify.prediction.runner import classify_files

    rows = classify_files(classifier, [Path(p) for p in paths], PredictOptions(batch_size=batch_size,
                                                                            max_pixels=max_pixels), progress)
    failed = np.array([row.probs is None for row in rows], dtype=bool)
    proba = np.zeros((len(rows), len(classifier.classes)), dtype=np.float64)
    for i, row in enumerate(rows):
        if row.probs is not None:
            proba[i] = row.probs
    return proba, failed


def _run_config(run_dir: Path) -> Optional[Config]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except Exception as exc:  # an old or hand-edited config only costs the report its summary
        log.warning("cannot read %s for the report's config summary: %s", path, str(exc).splitlines()[0][:200])
        return None


def _describe(data: DataConfig) -> str:
    return f"{data.source} source {data.labels or data.root}"


def _data_name(data: DataConfig) -> str:
    path = data.labels or data.root
    stem = path.stem if data.labels else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data"


def _model_name(model_path: Path, config: Optional[Config]) -> str:
    if config is not None:
        return f"{config.experiment.name} ({model_path.parent.name})"
    return model_path.name
