"""``ecoclassify camtrapdp``: publish predict's output as a Camera Trap Data Package (Camtrap DP 1.0.2).

Mapping (https://camtrap-dp.tdwg.org):

- ``deployments.csv``: the user's deployments file, checked and written with every column of
  the official schema (:mod:`ecoclassify.prediction.camtrapdp_tables`).
- ``media.csv``: one row per image that was read, belongs to a deployment and has a capture
  time inside it. ``timestamp`` is the EXIF ``DateTimeOriginal`` (the camera's local clock, the
  ``datetime`` column of the predictions) with the UTC offset of the deployment's
  ``deploymentStart``; ``filePath`` is relative to the common folder of the predictions' roots;
  ``filePublic`` is false for images of people.
- ``observations.csv``: per image a media-level observation of its label; per sequence (predict
  ``--sequence-gap``) an event-level observation of the sequence label spanning its images, which
  carry its ``eventID``. Classes become ``observationType`` and ``scientificName`` through the
  taxonomy file; predict's ``unknown`` label or a score below ``min_score`` is ``unclassified``
  (the probability is kept, no species is guessed). ``classificationMethod: machine``.
  Predictions of ``predict --detections`` give one observation per box instead, with its bbox
  (:mod:`ecoclassify.prediction.camtrapdp_boxes`).
- ``datapackage.json``: the 1.0.2 profile, ``project.yaml``'s metadata and what is derived:
  ``spatial`` (bounding box of the deployments), ``temporal`` (first and last image),
  ``taxonomic`` (the taxa observed), the three resources with the official schema URLs.
- ``unexported.csv``: every image of the predictions that is not in the package, with the
  reason (``failed``, ``no_deployment``, ``no_timestamp``, ``outside_deployment``,
  ``undecodable_name``); nothing is dropped silently and no time is invented.

Every file is written atomically; nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecoclassify.data.camtrapdp import (DEPLOYMENT_COLUMNS, MEDIA_COLUMNS, OBSERVATION_COLUMNS, PROFILE_URL,
                                        schema_url)
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.files import (CAMTRAPDP_DEPLOYMENTS_FILE, CAMTRAPDP_MEDIA_FILE, CAMTRAPDP_OBSERVATIONS_FILE,
                               CAMTRAPDP_PACKAGE_FILE, CAMTRAPDP_UNEXPORTED_FILE, atomic_write, write_json)
from ecoclassify.prediction.camtrapdp_boxes import box_observations, is_human, read_prediction_boxes
from ecoclassify.prediction.camtrapdp_tables import (Deployment, Taxon, deployment_of_rows, format_timestamp,
                                                     read_deployments, read_metadata, read_taxonomy)
from ecoclassify.prediction.outputs import md_base, read_predictions
from ecoclassify.prediction.sequences import UNKNOWN

TIME_SOURCES = ("exif", "mtime")
UNEXPORTED_COLUMNS = ("root", "filepath", "reason", "detail")
_MEDIATYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff",
               ".tiff": "image/tiff", ".bmp": "image/bmp", ".webp": "image/webp"}
_EMPTY_BEFORE_METHOD = ("",) * (OBSERVATION_COLUMNS.index("classificationMethod")
                                - OBSERVATION_COLUMNS.index("scientificName") - 1)
_TABLE_FILES = {"deployments": CAMTRAPDP_DEPLOYMENTS_FILE, "media": CAMTRAPDP_MEDIA_FILE,
                "observations": CAMTRAPDP_OBSERVATIONS_FILE}


@dataclass
class CamtrapdpExport:
    """What :func:`export_camtrapdp` wrote.

    Attributes:
        output: The package folder.
        deployments: Deployments in the package.
        media: Images in ``media.csv``.
        observations: Rows of ``observations.csv``; ``events`` of them are event-level.
        unexported: Images left out, per reason (listed in ``unexported.csv``).
        observation_types: Media-level observations per ``observationType``.
    """

    output: Path
    deployments: int = 0
    media: int = 0
    observations: int = 0
    events: int = 0
    unexported: dict[str, int] = field(default_factory=dict)
    observation_types: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        """A few lines for the terminal."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.observation_types.items())) or "none"
        lines = [f"wrote Camtrap DP 1.0.2 package {self.output}",
                 f"  {self.deployments} deployment(s), {self.media} media, {self.observations} observation(s) "
                 f"({self.events} event-level)", f"  media observations: {kinds}"]
        left = sum(self.unexported.values())
        if left:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.unexported.items()))
            lines.append(f"  {left} image(s) not exported ({reasons}): see {self.output / CAMTRAPDP_UNEXPORTED_FILE}")
        return "\n".join(lines)


