"""``ecoclassify crossval``: one model per fold, out-of-fold predictions pooled into one report.

Two protocols: leave-one-group-out (``group_by``: one fold per value of a column such as
``source`` or ``site``, each group predicted by a model that never saw it: what to expect at a
new site) and stratified K-fold (``folds``). Each fold is an ordinary training run: the
crossval folder holds, per fold, a CSV of every usable image with a ``split`` column (test =
the held-out part; val carved from the rest) and the fold's config is the experiment's
config with ``data.source: csv`` pointing at that file and ``data.split.method: predefined``.
So a fold is a normal run folder (``fold-<name>-<timestamp>/``) that ``ecoclassify train``
can resume or rerun from its own ``config.yaml``.

A fold whose training part lacks a class is not trained (its model could not predict that
class): it is listed as ``skipped`` with the reason, and the pooled figures say how many
images they cover.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ecoclassify.config import Config, load_config
from ecoclassify.config.data import SplitConfig
from ecoclassify.data.prepare import prepare_data
from ecoclassify.data.scan import SCAN_COLUMNS
from ecoclassify.data.sources import load_source
from ecoclassify.data.splits import assign_splits
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.files import (
    CONFIG_FILE, EXCLUDED_FILE, HTML_FILE, METRICS_FILE, REPORT_DIR, STATE_FILE, TEST_PREDICTIONS_FILE, read_json,
    write_csv, write_json, write_text,
)
from ecoclassify.run import new_run_dir

log = logging.getLogger(__name__)

CROSSVAL_FILE = "crossval.json"
FOLDS_FILE = "folds.csv"
FOLD_DATA_DIR = "fold-data"
_STAMP = r"-\d{8}-\d{6}(-\d+)?"


class CrossvalInterrupted(RunError):
    """Cross-validation stopped by Ctrl-C; the crossval folder can be resumed."""

    exit_code = 130


def crossval(
    config: Union[Config, str, Path, None] = None,
    *,
    group_by: Optional[str] = None,
    folds: Optional[int] = None,
    output: Optional[Path] = None,
    resume: Optional[Path] = None,
    callbacks: Sequence[Any] = (),
    verbose: Union[int, str, None] = None,
) -> dict[str, Any]:
    """Cross-validate the config's recipe and write one pooled report.

    Args:
        config: A :class:`Config` or a YAML path. With ``resume`` it may be omitted, or must
            equal the crossval's config.
        group_by: Leave-one-group-out on this column (``source``, ``site``...): one fold per value.
        folds: Stratified K-fold with this many folds (instead of ``group_by``).
        output: The crossval folder to create; default ``output_dir/<name>-crossval-<timestamp>``.
        resume: An interrupted crossval folder; finished folds are kept, an unfinished fold's run
            is resumed from its last epoch.
        callbacks: Extra Keras callbacks for every fold's training.
        verbose: Keras ``fit`` verbosity (see :func:`ecoclassify.train`).

    Returns:
        The contents of ``crossval.json`` (protocol, folds with their metrics, pooled metrics).

    Raises:
        ConfigError: Neither or both of ``group_by`` and ``folds``, fewer than 2 folds, or options
            that differ from the resumed crossval's.
        DataError: The group column is missing, holds one value or empty values; the data is unusable.
        RunError: ``output`` exists, or ``resume`` is not a crossval folder.
        CrossvalInterrupted: Ctrl-C; the message says how to resume.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if resume is not None:
        cv_dir, config, state = _open_for_resume(Path(resume), config, group_by, folds)
    else:
        if config is None:
            raise ConfigError("crossval needs a config (or resume=CROSSVAL_DIR)")
        cv_dir, state = plan_crossval(config, group_by=group_by, folds=folds, output=output)
    from ecoclassify.training.session import TrainingInterrupted  # TensorFlow loads here, after the checks

    for fold in state["folds"]:
        if fold["status"] in ("finished", "skipped"):
            continue
        run_dir = _fold_run_dir(cv_dir, fold["fold"])
        if run_dir is not None and _finished(run_dir):  # stopped after the fold, before crossval.json said so
            fold.update(status="finished", run_dir=run_dir.name,
                        metrics=_fold_metrics(read_json(run_dir / METRICS_FILE).get("test")))
            _save_state(cv_dir, state)
            continue
        try:
            run = _train_fold(config, cv_dir, fold, run_dir, callbacks, verbose)
        except TrainingInterrupted:
            raise CrossvalInterrupted(
                f"cross-validation interrupted in fold {fold['fold']}; finished folds are kept in {cv_dir}. "
                f"Continue with: ecoclassify crossval --resume {cv_dir}") from None
        fold.update(status="finished", run_dir=run.run_dir.name, metrics=_fold_metrics(run.metrics.get("test")))
        _save_state(cv_dir, state)
    return _pool(cv_dir, config, state)


