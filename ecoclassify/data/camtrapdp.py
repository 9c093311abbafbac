"""Camera Trap Data Package (Camtrap DP 1.0, TDWG) as training data: ``data.source: camtrapdp``.

A package is a folder with ``datapackage.json`` and three CSV tables: ``deployments``, ``media``
and ``observations`` (https://camtrap-dp.tdwg.org). Training labels come only from observations
a person made (``classificationMethod: human``); machine observations would teach a model its
own mistakes. A media-level observation labels its image; an event-level one labels every image
of the event: the media of the same deployment whose ``timestamp`` lies between ``eventStart``
and ``eventEnd``, and those a media-level observation links to the event by ``eventID``. A
media-level label wins over its event's. Labels are the ``scientificName`` of animal
observations and ``blank``, ``human`` or ``vehicle`` for the other types; ``unknown`` and
``unclassified`` observations give no label. ``locationID`` (else ``deploymentID``) becomes
``site`` and ``eventID`` ``sequence``, so ``split.group_by: site`` keeps a camera in one split.
With ``data.crops`` reading the same package's boxes, an image stays one sample whatever the
number of species in it (:func:`one_row_per_image`): each box is labelled by its own observation.

Media given as URLs (the standard's example) are looked up by ``fileName`` under ``data.root``
(download them there first). The constants of the standard (version, profile and schema URLs,
table columns) live here so that the exporter (:mod:`ecoclassify.prediction.camtrapdp`) uses
the same ones. Nothing here opens the images; the path confinement of :mod:`ecoclassify.data.sources`
applies to the paths returned.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd

from ecoclassify.errors import DataError
from ecoclassify.files import CAMTRAPDP_PACKAGE_FILE
from ecoclassify.data.labels import drop_multi_labelled

CAMTRAPDP_VERSION = "1.0.2"
#: Versions whose tables this reader understands (1.0 and its patch releases share them).
READABLE_VERSIONS = ("1.0", "1.0.1", "1.0.2")
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{CAMTRAPDP_VERSION}"
PROFILE_URL = f"{BASE_URL}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")


def schema_url(table: str) -> str:
    """The official Table Schema URL of ``table`` (``deployments``, ``media`` or ``observations``)."""
    return f"{BASE_URL}/{table}-table-schema.json"


#: The columns of each table, in the order of the official schemas (a package writes all of them).
DEPLOYMENT_COLUMNS = (
    "deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
    "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay", "cameraHeight",
    "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues", "baitUse", "featureType",
    "habitat", "deploymentGroups", "deploymentTags", "deploymentComments")
MEDIA_COLUMNS = ("mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
                 "fileMediatype", "exifData", "favorite", "mediaComments")
OBSERVATION_COLUMNS = (
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
    "observationType", "cameraSetupType", "scientificName", "count", "lifeStage", "sex", "behavior", "individualID",
    "individualPositionRadius", "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth",
    "bboxHeight", "classificationMethod", "classifiedBy", "classificationTimestamp", "classificationProbability",
    "observationTags", "observationComments")
OBSERVATION_TYPES = ("animal", "human", "vehicle", "blank", "unknown", "unclassified")
#: Observation types that are a training label of their own (animals are labelled by taxon).
TYPE_LABELS = ("blank", "human", "vehicle")
_VERSION_IN_URL = re.compile(r"/camtrap-dp/([^/]+)/")
_MISSING = ("", "NA", "NaN", "nan")


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 date and time with its UTC offset (``...Z`` or ``...+02:00``); None otherwise."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV file as text (nothing guessed), UTF-8 with or without a byte-order mark.

    Raises:
        DataError: The file is missing, not UTF-8 or not CSV.
    """
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                        "save it as UTF-8 (in a spreadsheet: CSV UTF-8)") from None
    except FileNotFoundError:
        raise DataError(f"{what} does not exist. Received: '{path}'") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from None


def package_file(labels: Path) -> Path:
    """``datapackage.json`` from ``data.labels`` (the file or its folder)."""
    path = labels / CAMTRAPDP_PACKAGE_FILE if labels.is_dir() else labels
    if not path.is_file():
        raise DataError(f"data.labels must be a Camtrap DP datapackage.json or the folder holding it. "
                        f"Received: '{labels}'")
    return path


