"""The ``ecoclassify`` command line: parse, build a validated config, call one library function.

User errors (``EcoclassifyError``) print one paragraph and exit non-zero (2 for usage and
config errors, 1 for data and runtime errors); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from ecoclassify import __version__
from ecoclassify._tf import quiet_tensorflow
from ecoclassify.errors import EcoclassifyError
from ecoclassify.files import METRICS_FILE, REPORT_DIR
from ecoclassify.cli.progress import ProgressBar
from ecoclassify.cli.evaluate_command import evaluate_command
from ecoclassify.cli.camtrapdp_command import camtrapdp_command


from ecoclassify.cli.crossval_command import crossval_command
from ecoclassify.cli.predict_commands import predict_command, sort_command
from ecoclassify.cli.tool_commands import export_command, init_command

CONFIG_ARG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config key, e.g. --set training.batch_size=16 (repeatable; YAML values).",
)


class _Group(click.Group):
    """Maps ecoclassify's exceptions to a message and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except EcoclassifyError as exc:
            if ctx.find_root().params.get("debug"):
                raise
            # An interruption is not an error: it says how to resume.
            click.echo(str(exc) if exc.exit_code == 130 else f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ecoclassify")
@click.option("--debug", is_flag=True, help="Show full tracebacks and TensorFlow's log messages.")
@click.option("--quiet", "-q", is_flag=True, help="Print only results, warnings and errors: no progress messages "
              "or bars.")
def main(debug: bool, quiet: bool) -> None:
    """Train and use image classifiers for ecological field images (camera traps first)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.getLogger("ecoclassify").setLevel(level)
    if debug:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ["ECOCLASSIFY_TF_VERBOSE"] = "1"


@main.command()
@CONFIG_ARG
@SET_OPTION
def validate(config: Path, overrides: tuple[str, ...]) -> None:
    """Check CONFIG and its data without training.

    Prints images per class and split, unreadable files with reasons, duplicates and
    leakage, and exits 1 when training would fail.
    """
    from ecoclassify.config import load_config
    from ecoclassify.data.validation import format_validation, validate as run_validate

    cfg = load_config(config, overrides)
    with ProgressBar("scanning images") as progress:
        prepared = run_validate(cfg, progress=progress)
    click.echo(format_validation(prepared))
    if not prepared.ok:
        sys.exit(1)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@SET_OPTION
@click.option("--resume", "resume", type=click.Path(file_okay=False, exists=True, path_type=Path),
              metavar="RUN_DIR", help="Continue an interrupted run from its last finished epoch.")
def train(config: Path | None, overrides: tuple[str, ...], resume: Path | None) -> None:
    """Train the model described by CONFIG and write a new run folder.

    With --resume RUN_DIR, CONFIG may be left out; if given, it must equal the run's config.
    """
    from ecoclassify.config import load_config

    if config is None and resume is None:
        raise click.UsageError("give a CONFIG file, or --resume RUN_DIR")
    cfg = load_config(config, overrides) if config is not None else None  # config errors before TF starts
    quiet_tensorflow()
    from ecoclassify.training.session import train as run_train

    from ecoclassify.cli.progress import quiet_requested

    with ProgressBar("checking images") as progress:
        run = run_train(cfg, resume=resume, verbose=0 if quiet_requested() else None, progress=progress)
    click.echo(f"run folder: {run.run_dir}")
    test = run.metrics.get("test")
    if test:
        map_text = f"{test['mAP']:.3f}" if test["mAP"] is not None else "n/a"
        click.echo(f"test: accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, mAP {map_text} "
                   f"({test['n_images']} images)")
        _echo_thresholds(run.run_dir / REPORT_DIR / METRICS_FILE)


def _echo_thresholds(report_metrics: Path) -> None:
    """The auto-labelling lines of a finished run's report, each target flagged when unsupported."""
    from ecoclassify.report.thresholds import threshold_summary_lines

    if report_metrics.is_file():
        thresholds = json.loads(report_metrics.read_text(encoding="utf-8"))["test"]["thresholds"]
        click.echo("auto-labelling thresholds on the test split:")
        for line in threshold_summary_lines(thresholds):
            click.echo(f"  {line}")


@main.command()
@click.option("--params/--no-params", default=True, help="Build each backbone to count its parameters.")
def backbones(params: bool) -> None:
    """List the registered backbones with input sizes, preprocessing and parameter counts."""
    from ecoclassify.models.registry import backbone_table

    quiet_tensorflow()
    click.echo(backbone_table(with_params=params).to_string(index=False))


@main.command()
@click.option("--backbone", default="mobilenet_v2", show_default=True, help="Registered backbone name.")
@click.option("--image-size", type=click.IntRange(8, 2048), help="Model input side (default: the backbone's).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--images", type=click.IntRange(8, 100_000), default=128, show_default=True,
              help="Generated 3 MP JPEGs labelled end to end.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def benchmark(backbone: str, image_size: int | None, batch_size: int, images: int, as_json: bool) -> None:
    """Measure model, decoder and end-to-end labelling speed on this machine (random weights)."""
    from ecoclassify.benchmarking import benchmark as run_benchmark, result_dict
    from ecoclassify.config.backbones import get_backbone

    get_backbone(backbone, key="--backbone")  # a typo fails before TensorFlow loads
    quiet_tensorflow()

    result = run_benchmark(backbone, image_size, batch_size=batch_size, images=images)
    click.echo(json.dumps(result_dict(result)) if as_json else result.format())


main.add_command(evaluate_command)
main.add_command(predict_command)
main.add_command(sort_command)
main.add_command(init_command)
main.add_command(export_command)
main.add_command(camtrapdp_command)


main.add_command(crossval_command)

if __name__ == "__main__":  # pragma: no cover
    main()
