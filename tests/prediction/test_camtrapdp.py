"""``ecoclassify camtrapdp``: a real predict run on real camera-trap photos, exported as Camtrap DP 1.0.2,
validated offline against the official schemas, and read back as training data.

The official schemas and the standard's example are in ``../shared/standards/camtrap-dp-1.0.2``
(skipped when absent). Validation uses ``frictionless`` for the three Table Schemas (their URLs
mapped to the local files) and ``jsonschema`` for ``camtrap-dp-profile.json``, whose references to
the Frictionless Data Package schema and to GeoJSON resolve to the copies ``frictionless`` ships.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ecoclassify.config import DataConfig
from ecoclassify.data.camtrapdp import DEPLOYMENT_COLUMNS, MEDIA_COLUMNS, OBSERVATION_COLUMNS, schema_url
from ecoclassify.data.sources import load_source
from ecoclassify.prediction.camtrapdp import export_camtrapdp
from tests.prediction._predict_support import tiny_model_dir

SHARED = Path(__file__).resolve().parents[3] / "shared"
STANDARD = SHARED / "standards" / "camtrap-dp-1.0.2"
PHOTOS = SHARED / "data" / "camera-traps"
pytestmark = pytest.mark.shared

DEPLOYMENTS = [  # camtrapR's sample stations (Sabah, Borneo: UTC+08:00)
    ["StationA", "LocA", "5.12", "117.45", "2009-04-01T00:00:00+08:00", "2009-06-01T00:00:00+08:00"],
    ["StationB", "LocB", "5.13", "117.46", "2009-04-01T00:00:00+08:00", "2009-06-01T00:00:00+08:00"],
    ["StationC", "LocC", "5.14", "117.47", "2009-04-01T00:00:00+08:00", "2009-06-01T00:00:00+08:00"],
]
TAXONOMY = [["deer", "Muntiacus muntjak", "species", "red muntjac"],
            ["fox", "Paradoxurus hermaphroditus", "species", "common palm civet"],
            ["owl", "Strigiformes", "order", "owls"]]
PROJECT_YAML = """\
title: ecoclassify test package
contributors:
  - {title: Jane Doe, email: jane@example.org, role: contact, organization: Example Institute}
licenses:
  - {name: CC0-1.0, scope: data}
  - {name: CC-BY-4.0, scope: media}
project:
  title: Sample stations
  samplingDesign: opportunistic
  captureMethod: [activityDetection]
  individualAnimals: false
