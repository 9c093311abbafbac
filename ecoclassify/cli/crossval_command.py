"""``ecoclassify crossval CONFIG --group-by COLUMN | --folds K``: wraps :func:`ecoclassify.crossvalidation.crossval`.

The folds are planned and the data checked before TensorFlow loads, so a wrong column or
option fails in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ecoclassify._tf import quiet_tensorflow


@click.command("crossval")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a config key, e.g. --set training.epochs=5 (repeatable; YAML values).")
@click.option("--group-by", metavar="COLUMN",
              help="Leave one group out: one fold per value of this column (source, site, camera...).")
@click.option("--folds", type=int, metavar="K", help="Stratified K-fold instead of --group-by.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="New crossval folder (default: output_dir/<name>-crossval-<time>/).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="CROSSVAL_DIR",
              help="Continue an interrupted crossval at its first unfinished fold.")
def crossval_command(config: Optional[Path], overrides: tuple[str, ...], group_by: Optional[str],
                     folds: Optional[int], output: Optional[Path], resume: Optional[Path]) -> None:
    """Cross-validate CONFIG's recipe: one model per fold, out-of-fold predictions pooled in one report.

    --group-by source trains one model per source without it and predicts that source: the
    figure to expect at a new site. With --resume CROSSVAL_DIR, CONFIG may be left out.
    """
    from ecoclassify.config import load_config
    from ecoclassify.crossvalidation import crossval, plan_crossval

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file, or --resume CROSSVAL_DIR")
    if overrides and config is None:
        raise click.UsageError("--set changes a CONFIG; a resumed crossval keeps the config it started with")
    if output is not None and resume is not None:
        raise click.UsageError("--output names a new crossval folder; --resume continues an existing one")
    cfg = load_config(config, overrides) if config is not None else None
    if resume is None:  # options and data are checked, and the folds planned, before TensorFlow loads
        resume, _ = plan_crossval(cfg, group_by=group_by, folds=folds, output=output)
    quiet_tensorflow()
    result = crossval(cfg, group_by=group_by, folds=folds, resume=resume)
    pooled = result["pooled"]
    click.echo(f"crossval folder: {result['crossval_dir']}")
    click.echo(f"pooled over {result['n_images_covered']} of {result['n_images']} images: accuracy "
               f"{_number(pooled['accuracy'])}, macro-F1 {_number(pooled['macro_f1'])}")
    for row in result["per_group"]:
        click.echo(f"  {row['group']}: accuracy {_number(row['accuracy'])}, macro-F1 {_number(row['macro_f1'])} "
                   f"({row['n_images']} images)")
    for fold in result["folds"]:
        if fold["status"] == "skipped":
            click.echo(f"  {fold['fold']} not trained: {fold['reason']}")


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"