def _train_fold(config: Config, cv_dir: Path, fold: dict[str, Any], run_dir: Optional[Path],
                callbacks: Sequence[Any], verbose: Union[int, str, None]) -> Any:
    """Resume the fold's run folder with ``train --resume`` when it can be, else start the fold afresh."""
    from ecoclassify.training.session import TrainingInterrupted, train

    if run_dir is not None and _resumable(run_dir):
        log.info("fold %s: resuming %s", fold["fold"], run_dir)
        try:
            return train(None, resume=run_dir, callbacks=callbacks, verbose=verbose)
        except TrainingInterrupted:
            raise
        except (RunError, FileNotFoundError) as exc:  # e.g. a file of the run folder is gone
            log.warning("fold %s: %s cannot be resumed (%s); training the fold again", fold["fold"], run_dir, exc)
    if run_dir is not None:  # kept aside, never deleted: a later look may still want it
        run_dir.rename(run_dir.with_name(run_dir.name + ".incomplete"))
    log.info("fold %s: training on %d images, testing on %d", fold["fold"], fold["n_train"], fold["n_test"])
    return train(_fold_config(config, cv_dir, fold["fold"]), callbacks=callbacks, verbose=verbose)


def plan_crossval(config: Config, *, group_by: Optional[str] = None, folds: Optional[int] = None,
                  output: Optional[Path] = None) -> tuple[Path, dict[str, Any]]:
    """Check the options and the data, assign every image to its folds and create the crossval folder.

    Runs without TensorFlow, so bad input fails in seconds.

    Returns:
        ``(crossval folder, state)``; ``state`` is what ``crossval.json`` holds while folds train.
    """
    if (group_by is None) == (folds is None):
        raise ConfigError("crossval needs exactly one of --group-by COLUMN (leave one group out) and --folds K "
                          f"(stratified K-fold). Received: group_by={group_by!r}, folds={folds!r}")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"--folds must be an integer of at least 2. Received: {folds!r}")
    if group_by is not None:
        _check_group_column(load_source(config.data).samples, group_by)  # fast, before decoding images
    if output is not None and Path(output).exists():
        raise RunError(f"the crossval folder {output} already exists; give a new --output (nothing was written)")
    prepared = prepare_data(_scan_config(config, group_by))
    for warning in prepared.warnings:
        log.warning(warning)
    prepared.raise_if_unusable()
    samples = prepared.samples.drop(columns=[c for c in (*SCAN_COLUMNS, "split", "group")
                                             if c in prepared.samples.columns and c != group_by])
    samples = samples.sort_values("filepath", kind="stable").reset_index(drop=True)
    seed = config.experiment.seed
    if group_by is not None:
        samples[group_by] = _group_values(samples, group_by)
        names = sorted(samples[group_by].unique())
        test_of = {_fold_names(names)[g]: samples[group_by] == g for g in names}
        protocol = {"type": "leave-one-group-out", "group_by": group_by}
    else:
        if folds > len(samples):
            raise ConfigError(f"--folds must not exceed the number of images ({len(samples)}). Received: {folds}")
        test_of = _stratified_folds(samples, folds, seed)
        protocol = {"type": "stratified-k-fold", "folds": folds}
    classes = prepared.classes
    fold_frames, fold_rows = {}, []
    for name, is_test in test_of.items():
        frame, row = _make_fold(config, samples, is_test, name, classes, group_by)
        fold_rows.append(row)
        if frame is not None:
            fold_frames[name] = frame
    if not fold_frames:
        raise DataError("no fold can be trained: every fold's training part lacks a class. "
                        + "; ".join(f"{r['fold']}: {r['reason']}" for r in fold_rows))
    if output is not None:
        cv_dir = Path(output)
        cv_dir.mkdir(parents=True)
    else:
        cv_dir = new_run_dir(config.experiment.output_dir, f"{config.experiment.name}-crossval")
    write_text(cv_dir / CONFIG_FILE, config.to_yaml())
    write_csv(cv_dir / EXCLUDED_FILE, prepared.excluded)
    for name, frame in fold_frames.items():
        write_csv(cv_dir / FOLD_DATA_DIR / f"{name}.csv", frame)
    state = {"schema_version": 1, "kind": "crossval", "status": "running",
             "created": datetime.now().isoformat(timespec="seconds"), "protocol": protocol, "seed": seed,
             "classes": classes, "source_root": str(prepared.root), "n_images": int(len(samples)),
             "folds": fold_rows}
    _save_state(cv_dir, state)
    log.info("crossval folder: %s (%d folds, %d to train)", cv_dir, len(fold_rows), len(fold_frames))
    return cv_dir, state