"""


def _require_shared() -> None:
    if not STANDARD.is_dir() or not PHOTOS.is_dir():
        pytest.skip("../shared not present (a user's clone): real camera-trap data and weights are only in CI")


def write_inputs(folder: Path, deployments: list[list[str]] = DEPLOYMENTS) -> dict[str, Path]:
    """deployments.csv, taxonomy.csv and project.yaml in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "deployments.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["deploymentID", "locationID", "latitude", "longitude", "deploymentStart", "deploymentEnd"])
        writer.writerows(deployments)
    with open(folder / "taxonomy.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "scientificName", "taxonRank", "vernacularName"])
        writer.writerows(TAXONOMY)
    (folder / "project.yaml").write_text(PROJECT_YAML, encoding="utf-8")
    return {"deployments": folder / "deployments.csv", "taxonomy": folder / "taxonomy.csv",
            "metadata": folder / "project.yaml"}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict[str, Path]:
    """Real photos in one folder per camera, predicted with sequences by a real tiny model (json output)."""
    _require_shared()
    from ecoclassify.prediction.labelling import predict

    folder = tmp_path_factory.mktemp("camtrapdp-run")
    cards = folder / "cards"
    camtrapr = sorted((PHOTOS / "camtrapr-sample-images" / "images").rglob("Station*.JPG"))
    for station, count in (("StationA", 8), ("StationB", 6)):
        for photo in [p for p in camtrapr if p.name.startswith(station)][:count]:
            target = cards / station / "DCIM" / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
    speciesnet = PHOTOS / "speciesnet-test-data" / "images"
    (cards / "StationC").mkdir(parents=True)
    shutil.copyfile(speciesnet / "american_black_bear" / "american_black_bear.jpg", cards / "StationC" / "bear.jpg")
    shutil.copyfile(speciesnet / "blank" / "blank.jpg", cards / "StationC" / "blank_2016.jpg")  # outside 2009
    (cards / "StationB" / "DCIM" / "broken.JPG").write_bytes(b"\xff\xd8\xff")
    model = tiny_model_dir(tmp_path_factory)
    predict(model, cards, sequence_gap=300, output=folder / "predictions.json", fmt="json")
    return {"cards": cards, "predictions": folder / "predictions.json", **write_inputs(folder / "inputs")}


def export(run: dict[str, Path], output: Path, **options) -> object:
    return export_camtrapdp(run["predictions"], run["deployments"], run["taxonomy"], run["metadata"], output,
                            **options)


def validation_errors(package: Path) -> list[str]:
    """Every error of ``package`` against the official 1.0.2 schemas, offline."""
    import frictionless
    import jsonschema
    import referencing
    from referencing.jsonschema import DRAFT4

    descriptor = json.loads((package / "datapackage.json").read_text(encoding="utf-8"))
    errors = []
    local = {schema_url(name): json.loads((STANDARD / f"{name}-table-schema.json").read_text(encoding="utf-8"))
             for name in ("deployments", "media", "observations")}
    offline = json.loads(json.dumps(descriptor))
    offline["profile"] = "data-package"  # the Camtrap DP profile is checked with jsonschema below, offline
    for resource in offline["resources"]:
        if resource.get("schema") in local:
            resource["schema"] = local[resource["schema"]]
    report = frictionless.Package(offline, basepath=str(package)).validate()
    errors += [f"{task.name}: {error.type}: {error.message}" for task in report.tasks for error in task.errors]
    errors += [f"package: {error.type}: {error.message}" for error in report.errors]
    geojson = Path(frictionless.__file__).parent / "assets" / "profiles" / "geojson.json"
    registry = referencing.Registry().with_resources([
        ("https://specs.frictionlessdata.io/schemas/data-package.json",
         referencing.Resource.from_contents(frictionless.Package.metadata_profile, default_specification=DRAFT4)),
        ("http://json.schemastore.org/geojson.json",
         referencing.Resource.from_contents(json.loads(geojson.read_text(encoding="utf-8")),
                                            default_specification=DRAFT4)),
    ])
    profile = json.loads((STANDARD / "camtrap-dp-profile.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(profile, registry=registry,
                                           format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors += [f"datapackage.json: {'/'.join(map(str, e.absolute_path))}: {e.message}"
               for e in validator.iter_errors(descriptor)]
    return errors


def table(package: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(package / f"{name}.csv", dtype=str, keep_default_na=False)


def test_the_column_lists_follow_the_official_schemas():
    _require_shared()
    for name, columns in (("deployments", DEPLOYMENT_COLUMNS), ("media", MEDIA_COLUMNS),
                          ("observations", OBSERVATION_COLUMNS)):
        schema = json.loads((STANDARD / f"{name}-table-schema.json").read_text(encoding="utf-8"))
        assert tuple(field["name"] for field in schema["fields"]) == columns


def test_the_offline_validation_passes_the_standards_example_and_catches_a_broken_copy(tmp_path):
    _require_shared()
    assert validation_errors(STANDARD / "example") == []
    broken = shutil.copytree(STANDARD / "example", tmp_path / "example", ignore=shutil.ignore_patterns("media"))
    media = table(broken, "media")
    media.loc[0, "timestamp"] = "2020-05-30 04:57:37"  # no UTC offset
    media.to_csv(broken / "media.csv", index=False)
    descriptor = json.loads((broken / "datapackage.json").read_text(encoding="utf-8"))
    del descriptor["project"]["samplingDesign"]
    (broken / "datapackage.json").write_text(json.dumps(descriptor), encoding="utf-8")
    errors = validation_errors(broken)
    assert any(e.startswith("media: type-error") for e in errors), errors
    assert any("samplingDesign" in e for e in errors), errors


def test_a_real_predict_run_exports_a_package_with_zero_validation_errors(real_run, tmp_path):
    result = export(real_run, tmp_path / "package")
    package = tmp_path / "package"
    assert validation_errors(package) == []
    media, observations = table(package, "media"), table(package, "observations")
    assert result.media == len(media) == 14 and result.deployments == 3
    assert media["timestamp"].str.endswith("+08:00").all()
    first = media[media["fileName"] == "StationA__2009-04-10__05-07-00(1).JPG"].iloc[0]
    assert first["timestamp"] == "2009-04-10T05:07:00+08:00"
    assert first["filePath"] == "StationA/DCIM/StationA__2009-04-10__05-07-00(1).JPG"
    assert set(observations["classificationMethod"]) == {"machine"}
    assert observations["classifiedBy"].str.startswith("ecoclassify ").all()
    events = observations[observations["observationLevel"] == "event"]
    assert len(events) == result.events > 0
    assert set(events["eventID"]) <= set(observations.loc[observations["observationLevel"] == "media", "eventID"])
    unexported = table(package, "unexported").set_index("filepath")["reason"].to_dict()
    assert unexported == {"StationC/bear.jpg": "no_timestamp", "StationC/blank_2016.jpg": "outside_deployment",
                          "StationB/DCIM/broken.JPG": "failed"}
    descriptor = json.loads((package / "datapackage.json").read_text(encoding="utf-8"))
    assert descriptor["temporal"]["start"].startswith("2009-04")
    assert descriptor["project"]["observationLevel"] == ["media", "event"]


def test_a_score_below_min_score_is_unclassified_with_its_probability_kept(real_run, tmp_path):
    export(real_run, tmp_path / "package", min_score=1.0)
    media_level = table(tmp_path / "package", "observations").query("observationLevel == 'media'")
    assert set(media_level["observationType"]) == {"unclassified"}
    assert (media_level["scientificName"] == "").all()
    assert media_level["classificationProbability"].astype(float).between(0, 1).all()
    assert validation_errors(tmp_path / "package") == []


def test_the_package_reads_back_as_training_data_with_the_same_labels(real_run, tmp_path):
    package = tmp_path / "package"
    export(real_run, package)
    observations = table(package, "observations")
    # A person reviews the machine's observations (as in Agouti or Timelapse) before training on them.
    observations["classificationMethod"] = "human"
    observations.to_csv(package / "observations.csv", index=False)
    media = table(package, "media").set_index("mediaID")
    media_level = observations[observations["observationLevel"] == "media"]
    expected = {str(real_run["cards"] / media.loc[m, "filePath"]): (name if kind == "animal" else kind)
                for m, kind, name in zip(media_level["mediaID"], media_level["observationType"],
                                         media_level["scientificName"]) if kind != "unclassified"}

    result = load_source(DataConfig(source="camtrapdp", labels=package, root=real_run["cards"]))

    assert dict(zip(result.samples["filepath"], result.samples["label"])) == expected
    assert set(result.samples["site"]) <= {"LocA", "LocB"}
    assert len(result.excluded) == 0


def test_an_existing_package_folder_is_kept_without_overwrite(real_run, tmp_path):
    from ecoclassify.errors import RunError

    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="--overwrite"):
        export(real_run, tmp_path / "package")
    assert [p.name for p in (tmp_path / "package").iterdir()] == ["notes.txt"]
    export(real_run, tmp_path / "package", overwrite=True)
    assert (tmp_path / "package" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "package" / "datapackage.json").is_file()


def test_the_command_writes_the_package_and_loads_no_tensorflow(real_run, tmp_path):
    code = ("import sys; from ecoclassify.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exit:\n"
            "    assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n    raise\n")
    result = subprocess.run([sys.executable, "-c", code, "camtrapdp", str(real_run["predictions"]),
                             "--deployments", str(real_run["deployments"]), "--taxonomy", str(real_run["taxonomy"]),
                             "--metadata", str(real_run["metadata"]), "-o", str(tmp_path / "package")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "14 media" in result.stdout and "3 image(s) not exported" in result.stdout
    assert (tmp_path / "package" / "datapackage.json").is_file()


def test_validate_reads_every_image_of_a_reviewed_package(real_run, tmp_path):
    from ecoclassify.config import Config
    from ecoclassify.data.validation import validate

    package = tmp_path / "package"
    export(real_run, package)
    observations = table(package, "observations")
    observations["classificationMethod"] = "human"
    observations.to_csv(package / "observations.csv", index=False)
    config = Config.from_dict({"data": {"source": "camtrapdp", "labels": str(package / "datapackage.json"),
                                        "root": str(real_run["cards"]), "image_size": 32, "min_images_per_class": 1,
                                        "split": {"method": "group", "group_by": "site", "val": 0.2, "test": 0.2}},
                               "model": {"backbone": "custom_cnn", "weights": "none"}})
    prepared = validate(config)
    assert len(prepared.samples) == 14 and len(prepared.excluded) == 0
    assert set(prepared.samples["site"]) == {"LocA", "LocB"}


def test_a_package_with_every_observation_type_and_optional_deployment_columns_validates(tmp_path):
    _require_shared()
    from tests.prediction.test_camtrapdp_inputs import write_predictions

    labels = ["deer", "fox", "empty", "person", "car", "unknown"]
    write_predictions(tmp_path / "predictions.csv", [
        (f"CAM{i // 12 + 1:02d}/IMG_{i:04d}.JPG", "ok", labels[i % 6], 0.3 + 0.1 * (i % 6),
         f"2024-05-02 06:{i:02d}:00") for i in range(24)] + [("CAM01/broken.JPG", "failed", "", 0.0, "")])
    frame = pd.read_csv(tmp_path / "predictions.csv")
    for name in ("empty", "person", "car"):
        frame[f"prob_{name}"] = 0.0
    frame["sequence_id"] = [i // 3 if i < 24 else None for i in range(len(frame))]
    frame["sequence_id"] = frame["sequence_id"].astype("Int64")
    frame["sequence_label"] = [labels[(i // 3) % 6] if i < 24 else "" for i in range(len(frame))]
    frame["sequence_score"] = [0.7 if i < 24 else None for i in range(len(frame))]
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    inputs = write_inputs(tmp_path / "inputs", deployments=[])
    pd.DataFrame([{"deploymentID": f"CAM0{n}", "locationID": f"L{n}", "locationName": "Forêt", "latitude": -33.5,
                   "longitude": 151.2 + n / 100, "coordinateUncertainty": "30", "deploymentStart":
                   "2024-05-01T08:00:00+10:00", "deploymentEnd": "2024-06-01T08:00:00+10:00", "cameraModel":
                   "Reconyx-HF2X", "cameraDelay": "0", "cameraHeight": "0.5", "cameraTilt": "-15",
                   "cameraHeading": "270", "timestampIssues": "FALSE", "baitUse": "true", "featureType": "trailGame",
                   "habitat": "dry forest", "deploymentTags": "area:north"} for n in (1, 2)]
                 ).to_csv(inputs["deployments"], index=False)
    pd.DataFrame({"class": ["deer", "fox", "empty", "person", "car"],
                  "scientificName": ["Capreolus capreolus", "Vulpes vulpes", "", "", ""]}
                 ).to_csv(inputs["taxonomy"], index=False)
    result = export_camtrapdp(tmp_path / "predictions.csv", inputs["deployments"], inputs["taxonomy"],
                              inputs["metadata"], tmp_path / "package", min_score=0.35)
    assert validation_errors(tmp_path / "package") == []
    observations = table(tmp_path / "package", "observations")
    assert set(observations["observationType"]) == {"animal", "blank", "human", "vehicle", "unclassified"}
    assert result.events == 8 and result.unexported == {"failed": 1}
    assert table(tmp_path / "package", "deployments")["timestampIssues"].tolist() == ["false", "false"]
