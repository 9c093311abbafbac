"""``ecoclassify camtrapdp``: a thin click wrapper of :func:`ecoclassify.prediction.camtrapdp.export_camtrapdp`.

Registered on the main group in ``cli/app.py``; nothing here (or below it) imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

# Written out rather than imported so that `ecoclassify --help` imports no pandas; a test checks it.
TIME_SOURCES = ("exif", "mtime")


@click.command("camtrapdp")
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--deployments", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV with Camtrap DP deployment columns: deploymentID, locationID, latitude, longitude, "
                   "deploymentStart, deploymentEnd (ISO 8601 with UTC offset, e.g. 2024-05-01T12:00:00+02:00), ...")
@click.option("--taxonomy", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV class,scientificName[,observationType,taxonRank,vernacularName]: one row per class.")
@click.option("--metadata", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="YAML with contributors, project (title, samplingDesign, ...), licenses, title.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Package folder to write (datapackage.json, deployments/media/observations.csv, unexported.csv).")
@click.option("--deployment-column", metavar="COLUMN", default=None,
              help="Predictions column holding the deploymentID [default: a folder of the image's path named like "
                   "a deploymentID].")
@click.option("--skip-unmatched", is_flag=True,
              help="List images of no deployment in unexported.csv instead of stopping.")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=None,
              help="Images and sequences scored below it are observationType unclassified (probability kept).")
@click.option("--time-from", type=click.Choice(TIME_SOURCES), default="exif", show_default=True,
              help="Capture time: EXIF DateTimeOriginal, or the file's modification time.")
@click.option("--overwrite", is_flag=True, help="Replace the package files in an existing, non-empty folder.")
def camtrapdp_command(predictions: Path, deployments: Path, taxonomy: Path, metadata: Path, output: Path,
                      deployment_column: Optional[str], skip_unmatched: bool, min_score: Optional[float],
                      time_from: str, overwrite: bool) -> None:
    """Publish PREDICTIONS (the csv or json of `ecoclassify predict`) as a Camtrap DP 1.0.2 package.

    Images without a capture time, outside their deployment, unreadable or (with
    --skip-unmatched) of no deployment are listed in unexported.csv with the reason.
    Predictions of `predict --detections` give one observation per box, with its bbox
    (a csv needs its .boxes.csv beside it).
    """
    from ecoclassify.prediction.camtrapdp import export_camtrapdp

    result = export_camtrapdp(predictions, deployments, taxonomy, metadata, output,
                              deployment_column=deployment_column, skip_unmatched=skip_unmatched,
                              min_score=min_score, overwrite=overwrite, time_from=time_from)
    click.echo(result.format())