def _scan_config(config: Config, group_by: Optional[str]) -> Config:
    # Only the scan, the class checks and the exclusions matter here; the config's own split and
    # its monitor are replaced per fold, so they must not stop the plan. (A "group" split keeps
    # a data column named "group" as it is.)
    data = config.to_dict()
    data["data"]["split"] = ({"method": "group", "val": 0.0, "test": 0.0, "group_by": group_by} if group_by
                             else {"method": "stratified", "val": 0.0, "test": 0.0})
    data["training"]["monitor"] = "loss"
    data.pop("provenance", None)
    return Config.from_dict(data)


def _check_group_column(samples: pd.DataFrame, column: str) -> None:
    if column == "split":
        raise ConfigError("--group-by cannot be 'split': crossval writes each fold's own split column. Copy the "
                          "values to a column of another name to hold them out. Received: --group-by 'split'")
    if column not in samples.columns:
        listed = ", ".join(c for c in samples.columns if c not in ("filepath", "split")) or "none"
        raise DataError(f"--group-by {column!r} is not a column of the data. Columns found: {listed}")
    values = samples[column].fillna("").astype(str).str.strip()
    empty = int((values == "").sum())
    if empty:
        examples = "; ".join(samples["filepath"][values == ""].astype(str).head(3))
        raise DataError(f"--group-by {column!r}: {empty} image(s) have no {column} value (e.g. {examples}); "
                        f"every image needs one to be held out with its group. Fill them in or exclude them.")
    distinct = sorted(values.unique())
    if len(distinct) < 2:
        raise DataError(f"--group-by {column!r} needs at least 2 groups to hold one out; all "
                        f"{len(samples)} images have {column} {distinct[0]!r}. Received values: {distinct}")


def _group_values(samples: pd.DataFrame, column: str) -> pd.Series:
    _check_group_column(samples, column)  # again: exclusions may have removed whole groups
    return samples[column].fillna("").astype(str).str.strip()


def _fold_names(groups: list[str]) -> dict[str, str]:
    """A run-folder-safe, distinct fold name per group (``fold-<group>``)."""
    names: dict[str, str] = {}
    for group in groups:
        base = "fold-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("._-")[:60] or "group")
        name, n = base, 2
        while name in names.values():
            name, n = f"{base}-{n}", n + 1
        names[group] = name
    return names


def _stratified_folds(samples: pd.DataFrame, k: int, seed: int) -> dict[str, pd.Series]:
    import warnings

    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    result = {}
    with warnings.catch_warnings():  # a class smaller than k: sklearn warns, its folds just lack it
        warnings.simplefilter("ignore", UserWarning)
        for index, (_, test) in enumerate(splitter.split(np.zeros(len(samples)), samples["label"]), start=1):
            mask = pd.Series(False, index=samples.index)
            mask.iloc[test] = True
            result[f"fold-{index}"] = mask
    return result


