"""``ecoclassify train``: transfer learning and fine-tuning in stages, the keras-io way.

Flow: config -> prepared data (scan, split) -> run folder -> tf.data pipelines -> model
(backbone + head + in-model preprocessing) -> one compile + fit per stage (freezing policy
applied and the model recompiled at every stage change, epochs numbered across stages) ->
best model evaluated on the test split -> ``metrics.json``.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd

from ecoclassify.config import Config, load_config
from ecoclassify.data.crops import crops_record
from ecoclassify.data.prepare import prepare_data
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.training.stages import fit_stages
from ecoclassify.files import (
    BACKUP_DIR, CONFIG_FILE, EXCLUDED_FILE, HISTORY_FILE, HTML_FILE, LABELS_FILE, METRICS_FILE, MODEL_FILE,
    REPORT_DIR, SPLITS_FILE, STATE_FILE, read_json, write_csv, write_json, write_text,
)
from ecoclassify.run import DiskSpaceError, Run, check_output_dir, is_disk_full, new_run_dir, provenance

log = logging.getLogger(__name__)


class TrainingInterrupted(RunError):
    """Training stopped by Ctrl-C; the run folder can be resumed."""

    exit_code = 130


def train(
    config: Union[Config, str, Path, None] = None,
    *,
    resume: Optional[Path] = None,
    callbacks: Sequence[Any] = (),
    verbose: Union[int, str, None] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Run:
    """Train the model described by ``config`` and write a new run folder.

    Args:
        config: A :class:`Config` or the path of a YAML config. With ``resume`` it may be
            omitted (the run's own ``config.yaml`` is used) or must equal the run's config.
        resume: An interrupted run folder to continue from its last finished epoch.
        callbacks: Extra Keras callbacks added to every stage's ``fit``.
        verbose: Keras ``fit`` verbosity; by default a progress bar on a terminal and one line
            per epoch otherwise (log files, SLURM jobs).
        progress: Called as ``progress(advance, total)`` while the images are checked.

    Returns:
        The finished :class:`Run` (folder, classes, test metrics, history).

    Raises:
        ConfigError: The config is invalid or asks for a metric that will not be logged.
        DataError: The data cannot be used (see ``ecoclassify validate``), or an image became
            unreadable after the scan (the message names it and says how to resume).
        RunError: ``resume`` names no resumable run, the config changed since, its backups are
            all damaged, or the disk is (nearly) full; the message says how to continue.
        TrainingInterrupted: Ctrl-C; the message says how to resume.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if resume is not None:
        run_dir, config, samples, classes, state = _open_for_resume(Path(resume), config)
    else:
        if config is None:
            raise ConfigError("train needs a config (or resume=RUN_DIR)")
        check_output_dir(config.experiment.output_dir)  # before the scan, which can take minutes
        run_dir, samples, classes = _start_run(config, progress)
        state = {"completed_stages": 0, "next_epoch": 0, "finished": False}
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        model, frames, epochs, best, holds_best = fit_stages(config, run_dir, samples, classes, state,
                                                             list(callbacks), verbose)
        return _finish(config, run_dir, model, frames, classes, epochs, best, holds_best, verbose)
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"training interrupted; the run folder {run_dir} keeps the last finished epoch. "
            f"Continue with: ecoclassify train --resume {run_dir}"
        ) from None
    except DiskSpaceError as exc:
        raise RunError(f"training stopped: {exc}. The run folder {run_dir} keeps the last finished epoch; "
                       f"free some space, then continue with: ecoclassify train --resume {run_dir}") from None
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise RunError(f"training stopped: the disk is full ({exc}). The run folder {run_dir} keeps the last "
                       f"finished epoch; free some space, then continue with: ecoclassify train --resume {run_dir}"
                       ) from None
    except Exception as exc:  # tf.errors.OpError from inside tf.data; anything else is re-raised
        failed = _unreadable_image(exc)
        if failed is None:
            raise
        raise DataError(
            f"training stopped: the image {failed} could not be read, though it was readable when the data was "
            f"scanned (moved, deleted or changed since?). Put it back and continue with: ecoclassify train "
            f"--resume {run_dir}; or start a new run, whose scan will list it (ecoclassify validate CONFIG "
            "shows every unreadable file)") from None


#: How the robust image loader's error reads once tf.data has wrapped it into an OpError message.
_IMAGE_ERROR = re.compile(r"ImageReadError: Cannot read image (.+?) \((not_found|permission_denied|empty|unreadable|"
                          r"truncated|too_large|decode_error)\): ([^\n]*)")


def _unreadable_image(exc: Exception) -> Optional[str]:
    """``path (reason: detail)`` of the image named by an error raised inside a ``tf.data`` map, if any."""
    import tensorflow as tf

    match = _IMAGE_ERROR.search(str(exc)) if isinstance(exc, tf.errors.OpError) else None
    return None if match is None else f"{match.group(1)} ({match.group(2)}: {match.group(3).strip()})"