def read_descriptor(path: Path) -> dict:
    """``datapackage.json``, checked to be Camtrap DP of a version this reader understands.

    Raises:
        DataError: Not JSON, not Camtrap DP, or another version (the message names it).
    """
    try:
        descriptor = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"cannot read the Camtrap DP package {path}: {exc}") from None
    profile = descriptor.get("profile") if isinstance(descriptor, dict) else None
    if not isinstance(profile, str) or "camtrap-dp" not in profile:
        raise DataError(f"{path} is not a Camtrap DP package: its 'profile' must be the Camtrap DP profile URL "
                        f"({PROFILE_URL}). Received: profile={profile!r}")
    match = _VERSION_IN_URL.search(profile)
    version = match.group(1) if match else None
    if version not in READABLE_VERSIONS:
        raise DataError(f"{path} declares Camtrap DP version {version or 'unknown'} ({profile}); ecoclassify reads "
                        f"versions {', '.join(READABLE_VERSIONS)}. Received: profile={profile!r}")
    return descriptor


def _resource_path(descriptor: dict, name: str, folder: Path, where: Path) -> Path:
    for resource in descriptor.get("resources") or []:
        if isinstance(resource, dict) and resource.get("name") == name:
            relative = resource.get("path")
            if not isinstance(relative, str) or "://" in relative:
                raise DataError(f"{where}: resource {name!r} must have a relative 'path' to a CSV file in the "
                                f"package folder. Received: path={relative!r}")
            path = (folder / relative).resolve()
            if not path.is_relative_to(folder.resolve()):
                raise DataError(f"{where}: resource {name!r} leads outside the package folder {folder}. "
                                f"Received: path={relative!r}")
            return path
    raise DataError(f"{where} has no resource named {name!r}; a Camtrap DP package has deployments, media and "
                    "observations")


def read_camtrapdp(labels: Path, root: Path | None,
                   multi_label: str = "error") -> tuple[pd.DataFrame, Path, list[str], pd.DataFrame]:
    """Labelled images of a Camtrap DP package.

    Args:
        labels: ``datapackage.json`` or its folder (``data.labels``).
        root: Base of relative media paths and where media given as URLs are looked up by
            ``fileName`` (``data.root``); None: the package folder.
        multi_label: ``drop``: images with more than one label are left out and returned as
            excluded (``error: multiple_labels``); ``error``: they are kept for the caller to refuse.

    Returns:
        ``(samples, root, warnings, excluded)``: one row per image and label (``filepath``,
        ``label``, ``site``, ``datetime``, ``sequence``, ``deploymentID``, ``locationID``,
        ``mediaID``), and the images left out (``filepath``, ``label``, ``error``, ``detail``).

    Raises:
        DataError: The package is unreadable, of another version, lacks columns, or has no
            human observations.
    """
    path = package_file(labels)
    descriptor = read_descriptor(path)
    folder = path.parent
    root = root if root is not None else folder
    tables = {name: read_table(_resource_path(descriptor, name, folder, path), f"the {name} table of {path}")
              for name in TABLES}
    required = {"deployments": ("deploymentID",), "media": ("mediaID", "deploymentID", "timestamp", "filePath"),
                "observations": ("deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
                                 "observationType", "scientificName", "classificationMethod")}
    for name, columns in required.items():
        missing = [c for c in columns if c not in tables[name].columns]
        if missing:
            raise DataError(f"the {name} table of {path} lacks the column(s) {', '.join(missing)}. "
                            f"Found columns: {', '.join(tables[name].columns)}")
    warnings: list[str] = []
    observations = tables["observations"]
    human = observations[observations["classificationMethod"] == "human"]
    if not len(human):
        methods = observations["classificationMethod"].replace("", "(blank)").value_counts()
        found = ", ".join(f"{n} {method}" for method, n in methods.items()) or "none"
        raise DataError(f"{path} has no observations classified by a person (classificationMethod: human), and only "
                        f"those are used as training labels. Observations found: {found}")
    machine = len(observations) - len(human)
    if machine:
        warnings.append(f"{machine} observation(s) of {path} not classified by a person are not used as labels")
    human = human.assign(label=[_label(t, s) for t, s in zip(human["observationType"], human["scientificName"])])
    unlabelled = human[human["label"] == ""]
    if len(unlabelled):
        kinds = ", ".join(f"{n} {kind}" for kind, n in unlabelled["observationType"].value_counts().items())
        warnings.append(f"{len(unlabelled)} human observation(s) give no label ({kinds}) and are not used")
        human = human[human["label"] != ""]
    media = tables["media"]
    pairs = _media_labels(human, observations, media)
    locations = dict(zip(tables["deployments"]["deploymentID"], tables["deployments"].get(
        "locationID", pd.Series([""] * len(tables["deployments"])))))
    by_media = media.set_index("mediaID")
    rows, urls = [], 0
    for media_id, label, event_id in pairs:
        record = by_media.loc[media_id]
        file_path = record["filePath"]
        if "://" in file_path:
            name = record.get("fileName", "")
            if not name:
                urls += 1
                continue
            file_path = name
        deployment = record["deploymentID"]
        location = locations.get(deployment, "") or ""
        when = parse_timestamp(record["timestamp"])
        rows.append({"filepath": str(_absolute(file_path, root)), "label": label, "site": location or deployment,
                     "datetime": when.replace(tzinfo=None).isoformat(sep=" ") if when else "",
                     "sequence": event_id, "deploymentID": deployment, "locationID": location, "mediaID": media_id})
    if urls:
        warnings.append(f"{urls} labelled media of {path} are URLs without a fileName and are not used")
    columns = ["filepath", "label", "site", "datetime", "sequence", "deploymentID", "locationID", "mediaID"]
    frame = pd.DataFrame(rows, columns=columns).drop_duplicates(["filepath", "label"])
    excluded = pd.DataFrame(columns=["filepath", "label", "error", "detail"])
    if multi_label == "drop":
        frame, excluded = drop_multi_labelled(frame, f"of {path}", warnings)
    return frame, root, warnings, excluded


