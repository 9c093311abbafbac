"""``ecoclassify evaluate RUN_DIR|MODEL --data …``: a thin wrapper of :func:`ecoclassify.evaluation.evaluate`.

Kept out of ``cli.py`` so the command can be added with one line
(``main.add_command(evaluate_command)``); errors are mapped to messages and exit codes by
the ``ecoclassify`` group like every other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from ecoclassify.cli.progress import ProgressBar
from ecoclassify.files import HTML_FILE


@click.command("evaluate")
@click.argument("model", metavar="RUN_DIR|MODEL", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Labelled images: a folder with one subfolder per class, a CSV (filepath,label[,site,...]) "
                   "or a COCO Camera Traps JSON file.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Base folder of relative paths in the CSV/JSON file (default: the file's folder).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="New folder for the report (default: RUN_DIR/evaluations/<data>-<time>/).")
@click.option("--overwrite", is_flag=True, help="Allow --output to be an existing, non-empty folder.")
@click.option("--unknown-labels", type=click.Choice(["error", "other"]), default="error", show_default=True,
              help="Labels the model does not know: stop with a list of them, or count them as 'other'.")
@click.option("--exclude-label", "exclude_labels", multiple=True, metavar="LABEL",
              help="Leave out images with this label (repeatable), e.g. --exclude-label empty.")
@click.option("--group-by", metavar="COLUMN", help="Column of the CSV for per-group metrics (default: site or "
              "camera when present).")
@click.option("--target-precision", "target_precisions", multiple=True, type=click.FloatRange(0, 1, min_open=True),
              metavar="P", help="Target precision for auto-labelling thresholds (repeatable; default: the run's "
              "report.target_precisions).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Images per prediction batch.")
@click.option("--detections", type=click.Path(exists=True, path_type=Path),
              help="A detector's output for the images (MegaDetector JSON...; paths relative to the data's root): "
                   "score a crop model per image, per crop and per site.")
@click.option("--compare-with", type=click.Path(exists=True, path_type=Path), metavar="RUN_DIR|MODEL",
              help="With --detections: a whole-frame model to compare per site on the same images.")
def evaluate_command(model: Path, data: Path, root: Optional[Path], output: Optional[Path], overwrite: bool,
                     unknown_labels: str, exclude_labels: tuple[str, ...], group_by: Optional[str],
                     target_precisions: tuple[float, ...], batch_size: int, detections: Optional[Path],
                     compare_with: Optional[Path]) -> None:
    """Evaluate a trained model on a labelled set and write a report into a new folder.

    RUN_DIR|MODEL is a run folder or a .keras file with its labels.json beside it. The report
    (report.html, report.md, metrics.json, per-class and threshold tables, predictions,
    plots) is the one training writes for the test split, here for the images of --data.
    Unreadable images are listed in excluded.csv and left out.
    """
    from ecoclassify.evaluation import evaluate

    # TensorFlow loads with the model, after evaluate has checked the model, data and output paths.
    with ProgressBar("checking images") as progress, ProgressBar("labelling images") as labelling:
        result = evaluate(model, data, output, unknown_labels=unknown_labels, overwrite=overwrite, root=root,  # type: ignore[arg-type]
                          exclude_labels=exclude_labels, group_by=group_by,
                          target_precisions=list(target_precisions) or None, batch_size=batch_size,
                          progress=progress, predict_progress=labelling, detections=detections,
                          compare_with=compare_with)
    if detections is not None:
        click.echo(crop_summary_text(result.metrics, result.output_dir))
        return
    click.echo(summary_text(result.metrics, result.output_dir))


def crop_summary_text(metrics: dict[str, Any], output_dir: Path) -> str:
    """The few lines printed after ``evaluate --detections``."""
    lines = [f"tables: {output_dir}"]
    for level in ("image_level", "crop_level"):
        scores = metrics[level]
        if scores["n"]:
            lines.append(f"{level.replace('_', ' ')}: {scores['n']} {'images' if level == 'image_level' else 'crops'}, "
                         f"accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}")
    left_out = metrics["images_listed"] - metrics["images_evaluated"]
    if left_out:
        lines.append(f"{left_out} image(s) without a detector result or unreadable (see excluded.csv)")
    return "\n".join(lines)


def summary_text(metrics: dict[str, Any], output_dir: Path) -> str:
    """The few lines printed after an evaluation."""
    from ecoclassify.report.thresholds import threshold_summary_lines  # late: keeps numpy out of the CLI's start-up

    test = metrics["test"]
    mean_ap = f"{test['mAP']:.3f}" if test["mAP"] is not None else "n/a"
    lines = [f"report: {output_dir / HTML_FILE}",
             f"{test['n_images']} images: accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
             f"mAP {mean_ap}"]
    unreadable = metrics.get("unreadable", {}).get("n_images", 0)
    if unreadable:
        lines.append(f"{unreadable} unreadable image(s) left out (see excluded.csv)")
    lines += threshold_summary_lines(test["thresholds"])
    return "\n".join(lines)
