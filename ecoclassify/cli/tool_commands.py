"""``ecoclassify init`` and ``ecoclassify export``: thin click wrappers of library functions.

Registered on the main group in ``cli.py`` with ``main.add_command(init_command)`` and
``main.add_command(export_command)``; errors reach the group's handler, which prints one
paragraph and exits with the error's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


# Choices are written out rather than imported so that `ecoclassify --help` imports neither
# pydantic nor TensorFlow; tests check they equal the library's.
SOURCES = ("folders", "csv", "coco", "demo", "camtrapdp")
FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = ("float16", "int8")
DEFAULT_BACKBONE = "vgg16"


@click.command("init")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backbone", metavar="NAME", default=None,
              help=f"Backbone to set up for (see `ecoclassify backbones`)  [default: {DEFAULT_BACKBONE}]")
@click.option("--source", type=click.Choice(SOURCES), default="folders", show_default=True,
              help="Where the images and labels come from.")
@click.option("--force", is_flag=True, help="Replace CONFIG if it exists.")
def init_command(config: Path, backbone: Optional[str], source: str, force: bool) -> None:
    """Write a fully commented starter CONFIG: every key with its default and meaning.

    Image size, weights and training mode suit the backbone (e.g. `weights: none` and
    `mode: scratch` for custom_cnn, `mode: finetune` for pretrained backbones).
    """
    from ecoclassify.config.starter import init_config

    path = init_config(config, backbone=backbone, source=source, force=force)
    click.echo(f"wrote {path}; edit it, then run: ecoclassify validate {path}")


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="saved_model: TensorFlow Serving and converters (TF.js, ONNX); tflite: phones, Raspberry Pi, "
                   "Coral Edge TPU (int8).")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None,
              help="tflite only: float16 halves the file; int8 quarters it and runs integer-only "
                   "(calibrated on up to 100 training images).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder to create for the model and its labels, or for tflite a file NAME.tflite (labels beside "
                   "it as NAME.labels.json/.txt) [default: RUN_DIR/export/FORMAT[-QUANTIZE]].")
@click.option("--overwrite", is_flag=True, help="Replace the output folder (or files) if it exists.")
def export_command(run_dir: Path, fmt: str, quantize: Optional[str], output: Optional[Path], overwrite: bool) -> None:
    """Export the model of RUN_DIR for field devices and other runtimes, with labels.json and labels.txt.

    The exported model takes uint8 RGB images of the model's size and returns class
    probabilities, with augmentation off, exactly like the Keras model.
    """
    from ecoclassify._tf import quiet_stderr
    from ecoclassify.exporting import export

    with quiet_stderr():  # the TFLite converter prints its settings straight to descriptor 2
        path = export(run_dir, fmt, quantize=quantize, output=output, overwrite=overwrite)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    if fmt == "tflite" and output is not None and output.suffix.lower() == ".tflite":
        labels = f"{output.stem}.labels.json and {output.stem}.labels.txt"
    else:
        labels = "labels.json and labels.txt"
    click.echo(f"exported {path} ({shown}) with {labels} beside it")