#: Column of a sample listing every label of its image's observations (crops from the package's own boxes).
BOX_LABELS_COLUMN = "box_labels"


def uses_own_boxes(labels: Path, detections: Path | None) -> bool:
    """Whether ``data.crops.detections`` is the package of ``data.labels`` (its folder or any file in it)."""
    if detections is None:
        return False
    try:
        package = package_file(labels).parent.resolve()
    except DataError:
        return False
    return (detections if detections.is_dir() else detections.parent).resolve() == package


def one_row_per_image(frame: pd.DataFrame, include: list[str] | None, exclude: list[str]) -> pd.DataFrame:
    """One sample per image when crops are cut from the package's own boxes.

    Each box is then labelled by its own observation, so an image of a deer and a fox is no
    multi-label image: it stays one sample (split as one), labelled with the first of its labels
    the label filter keeps, and :data:`BOX_LABELS_COLUMN` lists all of those labels so that every
    box's own label counts as one of the data's labels.
    """
    if frame.empty:
        return frame.assign(**{BOX_LABELS_COLUMN: ""})
    rows = []
    for _, group in frame.groupby("filepath", sort=False):
        labels = sorted(set(group["label"]))
        kept = [label for label in labels if label not in exclude and (include is None or label in include)]
        rows.append({**group.iloc[0].to_dict(), "label": (kept or labels)[0], BOX_LABELS_COLUMN: ";".join(kept)})
    return pd.DataFrame(rows, columns=[*frame.columns, BOX_LABELS_COLUMN])


def _label(kind: str, name: str) -> str:
    if kind == "animal":
        return name.strip()
    return kind if kind in TYPE_LABELS else ""


def _media_labels(human: pd.DataFrame, observations: pd.DataFrame,
                  media: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(mediaID, label, eventID)`` per labelled image: media-level labels, else their event's."""
    known = set(media["mediaID"])
    media_level = human[human["observationLevel"] == "media"]
    pairs = {(m, label, e) for m, label, e in zip(media_level["mediaID"], media_level["label"],
                                                  media_level["eventID"]) if m in known}
    labelled = {m for m, _, _ in pairs}
    events = human[human["observationLevel"] == "event"]
    if len(events):
        linked = observations[(observations["eventID"] != "") & (observations["mediaID"] != "")]
        members: dict[str, set[str]] = {}
        for event, media_id in zip(linked["eventID"], linked["mediaID"]):
            members.setdefault(event, set()).add(media_id)
        timeline: dict[str, list[tuple[dt.datetime, str]]] = {}
        for media_id, deployment, text in zip(media["mediaID"], media["deploymentID"], media["timestamp"]):
            when = parse_timestamp(text)
            if when is not None:
                timeline.setdefault(deployment, []).append((when, media_id))
        sorted_times = {d: ([w for w, _ in sorted(line)], [m for _, m in sorted(line)]) for d, line in timeline.items()}
        for deployment, event, start, end, label in zip(events["deploymentID"], events["eventID"],
                                                        events["eventStart"], events["eventEnd"], events["label"]):
            ids = set(members.get(event, ())) if event else set()
            first, last = parse_timestamp(start), parse_timestamp(end)
            times, media_ids = sorted_times.get(deployment, ([], []))
            if first is not None and last is not None:
                ids |= set(media_ids[bisect.bisect_left(times, first):bisect.bisect_right(times, last)])
            pairs |= {(m, label, event) for m in ids if m in known and m not in labelled}
    return sorted(pairs)


def _absolute(path: str, root: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root) / candidate

