"""``ecoclassify predict``: label camera-trap folders in batches, robustly and resumably.

Flow: inputs -> streamed work items (:mod:`ecoclassify.predict_inputs`) -> chunks of
``batch_size`` files, decoded by a thread pool a few chunks ahead of the model
(:mod:`ecoclassify.predict_runner`) -> one row per file -> every ``checkpoint_every`` images
a checkpoint part (:mod:`ecoclassify.predict_checkpoint`) -> labels, top-k and sequences
from the probabilities -> the output file, written atomically (:mod:`ecoclassify.predict_io`).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecoclassify.data.images import DEFAULT_MAX_PIXELS
from ecoclassify.errors import ConfigError, ModelError, RunError
from ecoclassify.models.io import LoadedClassifier, load_classifier
from ecoclassify.predict_checkpoint import Checkpoint, RawRow, check_removable, checkpoint_path, file_sha256
from ecoclassify.predict_inputs import InputSpec, count_refusing_output, iter_work, resolve_inputs
from ecoclassify.predict_io import FORMATS, normalise_columns, now_iso, write_output
from ecoclassify.predict_lock import output_lock
from ecoclassify.predict_runner import Runner
from ecoclassify.sequences import UNKNOWN, assign_sequences

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


#: Where the labelling runs: threads in this process, or chunks on Dask workers.
ENGINES = ("local", "dask")

class PredictionInterrupted(RunError):
    """Prediction stopped by Ctrl-C; the checkpoint holds the work done so far."""

    exit_code = 130


@dataclass
class PredictionSummary:
    """What happened, for the final report (``frame.attrs["summary"]``).

    Attributes:
        total: Rows in the output: image files found, read or not.
        ok: Files classified.
        failed: Files that could not be read; ``failed_by_reason`` counts them per reason.
        skipped: Entries passed over (hidden, not images, unsafe links, duplicates);
            ``skipped_by_reason`` counts them per reason.
        labels: Files per label, ``unknown`` included.
        sequences: Number of sequences, when sequences were formed.
        processed: Files decoded by this call; ``reused`` came from the checkpoint.
        changed: Files the checkpoint held that were read again because their size or
            modification time changed since (a card swapped for photos with the same names).
        seconds: Wall time of the decoding and classification.
        output: The file written, if any.
    """

    total: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    sequences: int | None = None
    processed: int = 0
    reused: int = 0
    changed: int = 0
    seconds: float = 0.0
    output: str | None = None

    @property
    def images_per_second(self) -> float:
        """Files decoded and classified per second by this call."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, ``images_per_second`` included."""
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}