def _make_fold(config: Config, samples: pd.DataFrame, is_test: pd.Series, name: str, classes: list[str],
               group_by: Optional[str]) -> tuple[Optional[pd.DataFrame], dict[str, Any]]:
    """The fold's CSV (every image with its split) and its row for crossval.json."""
    test, rest = samples[is_test], samples[~is_test]
    row: dict[str, Any] = {"fold": name, "groups": sorted(test[group_by].unique()) if group_by else [],
                           "status": "pending", "reason": None, "n_test": int(len(test)), "run_dir": None,
                           "val_split": None, "n_train": 0, "n_val": 0, "metrics": None}
    lacking = sorted(set(classes) - set(rest["label"]))
    if lacking:
        row.update(status="skipped", reason=f"class(es) with no image outside this fold, so its model could not "
                                            f"learn them: {', '.join(lacking)}")
        return None, row
    val = config.data.split.val
    rest_split, row["val_split"] = _carve_val(rest, val, config.experiment.seed, group_by)
    if config.training.monitor.startswith("val_") and not (rest_split["split"] == "val").any():
        raise DataError(f"fold {name}: training.monitor {config.training.monitor!r} needs a validation split, and "
                        f"data.split.val={val} leaves no validation image in it. Raise data.split.val or monitor "
                        "loss.")
    frame = pd.concat([rest_split[list(samples.columns) + ["split"]], test.assign(split="test")])
    row["n_train"] = int((frame["split"] == "train").sum())
    row["n_val"] = int((frame["split"] == "val").sum())
    return frame.sort_values("filepath", kind="stable").reset_index(drop=True), row


def _carve_val(rest: pd.DataFrame, val: float, seed: int, group_by: Optional[str]) -> tuple[pd.DataFrame, str]:
    # The validation part is grouped like the test part, so the model is also chosen on groups it
    # never trained on; with too few groups for that, it falls back to a stratified share.
    if group_by is not None and val > 0:
        try:
            grouped = assign_splits(rest, SplitConfig(method="group", val=val, test=0.0, group_by=group_by), seed)
            if (grouped.samples["split"] == "val").any():
                return grouped.samples, f"grouped by {group_by}"
        except DataError:  # a class would lose all its training images
            pass
        method = f"stratified (too few {group_by} groups to hold one out for validation)"
    else:
        method = "stratified"
    return assign_splits(rest, SplitConfig(method="stratified", val=val, test=0.0), seed).samples, method


def _fold_config(config: Config, cv_dir: Path, name: str) -> Config:
    data = config.to_dict()
    data.pop("provenance", None)
    data["experiment"].update(name=name, output_dir=str(cv_dir))
    state = read_json(cv_dir / CROSSVAL_FILE)
    data["data"].update(source="csv", labels=str(cv_dir / FOLD_DATA_DIR / f"{name}.csv"),
                        root=state["source_root"], split={"method": "predefined"}, include_labels=None,
                        exclude_labels=[])
    return Config.from_dict(data)


def _fold_run_dir(cv_dir: Path, name: str) -> Optional[Path]:
    pattern = re.compile(re.escape(name) + _STAMP + "$")
    found = sorted(p for p in cv_dir.iterdir() if p.is_dir() and pattern.match(p.name))
    return found[-1] if found else None


def _resumable(run_dir: Path) -> bool:
    return (run_dir / CONFIG_FILE).is_file() and (run_dir / STATE_FILE).is_file()


def _finished(run_dir: Path) -> bool:
    return (run_dir / STATE_FILE).is_file() and bool(read_json(run_dir / STATE_FILE).get("finished")) and (
        run_dir / METRICS_FILE).is_file()


