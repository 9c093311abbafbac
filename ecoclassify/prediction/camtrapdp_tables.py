"""The user's inputs of a Camtrap DP export, read and checked: deployments, taxonomy, project metadata.

Every problem is found before anything is written, with a message naming the file, the row
or column, what is allowed and what was received. See :mod:`ecoclassify.prediction.camtrapdp`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ecoclassify.config.yamlio import load_yaml_file
from ecoclassify.data.camtrapdp import DEPLOYMENT_COLUMNS, OBSERVATION_TYPES, parse_timestamp, read_table
from ecoclassify.errors import ConfigError, DataError
from ecoclassify.prediction.md_categories import default_md_category

DEPLOYMENT_REQUIRED = ("deploymentID", "latitude", "longitude", "deploymentStart", "deploymentEnd")
# Typed deployment columns of the official schema: (kind, minimum, maximum).
_DEPLOYMENT_TYPES: dict[str, tuple[str, float | None, float | None]] = {
    "latitude": ("number", -90, 90), "longitude": ("number", -180, 180), "coordinateUncertainty": ("integer", 1, None),
    "cameraDelay": ("integer", 0, None), "cameraHeight": ("number", 0, None), "cameraDepth": ("number", 0, None),
    "cameraTilt": ("integer", -90, 90), "cameraHeading": ("integer", 0, 360), "detectionDistance": ("number", 0, None),
    "timestampIssues": ("boolean", None, None), "baitUse": ("boolean", None, None)}
FEATURE_TYPES = ("roadPaved", "roadDirt", "trailHiking", "trailGame", "roadUnderpass", "roadOverpass", "roadBridge",
                 "culvert", "burrow", "nestSite", "carcass", "waterSource", "fruitingTree")
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")
#: MegaDetector-style category of a class name -> Camtrap DP observation type.
_TYPE_OF_CATEGORY = {"empty": "blank", "person": "human", "vehicle": "vehicle", "animal": "animal"}
CONTRIBUTOR_ROLES = ("contact", "principalInvestigator", "rightsHolder", "publisher", "contributor")
SAMPLING_DESIGNS = ("simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted", "opportunistic")
CAPTURE_METHODS = ("activityDetection", "timeLapse")
METADATA_KEYS = ("name", "id", "title", "description", "version", "keywords", "homepage", "contributors", "licenses",
                 "bibliographicCitation", "coordinatePrecision", "project", "relatedIdentifiers", "references")
PROJECT_KEYS = ("id", "title", "acronym", "description", "path", "samplingDesign", "captureMethod",
                "individualAnimals")


@dataclass(frozen=True)
class Deployment:
    """One row of the deployments file, with its window as aware datetimes."""

    deployment_id: str
    location_id: str
    latitude: float
    longitude: float
    start: dt.datetime
    end: dt.datetime
    row: dict[str, str]

    @property
    def offset(self) -> dt.tzinfo:
        """The UTC offset of ``deploymentStart``: the camera clock's time zone."""
        return self.start.tzinfo  # type: ignore[return-value]


@dataclass(frozen=True)
class Taxon:
    """What one class of the model is in Camtrap DP terms."""

    observation_type: str
    scientific_name: str
    taxon_rank: str
    vernacular_name: str


def read_deployments(path: Path) -> dict[str, Deployment]:
    """The deployments file (Camtrap DP's own deployment columns), checked.

    Raises:
        DataError: Missing required columns, unknown columns, empty or repeated ``deploymentID``,
            coordinates or other values out of range, times without a UTC offset, an end before
            its start, or two deployments of one ``locationID`` overlapping in time.
    """
    frame = read_table(Path(path), "the deployments file")
    where = f"the deployments file {path}"
    missing = [c for c in DEPLOYMENT_REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{where} lacks the required column(s) {', '.join(missing)}. Camtrap DP deployments need "
                        f"{', '.join(DEPLOYMENT_REQUIRED)}. Found columns: {', '.join(frame.columns)}")
    unknown = [c for c in frame.columns if c not in DEPLOYMENT_COLUMNS]
    if unknown:
        raise DataError(f"{where} has column(s) that are not Camtrap DP deployment columns: {', '.join(unknown)}. "
                        f"Allowed: {', '.join(DEPLOYMENT_COLUMNS)} (notes go in deploymentComments)")
    deployments: dict[str, Deployment] = {}
    for index, row in enumerate(frame.to_dict("records")):
        line = f"{where}, line {index + 2}"
        row = {key: str(value).strip() for key, value in row.items()}
        deployment_id = row["deploymentID"]
        if not deployment_id:
            raise DataError(f"{line}: deploymentID is empty; every deployment needs an identifier")
        if deployment_id in deployments:
            raise DataError(f"{line}: deploymentID {deployment_id!r} is repeated; identifiers must be unique")
        for column, (kind, low, high) in _DEPLOYMENT_TYPES.items():
            if column in row and (row[column] or column in DEPLOYMENT_REQUIRED):
                row[column] = _checked_value(row[column], kind, low, high, f"{line}: {column}")
        if row.get("featureType") and row["featureType"] not in FEATURE_TYPES:
            raise DataError(f"{line}: featureType must be one of: {', '.join(FEATURE_TYPES)}. "
                            f"Received: {row['featureType']!r}")
        times = []
        for column in ("deploymentStart", "deploymentEnd"):
            when = parse_timestamp(row[column])
            if when is None:
                raise DataError(f"{line}: {column} must be an ISO 8601 date and time with its UTC offset, e.g. "
                                f"2024-05-01T12:00:00+02:00 or 2024-05-01T10:00:00Z. Received: {row[column]!r}")
            times.append(when)
        if times[1] < times[0]:
            raise DataError(f"{line}: deploymentEnd is before deploymentStart. Received: "
                            f"{row['deploymentStart']} to {row['deploymentEnd']}")
        row["deploymentStart"], row["deploymentEnd"] = (format_timestamp(t) for t in times)
        deployments[deployment_id] = Deployment(deployment_id, row.get("locationID", ""), float(row["latitude"]),
                                                float(row["longitude"]), times[0], times[1], row)
    if not deployments:
        raise DataError(f"{where} has no deployments")
    _refuse_overlaps(deployments.values(), where)
    return deployments