def export_camtrapdp(predictions: Path | str, deployments: Path | str, taxonomy: Path | str, metadata: Path | str,
                     output: Path | str, *, deployment_column: str | None = None, skip_unmatched: bool = False,
                     min_score: float | None = None, overwrite: bool = False,
                     time_from: str = "exif") -> CamtrapdpExport:
    """Writes predict's csv or json output as a Camtrap DP 1.0.2 package (see the module's mapping).

    Args:
        predictions: The csv or json file ``ecoclassify predict`` wrote.
        deployments: CSV with Camtrap DP deployment columns (at least ``deploymentID``,
            ``latitude``, ``longitude``, ``deploymentStart``, ``deploymentEnd``; times with UTC offset).
        taxonomy: CSV ``class,scientificName[,observationType,taxonRank,vernacularName]``.
        metadata: YAML with ``contributors``, ``project`` (``title``, ``samplingDesign``...),
            optionally ``title``, ``licenses``, ``name``, ``id``, ``description``...
        output: The package folder; an existing non-empty one needs ``overwrite``.
        deployment_column: A predictions column holding the ``deploymentID``; None: the deepest
            folder of the image's path named like a ``deploymentID``.
        skip_unmatched: List images of no deployment in ``unexported.csv`` instead of failing.
        min_score: Images (and sequences) whose score is below it are ``unclassified``.
        overwrite: Replace the package files of an existing folder (other files are left alone).
        time_from: ``exif`` (the predictions' ``datetime``) or ``mtime`` (the file's modification
            time, read as the camera's local time).

    Returns:
        What was written.

    Raises:
        ConfigError: A bad option or metadata file. DataError: Bad predictions, deployments or
        taxonomy, duplicate images, or images of no deployment. RunError: The output exists.
    """
    if time_from not in TIME_SOURCES:
        raise ConfigError(f"time_from must be one of: {', '.join(TIME_SOURCES)}. Received: {time_from!r}")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise ConfigError(f"min_score must be between 0 and 1. Received: {min_score}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise RunError(f"the output must be a folder for the package. Received: '{output}' (a file)")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise RunError(f"the output folder {output} exists and is not empty; use --overwrite to replace the "
                       "package files in it, or give another folder")
    _refuse_writing_over_inputs(output, predictions, deployments, taxonomy, metadata)
    frame, info = read_predictions(predictions)
    sites = read_deployments(Path(deployments))
    classes = list(info.get("classes") or [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")])
    taxa = read_taxonomy(Path(taxonomy), classes)
    meta = read_metadata(Path(metadata))
    _refuse_duplicates(frame, predictions)
    owners = deployment_of_rows(frame, sites, deployment_column)
    if not skip_unmatched:
        _refuse_unmatched(frame, owners, deployment_column)
    builder = _Builder(sites, taxa, min_score, time_from, md_base(sorted(set(frame["root"]))) or "/",
                       _classified_by(info), _classification_time(info, Path(predictions)),
                       meta["project"]["captureMethod"])
    builder.boxes = read_prediction_boxes(Path(predictions), frame, info)
    builder.box_threshold = (info.get("options") or {}).get("threshold")
    builder.unmatched = (f"its {deployment_column!r} is not a deploymentID" if deployment_column else
                         "no folder of its path is named like a deploymentID")
    builder.add_rows(frame, owners)
    builder.add_events()
    result = CamtrapdpExport(output, len(sites), len(builder.media), len(builder.observations), builder.event_count,
                             dict(Counter(row[2] for row in builder.unexported)), dict(builder.types))
    output.mkdir(parents=True, exist_ok=True)
    _write_csv(output / CAMTRAPDP_DEPLOYMENTS_FILE, DEPLOYMENT_COLUMNS,
               ([site.row.get(c, "") for c in DEPLOYMENT_COLUMNS] for site in sites.values()))
    _write_csv(output / CAMTRAPDP_MEDIA_FILE, MEDIA_COLUMNS, builder.media)
    _write_csv(output / CAMTRAPDP_OBSERVATIONS_FILE, OBSERVATION_COLUMNS, builder.observations)
    _write_csv(output / CAMTRAPDP_UNEXPORTED_FILE, UNEXPORTED_COLUMNS, builder.unexported)
    write_json(output / CAMTRAPDP_PACKAGE_FILE, _descriptor(meta, sites, builder))
    return result


def _refuse_writing_over_inputs(output: Path, *inputs: Path | str) -> None:
    """``-o`` the folder of the inputs with ``--overwrite`` must not replace the user's own deployments.csv."""
    written = {(output / name).resolve() for name in (*_TABLE_FILES.values(), CAMTRAPDP_PACKAGE_FILE,
                                                      CAMTRAPDP_UNEXPORTED_FILE)}
    clashes = [str(path) for path in inputs if Path(path).resolve() in written]
    if clashes:
        raise RunError(f"the package would replace its own input file(s) {', '.join(clashes)}; write the package to "
                       f"another folder. Received: output '{output}'")


def _write_csv(path: Path, columns: tuple[str, ...], rows: Any) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)

    return atomic_write(path, write)


def _refuse_duplicates(frame: pd.DataFrame, where: Path | str) -> None:
    full = frame["root"].str.rstrip("/") + "/" + frame["filepath"]
    repeated = full[full.duplicated(keep=False)]
    if len(repeated):
        examples = ", ".join(sorted(set(repeated))[:5])
        raise DataError(f"{where} lists {repeated.nunique()} image(s) more than once (e.g. {examples}); each image "
                        "must be one media row. Remove the repeated rows (were two predictions files joined?)")


def _refuse_unmatched(frame: pd.DataFrame, owners: list[str], column: str | None) -> None:
    unmatched = [(root, filepath) for (root, filepath), owner in zip(zip(frame["root"], frame["filepath"]), owners)
                 if not owner]
    if not unmatched:
        return
    folders = Counter(os.path.join(root, filepath.rpartition("/")[0]).rstrip("/") for root, filepath in unmatched)
    listed = "; ".join(f"{folder} ({n})" for folder, n in folders.most_common(10))
    more = f" and {len(folders) - 10} more folder(s)" if len(folders) > 10 else ""
    how = (f"whose {column!r} is not a deploymentID" if column else
           "in no folder named like a deploymentID of the deployments file")
    raise DataError(f"{len(unmatched)} image(s) are {how}: {listed}{more}. Add their deployments, or use "
                    "--skip-unmatched to list them in unexported.csv instead")


def _classified_by(info: dict[str, Any]) -> str:
    from ecoclassify import __version__

    model = info.get("model")
    if not model:
        return f"ecoclassify {__version__}"
    path = Path(str(model))
    return f"ecoclassify {__version__} ({path.parent.name}/{path.name})" if path.parent.name else \
        f"ecoclassify {__version__} ({path.name})"


def _classification_time(info: dict[str, Any], predictions: Path) -> str:
    """When predict ran (json metadata), else when the predictions file was written; with offset."""
    try:
        when = dt.datetime.fromisoformat(str(info["created"]))
    except (KeyError, ValueError):
        when = dt.datetime.fromtimestamp(predictions.stat().st_mtime)
    return format_timestamp(when.astimezone() if when.tzinfo is None else when)


class _Builder:
    """The media, observation and unexported rows, built in one pass over the predictions."""

    def __init__(self, sites: dict[str, Deployment], taxa: dict[str, Taxon], min_score: float | None,
                 time_from: str, base: str, classified_by: str, classified_at: str, capture: list[str]) -> None:
        self.sites, self.taxa, self.min_score, self.time_from, self.base = sites, taxa, min_score, time_from, base
        self.machine = ("machine", classified_by, classified_at)
        self.capture = capture[0] if len(capture) == 1 else ""
        self.media: list[tuple] = []
        self.observations: list[tuple] = []
        self.unexported: list[tuple[str, str, str, str]] = []
        self.types: Counter[str] = Counter()
        self.events: dict[tuple[str, int], dict[str, Any]] = {}
        self.event_count = 0
        self.first: dt.datetime | None = None
        self.last: dt.datetime | None = None
        self.scientific: set[str] = set()
        self.folders: dict[tuple[str, str], str] = {}
        self.unmatched = ""
        self.boxes: dict[tuple[str, str], list] | None = None  # predict --detections: boxes per (root, filepath)
        self.box_threshold: float | None = None

    def _kind(self, label: Any, top1: Any, score: Any) -> tuple[str, str]:
        """``(observationType, scientificName)`` of a label and its score."""
        if label not in self.taxa or (label == UNKNOWN and top1 != UNKNOWN) or pd.isna(score):
            return "unclassified", ""
        if self.min_score is not None and score < self.min_score:
            return "unclassified", ""
        taxon = self.taxa[label]
        if taxon.scientific_name:
            self.scientific.add(label)
        return taxon.observation_type, taxon.scientific_name

    def _local_time(self, root: str, filepath: str, exif: Any) -> dt.datetime | None:
        if self.time_from == "exif":
            try:
                return dt.datetime.fromisoformat(exif) if isinstance(exif, str) and exif else None
            except ValueError:  # an edited predictions file; listed in unexported.csv, never guessed
                return None
        try:
            return dt.datetime.fromtimestamp(os.stat(os.path.join(root, filepath)).st_mtime).replace(microsecond=0)
        except OSError:
            return None

    def add_rows(self, frame: pd.DataFrame, owners: list[str]) -> None:
        has_sequences = "sequence_id" in frame.columns
        columns = [frame[c] if c in frame.columns else pd.Series([None] * len(frame), index=frame.index)
                   for c in ("root", "filepath", "status", "error", "detail", "label", "top1_label", "score",
                             "datetime", "sequence_id", "sequence_label", "sequence_score")]
        for (root, filepath, status, error, detail, label, top1, score, when, sequence, sequence_label,
             sequence_score), owner in zip(zip(*columns), owners):
            def leave(reason: str, text: str) -> None:
                self.unexported.append((root, filepath, reason, text))

            if not owner:
                leave("no_deployment", self.unmatched)
                continue
            if status != "ok":
                leave("failed", f"{error}: {detail}" if isinstance(detail, str) and detail else str(error))
                continue
            site = self.sites[owner]
            local = self._local_time(root, filepath, when)
            if local is None:
                if self.time_from == "mtime":
                    leave("no_timestamp", "no modification time (the file cannot be read)")
                else:
                    leave("no_timestamp", f"datetime {when!r} is not YYYY-MM-DD HH:MM:SS" if isinstance(when, str)
                          and when else "no EXIF capture time")
                continue
            stamp = local.replace(tzinfo=site.offset)
            if not site.start <= stamp <= site.end:
                leave("outside_deployment", f"taken {format_timestamp(stamp)}, outside deployment {owner} "
                                            f"({format_timestamp(site.start)} to {format_timestamp(site.end)})")
                continue
            relative = self._relative(root, filepath)
            try:
                relative.encode("utf-8")
            except UnicodeEncodeError:
                leave("undecodable_name", "the file or folder name is not valid UTF-8; rename it")
                continue
            in_sequence = has_sequences and not pd.isna(sequence)
            self._add_media(owner, stamp, relative, label, top1, score,
                            (int(sequence), sequence_label, sequence_score) if in_sequence else None,
                            None if self.boxes is None else self.boxes.get((root, filepath), []))

    def _relative(self, root: str, filepath: str) -> str:
        """``root/filepath`` relative to the common folder of the roots, with ``/``."""
        folder, _, name = filepath.rpartition("/")
        key = (root, folder)
        if key not in self.folders:  # one relpath per folder, not per image
            self.folders[key] = Path(os.path.relpath(os.path.join(root, folder), self.base)).as_posix()
        prefix = self.folders[key]
        return name if prefix == "." else f"{prefix}/{name}"

    def _add_media(self, owner: str, stamp: dt.datetime, relative: str, label: Any, top1: Any, score: Any,
                   sequence: tuple[int, Any, Any] | None, boxes: list | None = None) -> None:
        media_id = hashlib.sha1(relative.encode("utf-8")).hexdigest()[:16]
        text = format_timestamp(stamp)
        if boxes is not None:  # crops: one observation per box, with its bbox
            observations = box_observations(self, boxes, media_id, owner, text, self.box_threshold, score)
            kind = "human" if is_human(observations) else ""
        else:
            kind, scientific = self._kind(label, top1, score)
            self.types[kind] += 1
        name = relative.rpartition("/")[2]
        mediatype = _MEDIATYPES.get(os.path.splitext(name)[1].lower(), "image/jpeg")
        self.media.append((media_id, owner, self.capture, text, relative, "false" if kind == "human" else "true",
                           name, mediatype, "", "", ""))
        event_id = ""
        if sequence is not None:
            number, sequence_label, sequence_score = sequence
            event = self.events.setdefault((owner, number), {"id": f"{owner}_seq{number}", "start": stamp,
                                                             "end": stamp, "label": sequence_label,
                                                             "score": sequence_score})
            event["start"], event["end"] = min(event["start"], stamp), max(event["end"], stamp)
            event_id = event["id"]
        if boxes is None:
            observations = [self._observation(f"{media_id}_1", owner, media_id, event_id, text, text, "media", kind,
                                              scientific, score)]
        self.observations.extend(observations)
        self.first = stamp if self.first is None or stamp < self.first else self.first
        self.last = stamp if self.last is None or stamp > self.last else self.last

    def _observation(self, observation_id: str, owner: str, media_id: str, event_id: str, start: str, end: str,
                     level: str, kind: str, scientific: str, score: Any) -> tuple:
        # Fixed-point, never 1e-07: every reader of the standard's "number" type takes it.
        probability = "" if pd.isna(score) else (f"{float(score):.6f}".rstrip("0").rstrip(".") or "0")
        # The columns in OBSERVATION_COLUMNS order; the others (count, sex, bbox...) stay empty.
        return (observation_id, owner, media_id, event_id, start, end, level, kind, "", scientific,
                *_EMPTY_BEFORE_METHOD, *self.machine, probability, "", "")

    def add_events(self) -> None:
        """One event-level observation per sequence, labelled with the sequence label."""
        for (owner, _), event in sorted(self.events.items(), key=lambda item: item[1]["id"]):
            label, score = event.get("label"), event.get("score")
            kind, scientific = self._kind(label, None, score)  # a sequence below the threshold is unknown
            self.observations.append(self._observation(f"{event['id']}_event", owner, "", event["id"],
                                                       format_timestamp(event["start"]),
                                                       format_timestamp(event["end"]), "event", kind, scientific,
                                                       score))
            self.event_count += 1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "camtrap-dp"


def _descriptor(meta: dict[str, Any], sites: dict[str, Deployment], builder: _Builder) -> dict[str, Any]:
    from ecoclassify import __version__

    latitudes = [site.latitude for site in sites.values()]
    longitudes = [site.longitude for site in sites.values()]
    west, east, south, north = min(longitudes), max(longitudes), min(latitudes), max(latitudes)
    first = builder.first or min(site.start for site in sites.values())
    last = builder.last or max(site.end for site in sites.values())
    taxonomic = []
    for name in sorted(builder.scientific, key=lambda n: builder.taxa[n].scientific_name):
        taxon = builder.taxa[name]
        entry: dict[str, Any] = {"scientificName": taxon.scientific_name}
        if taxon.taxon_rank:
            entry["taxonRank"] = taxon.taxon_rank
        if taxon.vernacular_name:
            entry["vernacularNames"] = {"eng": taxon.vernacular_name}
        if entry not in taxonomic:
            taxonomic.append(entry)
    project = {**meta["project"], "observationLevel": ["media", "event"] if builder.event_count else ["media"]}
    descriptor: dict[str, Any] = {
        "resources": [{"name": name, "path": file, "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8", "schema": schema_url(name)}
                      for name, file in _TABLE_FILES.items()],
        "profile": PROFILE_URL,
        "name": meta.get("name") or _slug(meta.get("title") or project["title"]),
        "id": str(meta.get("id") or uuid.uuid4()),
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key in ("title", "contributors", "description", "version", "keywords", "homepage", "licenses",
                "bibliographicCitation", "coordinatePrecision", "relatedIdentifiers", "references"):
        if meta.get(key) is not None:
            descriptor[key] = meta[key]
    descriptor["sources"] = [{"title": "ecoclassify", "version": __version__}]
    descriptor["project"] = project
    descriptor["spatial"] = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                                 [west, north], [west, south]]]}
    descriptor["temporal"] = {"start": first.date().isoformat(), "end": last.date().isoformat()}
    descriptor["taxonomic"] = taxonomic
    return descriptor