def _fold_metrics(test: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if not test:
        return None
    return {key: test.get(key) for key in ("n_images", "accuracy", "balanced_accuracy", "macro_f1", "mAP")}


def _save_state(cv_dir: Path, state: dict[str, Any]) -> None:
    write_json(cv_dir / CROSSVAL_FILE, state)
    columns = ["fold", "groups", "status", "reason", "n_train", "n_val", "n_test", "val_split", "run_dir"]
    rows = []
    for fold in state["folds"]:
        row = {key: fold.get(key) for key in columns}
        row["groups"] = ";".join(fold.get("groups") or [])
        row.update({key: (fold.get("metrics") or {}).get(key) for key in ("accuracy", "macro_f1", "mAP")})
        rows.append(row)
    write_csv(cv_dir / FOLDS_FILE, pd.DataFrame(rows))


def _open_for_resume(cv_dir: Path, config: Optional[Config], group_by: Optional[str],
                     folds: Optional[int]) -> tuple[Path, Config, dict[str, Any]]:
    if not (cv_dir / CROSSVAL_FILE).is_file() or not (cv_dir / CONFIG_FILE).is_file():
        raise RunError(f"{cv_dir} is not a crossval folder (it needs {CROSSVAL_FILE} and {CONFIG_FILE})")
    saved = load_config(cv_dir / CONFIG_FILE)
    if config is not None and config.comparable() != saved.comparable():
        raise RunError(f"the config differs from the one {cv_dir} started with, so it cannot be resumed; "
                       "leave CONFIG out to resume with the saved one, or start a new crossval")
    state = read_json(cv_dir / CROSSVAL_FILE)
    if state.get("status") == "finished":
        raise RunError(f"{cv_dir} already finished; its report is {cv_dir / REPORT_DIR / HTML_FILE}")
    protocol = state["protocol"]
    if (group_by is not None and group_by != protocol.get("group_by")) or (
            folds is not None and folds != protocol.get("folds")):
        raise ConfigError(f"{cv_dir} was started with {protocol}; resume it without --group-by/--folds or with the "
                          f"same. Received: group_by={group_by!r}, folds={folds!r}")
    return cv_dir, saved, state


def _pool(cv_dir: Path, config: Config, state: dict[str, Any]) -> dict[str, Any]:
    """Pool the finished folds' out-of-fold predictions into ``cv_dir/report`` and finish crossval.json."""
    from ecoclassify.report.writer import write_report

    classes = state["classes"]
    column = state["protocol"].get("group_by") or "fold"
    parts = []
    for fold in state["folds"]:
        if fold["status"] != "finished":
            continue
        predictions = pd.read_csv(cv_dir / fold["run_dir"] / REPORT_DIR / TEST_PREDICTIONS_FILE,
                                  dtype={"filepath": str, "true_label": str})
        missing = [f"p_{c}" for c in classes if f"p_{c}" not in predictions.columns]
        if missing:
            raise RunError(f"fold {fold['fold']}'s predictions lack the columns {', '.join(missing)}")
        table = pd.read_csv(cv_dir / FOLD_DATA_DIR / f"{fold['fold']}.csv", dtype=str, keep_default_na=False)
        test = table[table["split"] == "test"].assign(fold=fold["fold"])
        merged = test.merge(predictions[["filepath"] + [f"p_{c}" for c in classes]], on="filepath", how="inner")
        parts.append(merged)
    pooled = pd.concat(parts, ignore_index=True).sort_values("filepath", kind="stable").reset_index(drop=True)
    proba = pooled[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    y_true = pooled["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    skipped = [f for f in state["folds"] if f["status"] == "skipped"]
    n_skipped = sum(f["n_test"] for f in skipped)
    notes = [f"Out-of-fold predictions pooled over {len(state['folds']) - len(skipped)} folds "
             f"({_describe(state['protocol'])}): every image is predicted by a model that never saw it."]
    for fold in skipped:
        notes.append(f"{fold['fold']} was not trained ({fold['reason']}); its {fold['n_test']} image(s) are not in "
                     "these figures.")
    if skipped:
        notes.append(f"These figures cover {len(pooled)} of {state['n_images']} images.")
    excluded = pd.read_csv(cv_dir / EXCLUDED_FILE, dtype=str, keep_default_na=False)
    facts = {"classes": classes, "protocol": state["protocol"],
             "split_counts": {"test": int(len(pooled))}}
    report = write_report(cv_dir / REPORT_DIR, y_true, proba, classes, pooled, config=config, facts=facts,
                          excluded=excluded, group_columns=[column], kind="crossval", notes=notes,
                          title=f"{config.experiment.name}: cross-validation, {_describe(state['protocol'])}")
    test = report.metrics["test"]
    state.update(
        status="finished", finished=datetime.now().isoformat(timespec="seconds"),
        n_images_covered=int(len(pooled)), n_images_not_covered=int(state["n_images"] - len(pooled)),
        n_images_in_skipped_folds=int(n_skipped), folds_skipped=[f["fold"] for f in skipped],
        pooled=report.summary, per_group=test["groups"].get(column, []),
        per_class=[{k: row[k] for k in ("class", "support", "precision", "recall", "f1")} for row in test["per_class"]],
        confusion_matrix=test["confusion_matrix"], report=f"{REPORT_DIR}/{HTML_FILE}",
        report_metrics=f"{REPORT_DIR}/{METRICS_FILE}")
    _save_state(cv_dir, state)
    state["crossval_dir"] = str(cv_dir)
    return state


def _describe(protocol: dict[str, Any]) -> str:
    if protocol["type"] == "leave-one-group-out":
        return f"leave one {protocol['group_by']} out"
    return f"stratified {protocol['folds']}-fold"
