"""``ecoclassify predict``: label camera-trap folders in batches, robustly and resumably.

Flow: inputs -> streamed work items (:mod:`ecoclassify.prediction.inputs`) -> chunks of
``batch_size`` files, decoded by a thread pool a few chunks ahead of the model
(:mod:`ecoclassify.prediction.runner`) -> one row per file -> every ``checkpoint_every`` images
a checkpoint part (:mod:`ecoclassify.prediction.checkpoint`) -> labels, top-k and sequences
from the probabilities -> the output file, written atomically (:mod:`ecoclassify.prediction.outputs`).

Guarantees: one row per discovered image file, whatever happens to it; a file that cannot be
read is ``failed`` with a reason and never gets a label; skipped files (hidden, videos, other
non-images) are counted in the summary; an existing output is never replaced without
``overwrite``; Ctrl-C or a crash keeps everything done so far for ``resume``, and a resumed
run produces exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecoclassify.errors import ModelError, RunError
from ecoclassify.models.io import LoadedClassifier, load_classifier
from ecoclassify.models.runtimes import InferenceRuntime, require_litert
from ecoclassify.files import file_sha256
from ecoclassify.prediction.checkpoint import Checkpoint, RawRow, check_removable, checkpoint_path
from ecoclassify.prediction.crops import predict_crops, warn_if_crop_model
from ecoclassify.prediction.inputs import InputSpec, count_refusing_output, iter_work, resolve_inputs
from ecoclassify.prediction.lock import output_lock
from ecoclassify.prediction.md_categories import resolve_md_categories
from ecoclassify.prediction.options import PredictOptions
from ecoclassify.prediction.outputs import normalise_columns, now_iso, write_output
from ecoclassify.prediction.runner import Runner, decode
from ecoclassify.prediction.sequences import UNKNOWN, assign_sequences
from ecoclassify.prediction.summary import PredictionSummary, format_summary  # noqa: F401  (format_summary: API)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]



class PredictionInterrupted(RunError):
    """Prediction stopped by Ctrl-C; the checkpoint holds the work done so far."""

    exit_code = 130


def predict(
    model: str | os.PathLike | LoadedClassifier,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    options: PredictOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Classify every image under ``inputs`` and return (and optionally write) one row per file.

    Args:
        model: A run folder, a ``.keras`` file with ``labels.json`` beside it, or a loaded
            :class:`~ecoclassify.models.io.LoadedClassifier`.
        inputs: Folders, image files and text files listing image paths (one per line,
            relative to the list file's folder), or one of them.
        options: A :class:`~ecoclassify.prediction.options.PredictOptions`; or give its fields
            as keyword arguments instead (``output=...``, ``batch_size=...``, ``resume=True``...).
            ``resume`` continues from the checkpoint of an interrupted run with the same model
            and inputs (only files not yet classified are read; failed ones are retried, and so
            are files whose size or modification time changed since); ``engine="dask"`` labels
            chunks on Dask workers with the same output (needs ``pip install 'ecoclassify[dask]'``);
            ``detections=`` a detector's output classifies the crops of its boxes instead
            (:func:`ecoclassify.prediction.crops.predict_crops`); ``runtime="litert"`` runs the
            model through LiteRT, converted once and checked against Keras (see
            :mod:`ecoclassify.models.litert`).
        progress: Called as ``progress(advance, total)`` as files are done.
        **kwargs: The fields of :class:`~ecoclassify.prediction.options.PredictOptions`.

    Returns:
        Rows sorted by ``root`` then ``filepath``: ``filepath``, ``root``, ``status``, ``error``,
        ``detail``, ``label``, ``score``, ``top1_label``, ``top1_score``, ...,
        ``prob_<class>`` per class, ``datetime``, ``width``, ``height`` and, with
        ``sequence_gap``, ``sequence_id``, ``sequence_label``, ``sequence_score``.
        ``frame.attrs["summary"]`` is a :class:`PredictionSummary`, ``frame.attrs["metadata"]``
        what the json formats record.

    Raises:
        ConfigError: An option is invalid, or ``runtime="litert"`` without ``ai-edge-litert`` installed.
        DataError: An input does not exist or cannot be read as a list.
        ModelError: The model cannot be loaded or does not output probabilities; with
            ``runtime="litert"``, it cannot be converted or its conversion does not agree with Keras.
        RunError: The output exists (without ``resume``/``overwrite``), is one of the files read,
            or another run is writing it; the checkpoint belongs to another model or input set,
            or a ``.checkpoint`` that ``overwrite`` would delete was not written by predict.
        PredictionInterrupted: Ctrl-C; the checkpoint is saved (exit code 130).
    """
    options = PredictOptions.build(options, **kwargs)
    if options.runtime == "litert":
        require_litert()  # before TensorFlow loads: a missing extra fails in a second
    specs = resolve_inputs(inputs if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    output_path = options.output
    if output_path is not None and output_path.is_dir():
        raise RunError(f"output must be a file, not a folder. Received: output='{output_path}'")
    # Before the output or its checkpoint is looked at: a second run on the same output waits for nothing.
    with output_lock(output_path):
        _check_existing(output_path, options.resume, options.overwrite)
        if options.detections is not None:  # crops of the detector's boxes, not whole frames
            return predict_crops(model, specs, options, progress=progress)
        # A listing pass, before the model loads: a bad list file fails at once, and progress has an ETA.
        total = count_refusing_output(output_path, specs, iter_work(specs, options.recursive))
        classifier = model if isinstance(model, LoadedClassifier) else load_classifier(model)
        warn_if_crop_model(classifier)
        return _label(classifier, specs, options, total, progress)


def _label(classifier: LoadedClassifier, specs: list[InputSpec], options: PredictOptions, total: int,
           progress: ProgressCallback | None) -> pd.DataFrame:
    """The labelling itself, under the output's lock: checkpoint, runner, table, output file."""
    output_path = options.output
    top_k = min(options.top_k, len(classifier.classes))
    checkpoint = None
    done: dict[tuple[str, str], RawRow] = {}
    resuming = False
    if output_path is not None:
        checkpoint = Checkpoint(checkpoint_path(output_path), _fingerprint(classifier, specs, options))
        resuming = options.resume and checkpoint.exists()
        if resuming:
            done = checkpoint.load()
            log.info("resuming from %s: %d files already done", checkpoint.path, len(done))
    # After the checkpoint's fingerprint was compared (a resume with the other runtime is refused
    # before converting), before a new checkpoint exists (a refused conversion leaves none).
    runtime = _runtime(classifier, specs, options)
    if checkpoint is not None and not resuming:
        if options.resume:
            log.info("no checkpoint at %s: starting from the beginning", checkpoint.path)
        checkpoint.start()

    skipped: collections.Counter[str] = collections.Counter()
    if options.engine == "dask":
        from ecoclassify.prediction.dask_runner import DaskRunner

        runner: Runner = DaskRunner(classifier, options, checkpoint=checkpoint, done=done, progress=progress,
                                    runtime=runtime)
    else:
        runner = Runner(classifier, options, checkpoint=checkpoint, done=done, progress=progress, runtime=runtime)
    runner.total = total
    try:
        try:
            runner.run(iter_work(specs, options.recursive, on_skip=lambda path, reason: skipped.update([reason])))
        finally:
            runner.flush()  # Ctrl-C or a crash: keep what was done for --resume
        if runner.changed:
            log.warning("%d files had changed since the checkpoint was written (size or modification time): "
                        "they were read again", runner.changed)
        frame = build_frame(runner.rows, classifier.classes, top_k, options.threshold)
        if options.sequence_gap is not None:
            frame = normalise_columns(assign_sequences(frame, classifier.classes, options.sequence_gap,
                                                       options.threshold))
        summary = _summarise(frame, skipped, runner, output_path)
        metadata = _metadata(classifier, specs, options, top_k, frame, summary, checkpoint)
        frame.attrs["summary"] = summary
        frame.attrs["metadata"] = metadata
        if output_path is not None:
            try:
                write_output(frame, output_path, options.fmt, metadata)
            except OSError as exc:
                raise RunError(f"cannot write {output_path}: {exc.strerror or exc}. Every result is kept in the "
                               f"checkpoint {checkpoint.path}: fix that and run again with --resume.") from None
            checkpoint.remove()
    except KeyboardInterrupt:
        raise PredictionInterrupted(_interrupted_message(runner, checkpoint)) from None
    except ModelError:
        # The model is at fault, not the run: no empty checkpoint to trip over once it is fixed.
        if checkpoint is not None and not done and not runner.rows:
            checkpoint.remove()
        raise
    log.debug("prediction summary: %s", summary.as_dict())
    return frame


def _check_existing(output: Path | None, resume: bool, overwrite: bool) -> None:
    """Refuses, before any work, to lose an existing output or checkpoint."""
    if output is None:
        return
    if output.is_dir():
        raise RunError(f"output must be a file, not a folder. Received: output='{output}'")
    checkpoint = checkpoint_path(output)
    if overwrite:
        check_removable(checkpoint)  # only what this tool wrote is ever deleted
        return
    if resume:
        if output.exists() and not checkpoint.exists():
            raise RunError(f"{output} is complete: there is no checkpoint ({checkpoint.name}) to resume. Use "
                           "--overwrite to predict again.")
        return
    if checkpoint.exists():
        raise RunError(f"an interrupted run left a checkpoint at {checkpoint}: add --resume to continue it, or "
                       "--overwrite to start again")
    if output.exists():
        raise RunError(f"{output} exists: use --overwrite to replace it (or --resume to continue an interrupted run)")


def _runtime(classifier: LoadedClassifier, specs: list[InputSpec], options: PredictOptions) -> InferenceRuntime | None:
    """The LiteRT runtime for ``runtime="litert"`` (converted and checked on first use); None runs Keras."""
    if options.runtime != "litert":
        return None
    from ecoclassify.models.litert import CHECK_IMAGES, prepare_litert

    def sample() -> tuple[np.ndarray | None, str]:
        # The agreement check runs on the first readable images to be labelled: real pixels,
        # whose top-1 margins are those the labels will depend on.
        arrays = []
        for scanned, item in enumerate(iter_work(specs, options.recursive)):
            if len(arrays) == CHECK_IMAGES or scanned == 8 * CHECK_IMAGES:
                break
            _, array = decode(item, classifier.image_size, options.max_pixels, options.allow_truncated)
            if array is not None:
                arrays.append(array)
        return (np.stack(arrays), "input") if arrays else (None, "")

    return prepare_litert(classifier, options.batch_size, options.threads, sample)


def _fingerprint(classifier: LoadedClassifier, specs: list[InputSpec], options: PredictOptions) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    return {
        "model": str(classifier.path),
        "model_sha256": file_sha256(classifier.path),
        "classes": list(classifier.classes),
        "image_size": list(classifier.image_size),
        "inputs": [[spec.kind, str(spec.path)] for spec in specs],
        # Options that change the rows themselves; top_k, threshold and sequences are derived
        # at the end and may change on resume.
        "recursive": options.recursive,
        "allow_truncated": options.allow_truncated,
        "max_pixels": options.max_pixels,
        # Keras and LiteRT differ in the last digits: one output never mixes the two.
        "runtime": options.runtime,
    }


def build_frame(rows: list[RawRow], classes: list[str], top_k: int, threshold: float | None) -> pd.DataFrame:
    """The output table from raw rows: labels, top-k and probabilities, sorted by root and filepath.

    Probabilities are rounded to 6 decimals first, and everything else is derived from the
    rounded values, so the file says exactly what decided each label.
    """
    rows = sorted(rows, key=lambda row: (row.root, row.filepath))
    n, k = len(rows), min(top_k, len(classes))
    probs = np.full((n, len(classes)), np.nan)
    for i, row in enumerate(rows):
        if row.probs is not None:
            probs[i] = row.probs
    probs = np.round(probs, 6)
    ok = np.array([row.status == "ok" for row in rows], dtype=bool)
    order = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(probs, order, axis=1) if n else np.empty((0, k))
    names = np.array(classes, dtype=object)
    top_names = np.where(ok[:, None], names[order] if n else np.empty((0, k), object), None)

    label = top_names[:, 0].copy() if k else np.full(n, None, dtype=object)
    if threshold is not None:
        label = np.where(ok & (top_scores[:, 0] < threshold), UNKNOWN, label)
    columns: dict[str, Any] = {
        "filepath": [row.filepath for row in rows],
        "root": [row.root for row in rows],
        "status": [row.status for row in rows],
        "error": [row.error for row in rows],
        "detail": [row.detail for row in rows],
        "label": label,
        "score": top_scores[:, 0],
    }
    for j in range(k):
        columns[f"top{j + 1}_label"] = top_names[:, j]
        columns[f"top{j + 1}_score"] = top_scores[:, j]
    for c, name in enumerate(classes):
        columns[f"prob_{name}"] = probs[:, c]
    columns["datetime"] = [row.datetime for row in rows]
    columns["width"] = [row.width for row in rows]
    columns["height"] = [row.height for row in rows]
    return normalise_columns(pd.DataFrame(columns))


def _summarise(frame: pd.DataFrame, skipped: collections.Counter, runner: Runner,
               output: Path | None) -> PredictionSummary:
    failed = frame[frame["status"] != "ok"]
    return PredictionSummary(
        total=len(frame),
        ok=int((frame["status"] == "ok").sum()),
        failed=len(failed),
        failed_by_reason=dict(sorted(failed["error"].value_counts().items())),
        skipped=sum(skipped.values()),
        skipped_by_reason=dict(sorted(skipped.items())),
        labels={str(k): int(v) for k, v in sorted(frame["label"].dropna().value_counts().items())},
        sequences=int(frame["sequence_id"].nunique()) if "sequence_id" in frame.columns else None,
        processed=runner.processed,
        reused=runner.reused,
        changed=runner.changed,
        seconds=round(runner.seconds, 3),
        output=str(output) if output is not None else None,
    )


def _metadata(classifier: LoadedClassifier, specs: list[InputSpec], options: PredictOptions, top_k: int,
              frame: pd.DataFrame, summary: PredictionSummary, checkpoint: Checkpoint | None) -> dict[str, Any]:
    from ecoclassify import __version__

    metadata = {
        "ecoclassify": __version__,
        "created": now_iso(),
        "model": str(classifier.path),
        "classes": list(classifier.classes),
        "image_size": list(classifier.image_size),
        "inputs": [str(spec.path) for spec in specs],
        "roots": sorted(frame["root"].unique().tolist()),
        # What decided the rows, as the json formats have always recorded it.
        "options": {"batch_size": options.batch_size, "top_k": top_k, "threshold": options.threshold,
                    "recursive": options.recursive, "sequence_gap": options.sequence_gap,
                    "allow_truncated": options.allow_truncated, "max_pixels": options.max_pixels,
                    "runtime": options.runtime,
                    "md_categories": resolve_md_categories(classifier.classes, options.md_categories)},
        "columns": list(frame.columns),
        "summary": summary.as_dict(),
    }
    if checkpoint is not None:
        metadata["model_sha256"] = checkpoint.fingerprint["model_sha256"]
    return metadata


def _interrupted_message(runner: Runner, checkpoint: Checkpoint | None) -> str:
    done = len(runner.rows)
    if checkpoint is None:
        return f"Interrupted after {done} of {runner.total} images; nothing was saved (no output file was given)."
    return (f"Interrupted after {done} of {runner.total} images; they are saved in the checkpoint {checkpoint.path}. "
            "To resume, run the same command again with --resume.")