def predict(
    model: str | os.PathLike | LoadedClassifier,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    output: str | os.PathLike | None = None,
    batch_size: int = 32,
    top_k: int = 3,
    threshold: float | None = None,
    recursive: bool = True,
    fmt: str = "csv",
    checkpoint_every: int = 1000,
    resume: bool = False,
    overwrite: bool = False,
    sequence_gap: float | None = None,
    allow_truncated: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    dask_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Classify every image under ``inputs`` and return (and optionally write) one row per file.

    Args:
        model: A run folder, a ``.keras`` file with ``labels.json`` beside it, or a loaded
            :class:`~ecoclassify.models.io.LoadedClassifier`.
        inputs: Folders, image files and text files listing image paths (one per line,
            relative to the list file's folder), or one of them.
        output: File to write; None writes nothing (and keeps no checkpoint).
        batch_size: Images per model call.
        top_k: Number of ``topN_label``/``topN_score`` column pairs (at most the class count).
        threshold: A top-1 probability below it gives the label ``unknown``.
        recursive: Search folders below their top level.
        fmt: ``csv``, ``json`` or ``md-json`` (MegaDetector batch output format).
        checkpoint_every: Save a checkpoint part after this many more images.
        resume: Continue from the checkpoint of an interrupted run with the same model and
            inputs; only files not yet classified are read (failed ones are retried, and so
            are files whose size or modification time changed since).
        overwrite: Replace an existing output (and discard a checkpoint).
        sequence_gap: Seconds; group images into sequences (see :mod:`ecoclassify.sequences`).
        allow_truncated: Classify the readable part of truncated files instead of failing them.
        max_pixels: Images whose header claims more pixels fail as ``too_large``.
        threads: Decoding threads (per Dask worker with the Dask engine); defaults to the
            number of CPUs.
        engine: ``local`` (threads in this process) or ``dask`` (chunks labelled on Dask
            workers, same output; needs ``pip install 'ecoclassify[dask]'``).
        scheduler: With ``engine="dask"``, the address of a running Dask scheduler (e.g.
            started by ``dask-jobqueue`` on SLURM); None starts a ``LocalCluster``.
        dask_workers: Worker processes of that ``LocalCluster``.
        progress: Called as ``progress(advance, total)`` as files are done.

    Returns:
        Rows sorted by ``root`` then ``filepath``: ``filepath``, ``root``, ``status``, ``error``,
        ``detail``, ``label``, ``score``, ``top1_label``, ``top1_score``, ...,
        ``prob_<class>`` per class, ``datetime``, ``width``, ``height`` and, with
        ``sequence_gap``, ``sequence_id``, ``sequence_label``, ``sequence_score``.
        ``frame.attrs["summary"]`` is a :class:`PredictionSummary`, ``frame.attrs["metadata"]``
        what the json formats record.

    Raises:
        ConfigError: An option is invalid.
        DataError: An input does not exist or cannot be read as a list.
        ModelError: The model cannot be loaded or does not output probabilities.
        RunError: The output exists (without ``resume``/``overwrite``), is one of the files read,
            or another run is writing it; the checkpoint belongs to another model or input set,
            or a ``.checkpoint`` that ``overwrite`` would delete was not written by predict.
        PredictionInterrupted: Ctrl-C; the checkpoint is saved (exit code 130).
    """
    _check_options(batch_size, top_k, threshold, fmt, checkpoint_every, sequence_gap, max_pixels, threads)
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of: {', '.join(ENGINES)}. Received: {engine!r}")
    if engine != "dask" and (scheduler is not None or dask_workers is not None):
        raise ConfigError("scheduler and dask_workers apply to engine 'dask' only. "
                          f"Received: engine={engine!r}")
    specs = resolve_inputs(inputs if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    output_path = Path(output) if output is not None else None
    if output_path is not None and output_path.is_dir():
        raise RunError(f"output must be a file, not a folder. Received: output='{output_path}'")
    # Before the output or its checkpoint is looked at: a second run on the same output waits for nothing.
    with output_lock(output_path):
        _check_existing(output_path, resume, overwrite)
        # A listing pass, before the model loads: a bad list file fails at once, and progress has an ETA.
        total = count_refusing_output(output_path, specs, iter_work(specs, recursive))
        classifier = model if isinstance(model, LoadedClassifier) else load_classifier(model)
        options = {"batch_size": batch_size, "top_k": min(top_k, len(classifier.classes)), "threshold": threshold,
                   "recursive": recursive, "sequence_gap": sequence_gap, "allow_truncated": allow_truncated,
                   "max_pixels": max_pixels}

        checkpoint = None
        done: dict[tuple[str, str], RawRow] = {}
        if output_path is not None:
            checkpoint = Checkpoint(checkpoint_path(output_path), _fingerprint(classifier, specs, options))
            if resume and checkpoint.exists():
                done = checkpoint.load()
                log.info("resuming from %s: %d files already done", checkpoint.path, len(done))
            else:
                if resume:
                    log.info("no checkpoint at %s: starting from the beginning", checkpoint.path)
                checkpoint.start()

        skipped: collections.Counter[str] = collections.Counter()
        runner_class: Any = Runner
        engine_options: dict[str, Any] = {}
        if engine == "dask":
            from ecoclassify.predict_dask import DaskRunner

            runner_class, engine_options = DaskRunner, {"scheduler": scheduler, "n_workers": dask_workers}
        runner = runner_class(classifier, **engine_options, batch_size=batch_size,
                              workers=threads or os.cpu_count() or 1, allow_truncated=allow_truncated,
                              max_pixels=max_pixels, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                              done=done, progress=progress)
        runner.total = total
        try:
            try:
                runner.run(iter_work(specs, recursive, on_skip=lambda path, reason: skipped.update([reason])))
            finally:
                runner.flush()  # Ctrl-C or a crash: keep what was done for --resume
            if runner.changed:
                log.warning("%d files had changed since the checkpoint was written (size or modification time): "
                            "they were read again", runner.changed)
            frame = build_frame(runner.rows, classifier.classes, options["top_k"], threshold)
            if sequence_gap is not None:
                frame = normalise_columns(assign_sequences(frame, classifier.classes, sequence_gap, threshold))
            summary = _summarise(frame, skipped, runner, output_path)
            metadata = _metadata(classifier, specs, options, frame, summary, checkpoint)
            frame.attrs["summary"] = summary
            frame.attrs["metadata"] = metadata
            if output_path is not None:
                try:
                    write_output(frame, output_path, fmt, metadata)
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


def _check_options(batch_size: Any, top_k: Any, threshold: Any, fmt: Any, checkpoint_every: Any,
                   sequence_gap: Any, max_pixels: Any, threads: Any) -> None:
    def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer. Received: {name}={value!r}")

    positive_int("batch_size", batch_size)
    positive_int("top_k", top_k)
    positive_int("checkpoint_every", checkpoint_every)
    positive_int("max_pixels", max_pixels, allow_none=True)
    positive_int("threads", threads, allow_none=True)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 1):
        raise ConfigError(f"threshold must be a probability between 0 and 1. Received: threshold={threshold!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"fmt must be one of: {', '.join(FORMATS)}. Received: fmt={fmt!r}")
    if sequence_gap is not None and (isinstance(sequence_gap, bool) or not isinstance(sequence_gap, (int, float))
                                     or not sequence_gap > 0):
        raise ConfigError(f"sequence_gap must be a positive number of seconds. Received: sequence_gap={sequence_gap!r}")


def _check_existing(output: Path | None, resume: bool, overwrite: bool) -> None:
    """Refuses, before any work, to lose an existing output or checkpoint."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume keeps the checkpoint, overwrite discards "
                          "it. Received: resume=True, overwrite=True")
    if output is None:
        if resume:
            raise ConfigError("resume needs the output file whose checkpoint to continue. Received: output=None")
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


def _fingerprint(classifier: LoadedClassifier, specs: list[InputSpec], options: dict[str, Any]) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption."""
    return {
        "model": str(classifier.path),
        "model_sha256": file_sha256(classifier.path),
        "classes": list(classifier.classes),
        "image_size": list(classifier.image_size),
        "inputs": [[spec.kind, str(spec.path)] for spec in specs],
        # Options that change the rows themselves; top_k, threshold and sequences are derived
        # at the end and may change on resume.
        "recursive": options["recursive"],
        "allow_truncated": options["allow_truncated"],
        "max_pixels": options["max_pixels"],
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


def _metadata(classifier: LoadedClassifier, specs: list[InputSpec], options: dict[str, Any], frame: pd.DataFrame,
              summary: PredictionSummary, checkpoint: Checkpoint | None) -> dict[str, Any]:
    from ecoclassify import __version__

    metadata = {
        "ecoclassify": __version__,
        "created": now_iso(),
        "model": str(classifier.path),
        "classes": list(classifier.classes),
        "image_size": list(classifier.image_size),
        "inputs": [str(spec.path) for spec in specs],
        "roots": sorted(frame["root"].unique().tolist()),
        "options": options,
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


def format_summary(summary: PredictionSummary) -> str:
    """A few lines for the terminal."""

    def counts(mapping: dict[str, int]) -> str:
        return ", ".join(f"{key} {value}" for key, value in mapping.items())

    line = f"{summary.total} images: {summary.ok} ok, {summary.failed} failed"
    if summary.failed:
        line += f" ({counts(summary.failed_by_reason)})"
    line += f"; {summary.skipped} other files skipped"
    if summary.skipped:
        line += f" ({counts(summary.skipped_by_reason)})"
    lines = [line]
    if summary.labels:
        lines.append(f"labels: {counts(summary.labels)}")
    if summary.sequences is not None:
        lines.append(f"sequences: {summary.sequences}")
    speed = f"{summary.images_per_second:.1f} images/s ({summary.processed} read in {summary.seconds:.1f} s"
    speed += f", {summary.reused} from the checkpoint)" if summary.reused else ")"
    lines.append(speed)
    if summary.changed:
        lines.append(f"{summary.changed} files had changed since the checkpoint (size or modification time) "
                     "and were read again")
    if summary.output:
        lines.append(f"wrote {summary.output}")
    return "\n".join(lines)
