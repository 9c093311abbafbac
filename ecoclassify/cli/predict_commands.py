"""The ``ecoclassify predict`` and ``ecoclassify sort`` commands: parse, call the library, report.

Registered on the main group in :mod:`ecoclassify.cli.app`. Errors are ecoclassify exceptions,
which the group turns into one paragraph and an exit code (130 for an interrupted predict).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from ecoclassify.cli.progress import ProgressBar

# Spelled out, not imported, so that `ecoclassify --help` does not load pandas and Pillow;
# tests check they equal ecoclassify.prediction.options.FORMATS, ENGINES and RUNTIMES and
# ecoclassify.prediction.sorting.MODES.
FORMATS = ("csv", "json", "md-json")
MODES = ("copy", "symlink", "move")
ENGINES = ("local", "dask")
RUNTIMES = ("keras", "litert")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """Batch schedulers (SLURM, PBS) stop jobs with SIGTERM: treat it like Ctrl-C, so it checkpoints."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Predictions file to write (atomically).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="Number of top labels and scores per image.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Below this top-1 probability the label is 'unknown'.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Search sub-folders.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format; default: json for a .json OUTPUT, else csv. md-json is MegaDetector's "
                   "batch output format (Timelapse, AddaxAI).")
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Save progress every N images.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT (and discard its checkpoint).")
@click.option("--sequence-gap", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Group images of one folder taken at most SECONDS apart into sequences, labelled together.")
@click.option("--md-category", "md_category", multiple=True, metavar="CLASS=CATEGORY",
              help="md-json: the MegaDetector category of CLASS (animal, person, vehicle or empty: no detection); "
                   "repeatable. Default from the class name: blank/empty/nothing... empty, human/person/people "
                   "person, vehicle/car/truck... vehicle, else animal.")
@click.option("--allow-truncated", is_flag=True, help="Classify the readable part of truncated files.")
@click.option("--max-pixels", type=click.IntRange(min=1),
              help="Larger images fail as too_large (decompression bombs).  [default: 120000000]")
@click.option("--threads", type=click.IntRange(min=1),
              help="Decoding threads (per Dask worker with --engine dask; default: number of CPUs).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: threads in this process; dask: chunks on Dask workers (pip install 'ecoclassify[dask]').")
@click.option("--scheduler", metavar="ADDRESS", help="With --engine dask: a running Dask scheduler (else a LocalCluster).")
@click.option("--workers", type=click.IntRange(min=1), help="With --engine dask: LocalCluster worker processes.")
@click.option("--detections", type=click.Path(exists=True, path_type=Path),
              help="A detector's output (MegaDetector JSON, COCO Camera Traps, Camtrap DP; file paths relative to "
                   "INPUT): classify the crops of its boxes, label each image from them, and write one row per box "
                   "too (OUTPUT.boxes.csv for csv).")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="With --detections: ignore boxes below this detector confidence [default: the model's training "
                   "setting, else 0.2].")
@click.option("--detection-category", "detection_categories", multiple=True, metavar="CATEGORY",
              help="With --detections: box categories to classify (repeatable) [default: animal]; other boxes above "
                   "the threshold keep their category as label.")


@click.option("--runtime", type=click.Choice(RUNTIMES), default="keras", show_default=True,
              help="keras: the model as trained; litert: the same model converted once to TensorFlow Lite (kept as "
                   "model.litert.tflite beside it, checked against Keras first), less CPU per image "
                   "(pip install 'ecoclassify[litert]').")
def predict_command(model: Path, inputs: tuple[Path, ...], output: Path, batch_size: int, top_k: int,
                    threshold: float | None, recursive: bool, fmt: str | None, checkpoint_every: int, resume: bool,
                    overwrite: bool, sequence_gap: float | None, md_category: tuple[str, ...], allow_truncated: bool,
                    max_pixels: int | None, threads: int | None, engine: str, scheduler: str | None,
                    workers: int | None, detections: Path | None, min_confidence: float | None,
                    detection_categories: tuple[str, ...], runtime: str) -> None:
    """Label every image in INPUT (folders, image files, or text files listing paths) with MODEL.

    MODEL is a run folder or a .keras file with labels.json beside it. Writes one row per image
    file to OUTPUT, failures included with their reason; prints a summary. Ctrl-C saves a
    checkpoint: run the same command with --resume to continue. With --detections, the boxes of a
    detector (MegaDetector...) are classified instead of whole frames.
    """
    from ecoclassify.prediction.labelling import format_summary, predict
    from ecoclassify.prediction.md_categories import parse_md_category_options
    from ecoclassify.prediction.options import PredictOptions

    md_categories = parse_md_category_options(md_category)
    if fmt is None:
        fmt = "json" if output.suffix.lower() == ".json" else "csv"
    limits = {} if max_pixels is None else {"max_pixels": max_pixels}  # None: the library's default
    if detections is not None:
        limits.update(detections=detections, min_confidence=min_confidence,
                      **({"detection_categories": list(detection_categories)} if detection_categories else {}))
    elif min_confidence is not None or detection_categories:
        raise click.UsageError("--min-confidence and --detection-category need --detections")
    options = PredictOptions.build(
        output=output, batch_size=batch_size, top_k=top_k, threshold=threshold, recursive=recursive, fmt=fmt,
        checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, sequence_gap=sequence_gap,
        md_categories=md_categories or None, allow_truncated=allow_truncated, threads=threads, engine=engine,
        scheduler=scheduler, dask_workers=workers, runtime=runtime, **limits)
    # TensorFlow loads with the model, after predict has checked the inputs and the output.
    with ProgressBar("classifying", "img") as progress, _sigterm_as_ctrl_c():
        frame = predict(model, list(inputs), options, progress=progress)
    click.echo(format_summary(frame.attrs["summary"]))