def _start_run(config: Config, progress: Optional[Callable[[int, int], None]] = None
               ) -> tuple[Path, pd.DataFrame, list[str]]:
    log.info("reading and checking the images (%s source)", config.data.source)
    prepared = prepare_data(config, progress=progress)
    for warning in prepared.warnings:
        log.warning(warning)
    prepared.raise_if_unusable()
    run_dir = new_run_dir(config.experiment.output_dir, config.experiment.name)
    resolved = config.model_copy(update={"provenance": provenance()})
    write_text(run_dir / CONFIG_FILE, resolved.to_yaml())
    write_json(run_dir / LABELS_FILE, {"classes": prepared.classes, "image_size": list(config.data.image_size),
                                       **crops_record(config.data.crops)})
    columns = ["filepath", "label", "group", "split"] + (["box"] if "box" in prepared.samples.columns else [])
    write_csv(run_dir / SPLITS_FILE, prepared.samples[columns])
    write_csv(run_dir / EXCLUDED_FILE, prepared.excluded)
    write_json(run_dir / STATE_FILE, {"completed_stages": 0, "next_epoch": 0, "finished": False})
    log.info("run folder: %s", run_dir)
    return run_dir, prepared.samples, prepared.classes


def _open_for_resume(run_dir: Path, config: Optional[Config]) -> tuple[Path, Config, pd.DataFrame, list[str], dict]:
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / STATE_FILE).is_file():
        raise RunError(f"{run_dir} is not a resumable run folder (it needs {CONFIG_FILE} and {STATE_FILE})")
    saved = load_config(run_dir / CONFIG_FILE)
    if config is not None and config.comparable() != saved.comparable():
        changed = _differences(saved.comparable(), config.comparable())
        raise RunError(f"the config changed since {run_dir} started, so it cannot be resumed: "
                       f"{'; '.join(changed[:8])}. Start a new run instead.")
    state = read_json(run_dir / STATE_FILE)
    if state.get("finished"):
        raise RunError(f"{run_dir} already finished training; nothing to resume")
    samples = pd.read_csv(run_dir / SPLITS_FILE, dtype=str, keep_default_na=False)
    classes = read_json(run_dir / LABELS_FILE)["classes"]
    log.info("resuming %s after stage %d, epoch %d", run_dir, state["completed_stages"], state["next_epoch"])
    return run_dir, saved, samples, classes, state


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            found += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _finish(config: Config, run_dir: Path, model: Any, frames: dict[str, pd.DataFrame], classes: list[str],
            epochs: int, best: Optional[float], holds_best: bool = False, verbose: Union[int, str] = 0) -> Run:
    import keras

    from ecoclassify.data.pipeline import make_dataset
    from ecoclassify.report.writer import write_report

    if holds_best:
        pass  # the model already has model.keras's weights (the best epoch was in this session)
    elif (run_dir / MODEL_FILE).exists():  # the best epoch came before a resume
        log.info("loading the best model from %s", run_dir / MODEL_FILE)
        model = keras.saving.load_model(run_dir / MODEL_FILE, safe_mode=True)
    else:  # the monitor never produced a value (e.g. NaN losses): keep the last weights
        log.info("no epoch improved %s: saving the last model", config.training.monitor)
        model.save(run_dir / MODEL_FILE)
    metrics: dict[str, Any] = {
        "classes": classes,
        "epochs": epochs,
        "monitor": config.training.monitor,
        "best_monitor_value": best,
        "split_counts": {name: int(len(frame)) for name, frame in frames.items()},
    }
    history = pd.read_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).exists() else pd.DataFrame()
    test = frames["test"]
    if len(test):
        log.info("evaluating the best model on the test split (%d images)", len(test))
        dataset = make_dataset(test["filepath"], tuple(config.data.image_size), config.training.batch_size,
                               max_pixels=config.data.max_image_pixels, boxes=test.get("box"),
                               crops=config.data.crops)
        proba = model.predict(dataset, verbose=verbose)  # a bar on a terminal, one line in a log
        y_true = test["label"].map({name: i for i, name in enumerate(classes)}).to_numpy()
        excluded = (pd.read_csv(run_dir / EXCLUDED_FILE, dtype=str, keep_default_na=False)
                    if (run_dir / EXCLUDED_FILE).exists() else None)
        report = write_report(run_dir / REPORT_DIR, y_true, proba, classes, test, history=history, config=config,
                              splits=frames, facts=metrics, excluded=excluded)
        metrics["test"] = report.summary  # flat numbers; the tables are in report/metrics.json
        metrics["report"] = f"{REPORT_DIR}/{HTML_FILE}"
    else:
        metrics["test"] = None
    write_json(run_dir / METRICS_FILE, metrics)
    write_json(run_dir / STATE_FILE, {"completed_stages": len(config.training.stages or []),
                                      "next_epoch": epochs, "finished": True})
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)  # only needed to resume; can be large
    if metrics["test"]:
        t = metrics["test"]
        log.info("test set (%d images): accuracy %.3f, macro-F1 %.3f, mAP %s", t["n_images"], t["accuracy"],
                 t["macro_f1"], f"{t['mAP']:.3f}" if t["mAP"] is not None else "n/a")
    return Run(run_dir, classes, metrics, history)