def format_timestamp(when: dt.datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss±hh:mm`` (``Z`` for UTC), the form of Camtrap DP's datetime fields."""
    text = when.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _checked_value(text: str, kind: str, low: float | None, high: float | None, what: str) -> str:
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise DataError(f"{what} must be true or false. Received: {text!r}")
        return text.lower()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isnan(number) or (kind == "integer" and not number.is_integer()):
        raise DataError(f"{what} must be {'an integer' if kind == 'integer' else 'a number'}. Received: {text!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise DataError(f"{what} must be {bounds}. Received: {text}")
    return str(int(number)) if kind == "integer" else text


def _refuse_overlaps(deployments: Iterable[Deployment], where: str) -> None:
    """One camera location cannot record two deployments at once: their windows would share images."""
    by_location: dict[str, list[Deployment]] = {}
    for deployment in deployments:
        if deployment.location_id:
            by_location.setdefault(deployment.location_id, []).append(deployment)
    for location, group in sorted(by_location.items()):
        group.sort(key=lambda d: d.start)
        for before, after in zip(group, group[1:]):
            if after.start < before.end:
                raise DataError(f"{where}: deployments {before.deployment_id} and {after.deployment_id} at location "
                                f"{location} overlap in time ({format_timestamp(before.start)} to "
                                f"{format_timestamp(before.end)} and {format_timestamp(after.start)} to "
                                f"{format_timestamp(after.end)}); a location has one deployment at a time")


def read_taxonomy(path: Path, classes: list[str]) -> dict[str, Taxon]:
    """``class -> Taxon`` for every class of the model, from ``class,scientificName[,...]``.

    ``observationType`` defaults from the class name (``blank``/``empty``... -> blank,
    ``human``/``person`` -> human, ``vehicle``/``car`` -> vehicle, else animal).

    Raises:
        DataError: Missing columns, a class given twice, a bad type or rank, an animal without a
            scientific name, or classes of the model that the file does not map (all listed).
    """
    frame = read_table(Path(path), "the taxonomy file")
    where = f"the taxonomy file {path}"
    missing = [c for c in ("class", "scientificName") if c not in frame.columns]
    if missing:
        raise DataError(f"{where} lacks the column(s) {', '.join(missing)}; it needs class,scientificName and "
                        f"optionally observationType, taxonRank, vernacularName. Found columns: {', '.join(frame.columns)}")
    taxa: dict[str, Taxon] = {}
    for index, row in enumerate(frame.to_dict("records")):
        line = f"{where}, line {index + 2}"
        name = str(row["class"]).strip()
        if name in taxa:
            raise DataError(f"{line}: class {name!r} is given twice")
        kind = str(row.get("observationType", "")).strip() or _TYPE_OF_CATEGORY[default_md_category(name)]
        if kind not in OBSERVATION_TYPES:
            raise DataError(f"{line}: observationType must be one of: {', '.join(OBSERVATION_TYPES)}. "
                            f"Received: {kind!r}")
        scientific = str(row["scientificName"]).strip()
        if kind == "animal" and not scientific:
            raise DataError(f"{line}: class {name!r} is an animal and needs a scientificName (or give its "
                            "observationType: blank, human, vehicle, unknown or unclassified)")
        rank = str(row.get("taxonRank", "")).strip()
        if rank and rank not in TAXON_RANKS:
            raise DataError(f"{line}: taxonRank must be one of: {', '.join(TAXON_RANKS)}. Received: {rank!r}")
        taxa[name] = Taxon(kind, scientific if kind == "animal" else "", rank,
                           str(row.get("vernacularName", "")).strip())
    unmapped = [c for c in classes if c not in taxa]
    if unmapped:
        raise DataError(f"{where} does not map the model's class(es) {', '.join(unmapped)}; add a row "
                        f"class,scientificName for each (observationType blank, human or vehicle for non-animals)")
    return taxa


def read_metadata(path: Path) -> dict[str, Any]:
    """``project.yaml``: package title, contributors, licences and the project, checked.

    Raises:
        ConfigError: Not YAML, an unknown key, or a missing or invalid required value.
    """
    data = load_yaml_file(Path(path))
    where = f"the metadata file {path}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with contributors, project, ... Received: {type(data).__name__}")
    _refuse_unknown(data, METADATA_KEYS, where)
    if data.get("name") is not None and not re.fullmatch(r"[-a-z0-9._/]+", str(data["name"])):
        raise ConfigError(f"{where}: name must be lower-case letters, digits, '-', '_', '.' or '/' (a Data Package "
                          f"name), e.g. my-camera-traps-2024. Received: {data['name']!r}")
    contributors = data.get("contributors")
    if not isinstance(contributors, list) or not contributors:
        raise ConfigError(f"{where}: contributors must be a list of people or organisations, e.g. "
                          f"[{{title: Jane Doe, email: jane@example.org, role: contact}}]. Received: {contributors!r}")
    for index, person in enumerate(contributors):
        if not isinstance(person, dict) or not isinstance(person.get("title"), str) or not person["title"].strip():
            raise ConfigError(f"{where}: contributors[{index}] needs a title (the name). Received: {person!r}")
        if "role" in person and person["role"] not in CONTRIBUTOR_ROLES:
            raise ConfigError(f"{where}: contributors[{index}].role must be one of: {', '.join(CONTRIBUTOR_ROLES)}. "
                              f"Received: {person['role']!r}")
    licenses = data.get("licenses")
    if licenses is not None:
        scopes = sorted({item.get("scope") for item in licenses if isinstance(item, dict)}, key=str) \
            if isinstance(licenses, list) else []
        if scopes != ["data", "media"] or not all(isinstance(i, dict) and (i.get("name") or i.get("path"))
                                                  for i in licenses):
            raise ConfigError(f"{where}: licenses must list one licence for the data and one for the media, e.g. "
                              "[{name: CC0-1.0, scope: data}, {name: CC-BY-4.0, scope: media}]. "
                              f"Received: {licenses!r}")
    project = data.get("project")
    if not isinstance(project, dict):
        raise ConfigError(f"{where}: project must be a mapping with title and samplingDesign. Received: {project!r}")
    _refuse_unknown(project, PROJECT_KEYS, f"{where}, project")
    if not isinstance(project.get("title"), str) or not project["title"].strip():
        raise ConfigError(f"{where}: project.title is required. Received: {project.get('title')!r}")
    if project.get("samplingDesign") not in SAMPLING_DESIGNS:
        raise ConfigError(f"{where}: project.samplingDesign must be one of: {', '.join(SAMPLING_DESIGNS)}. "
                          f"Received: {project.get('samplingDesign')!r}")
    methods = project.setdefault("captureMethod", ["activityDetection"])
    if not isinstance(methods, list) or not methods or any(m not in CAPTURE_METHODS for m in methods):
        raise ConfigError(f"{where}: project.captureMethod must be a list of {', '.join(CAPTURE_METHODS)}. "
                          f"Received: {methods!r}")
    if not isinstance(project.setdefault("individualAnimals", False), bool):
        raise ConfigError(f"{where}: project.individualAnimals must be true or false. "
                          f"Received: {project['individualAnimals']!r}")
    return data


def _refuse_unknown(data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(allowed)}")


def deployment_of_rows(frame: pd.DataFrame, deployments: dict[str, Deployment], column: str | None) -> list[str]:
    """Per predictions row, the deployment it belongs to ('' when none).

    By default the deepest folder of ``root/filepath`` named like a ``deploymentID``; with
    ``column``, that column's value.

    Raises:
        ConfigError: ``column`` is not a column of the predictions.
    """
    if column is not None:
        if column not in frame.columns:
            raise ConfigError(f"--deployment-column must be a column of the predictions: "
                              f"{', '.join(frame.columns)}. Received: {column!r}")
        return [str(v).strip() if str(v).strip() in deployments else "" for v in frame[column].fillna("")]
    found = []
    cache: dict[tuple[str, str], str] = {}
    for root, filepath in zip(frame["root"], frame["filepath"]):
        folder = filepath.rpartition("/")[0]
        key = (root, folder)
        if key not in cache:
            parts = [*Path(root).parts, *(folder.split("/") if folder else [])]
            cache[key] = next((p for p in reversed(parts) if p in deployments), "")
        found.append(cache[key])
    return found