@click.command("sort")
@click.argument("predictions", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dest", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--mode", type=click.Choice(MODES), default="copy", show_default=True,
              help="Copy, symlink or move the images.")
@click.option("--min-score", type=click.FloatRange(0, 1), help="Images scoring below it go to unknown/.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; touch nothing.")
@click.option("--flat", is_flag=True, help="Put files straight into DEST/<label>/, not their sub-folders.")
@click.option("--by-sequence", is_flag=True, help="Sort by sequence label (predict with --sequence-gap).")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the undo manifest (default: DEST/sort-manifest-<time>.csv).")
@click.option("--undo", "undo_manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="MANIFEST", help="Reverse the sort recorded in MANIFEST.")
def sort_command(predictions: Path | None, dest: Path | None, mode: str, min_score: float | None, dry_run: bool,
                 flat: bool, by_sequence: bool, manifest: Path | None, undo_manifest: Path | None) -> None:
    """File the images of PREDICTIONS (csv or json from predict) into DEST/<label>/.

    Low scores go to unknown/, unreadable files to failed/ (a class called unknown or failed
    goes to class-unknown/ or class-failed/). Nothing is ever overwritten (a name that is taken
    gets -2, -3...); a file already sorted there is left as it is, so sorting again changes
    nothing. Every sort writes a manifest; `ecoclassify sort --undo MANIFEST` reverses it,
    touching only files the sort made that are unchanged since (others are kept and listed).
    """
    from ecoclassify.prediction.sorting import sort, undo_sort

    if undo_manifest is not None:
        if predictions is not None or dest is not None:
            raise click.UsageError("--undo MANIFEST takes no PREDICTIONS or DEST")
        result = undo_sort(undo_manifest)
        counts = result["undo"].value_counts()
        click.echo("undo: " + ", ".join(f"{key} {value}" for key, value in sorted(counts.items())))
        left = result[result["undo"].str.startswith(("kept", "conflict", "error"))]
        for row in left.head(20).itertuples(index=False):
            click.echo(f"  {row.undo}: {row.destination}")
        if len(left) > 20:
            click.echo(f"  ... and {len(left) - 20} more (see the undo column of {undo_manifest})")
        return
    if predictions is None or dest is None:
        raise click.UsageError("give PREDICTIONS and DEST, or --undo MANIFEST")
    with ProgressBar(f"sorting ({mode})", "files") as progress:
        plan = sort(predictions, dest, mode=mode, min_score=min_score, dry_run=dry_run, flat=flat,
                    by_sequence=by_sequence, manifest=manifest, progress=progress)
    folders = ", ".join(f"{key} {value}" for key, value in sorted(plan["folder"].value_counts().items()))
    if dry_run:
        planned = plan[plan["status"] == "planned"]
        click.echo(f"dry run: would {mode} {len(planned)} files into {dest}: {folders}")
        for row in planned.head(10).itertuples(index=False):
            click.echo(f"  {row.source} -> {row.destination}")
        if len(planned) > 10:
            click.echo(f"  ... and {len(planned) - 10} more")
    else:
        done = plan[plan["status"] == "done"]
        click.echo(f"{mode}: {len(done)} of {len(plan)} files into {dest}: {folders}")
        renamed = done[done["detail"] != ""]
        if len(renamed):
            click.echo(f"renamed: {len(renamed)} (the name was taken by another file), e.g. "
                       f"{renamed.iloc[0]['destination']}: {renamed.iloc[0]['detail']}")
    already = plan[plan["status"] == "already_sorted"]
    if len(already):
        click.echo(f"already sorted: {len(already)} (the same file is already there; left as it is)")
    for status in ("missing", "error"):
        problems = plan[plan["status"] == status]
        if len(problems):
            click.echo(f"{status}: {len(problems)}, e.g. {problems.iloc[0]['source']} {problems.iloc[0]['detail']}")
    if dry_run:
        return
    click.echo(f"manifest: {plan.attrs['manifest']} (undo with: ecoclassify sort --undo {plan.attrs['manifest']})")
