"""``ecoclassify camtrapdp`` refuses bad input with a clear message and writes nothing.

The predictions are csv files as ``ecoclassify predict`` writes them (no model is needed to
export, so none is run here); the real predict run is in ``test_camtrapdp.py``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.prediction.camtrapdp import export_camtrapdp

HEADER = ["deploymentID", "locationID", "latitude", "longitude", "deploymentStart", "deploymentEnd"]
CAM01 = ["CAM01", "L1", "50.1", "4.2", "2024-05-01T08:00:00+02:00", "2024-06-01T08:00:00+02:00"]
CAM02 = ["CAM02", "L2", "50.2", "4.3", "2024-05-01T08:00:00+02:00", "2024-06-01T08:00:00+02:00"]


def write_predictions(path: Path, rows: list[tuple[str, str, str, float, str]], root: str = "/data/cards") -> Path:
    """A predictions csv: ``(filepath, status, label, score, datetime)`` per image; classes deer and fox."""
    records = []
    for filepath, status, label, score, when in rows:
        ok = status == "ok"
        records.append({"filepath": filepath, "root": root, "status": status, "error": "" if ok else "truncated",
                        "detail": "", "label": label if ok else "", "score": score if ok else "",
                        "top1_label": label if ok else "", "top1_score": score if ok else "",
                        "prob_deer": (score if label == "deer" else 1 - score) if ok else "",
                        "prob_fox": (score if label == "fox" else 1 - score) if ok else "",
                        "datetime": when, "width": 64, "height": 48})
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def write_rows(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    predictions = write_predictions(tmp_path / "predictions.csv", [
        ("CAM01/DCIM/IMG_0001.JPG", "ok", "deer", 0.9, "2024-05-02 06:00:00"),
        ("CAM01/DCIM/IMG_0002.JPG", "ok", "unknown", 0.4, "2024-05-02 06:00:05"),
        ("CAM02/IMG_0001.JPG", "ok", "fox", 0.8, "2024-05-03 23:10:00"),
    ])
    write_rows(tmp_path / "taxonomy.csv", ["class", "scientificName"], [["deer", "Capreolus capreolus"],
                                                                         ["fox", "Vulpes vulpes"]])
    (tmp_path / "project.yaml").write_text("contributors: [{title: Jane Doe}]\n"
                                           "project: {title: Test, samplingDesign: targeted}\n", encoding="utf-8")
    return {"predictions": predictions, "deployments": write_rows(tmp_path / "deployments.csv", HEADER, [CAM01, CAM02]),
            "taxonomy": tmp_path / "taxonomy.csv", "metadata": tmp_path / "project.yaml", "output": tmp_path / "pkg"}


def export(inputs: dict[str, Path], **options):
    return export_camtrapdp(inputs["predictions"], inputs["deployments"], inputs["taxonomy"], inputs["metadata"],
                            inputs["output"], **options)


def read(inputs: dict[str, Path], name: str) -> pd.DataFrame:
    return pd.read_csv(inputs["output"] / f"{name}.csv", dtype=str, keep_default_na=False)


def test_the_media_timestamp_is_the_exif_time_with_the_deployments_utc_offset(inputs):
    export(inputs)
    media = read(inputs, "media").set_index("filePath")
    assert media.loc["CAM01/DCIM/IMG_0001.JPG", "timestamp"] == "2024-05-02T06:00:00+02:00"
    observations = read(inputs, "observations").set_index("mediaID")
    assert observations.loc[media.loc["CAM02/IMG_0001.JPG", "mediaID"], "scientificName"] == "Vulpes vulpes"
    below = observations.loc[media.loc["CAM01/DCIM/IMG_0002.JPG", "mediaID"]]
    assert (below["observationType"], below["scientificName"], below["classificationProbability"]) == \
        ("unclassified", "", "0.4")


def test_deployments_missing_required_columns_are_named(inputs):
    write_rows(inputs["deployments"], ["deploymentID", "locationID", "latitude", "deploymentStart"],
               [["CAM01", "L1", "50.1", "2024-05-01T08:00:00+02:00"]])
    with pytest.raises(DataError, match="lacks the required column.s. longitude, deploymentEnd"):
        export(inputs)
    assert not inputs["output"].exists()


def test_coordinates_out_of_range_are_refused_with_the_line(inputs):
    write_rows(inputs["deployments"], HEADER, [CAM01, ["CAM02", "L2", "95.0", "4.3", *CAM02[4:]]])
    with pytest.raises(DataError, match=r"line 3: latitude must be between -90 and 90. Received: 95.0"):
        export(inputs)


def test_a_deployment_time_without_utc_offset_is_refused(inputs):
    write_rows(inputs["deployments"], HEADER, [CAM01, [*CAM02[:4], "2024-05-01T08:00:00", CAM02[5]]])
    with pytest.raises(DataError, match=r"deploymentStart must be an ISO 8601 date and time with its UTC offset"):
        export(inputs)


def test_images_of_no_deployment_are_an_error_naming_their_folders_and_counts(inputs):
    write_rows(inputs["deployments"], HEADER, [CAM01])
    with pytest.raises(DataError, match=r"1 image\(s\) are in no folder named like a deploymentID.*"
                                        r"/data/cards/CAM02 \(1\).*--skip-unmatched"):
        export(inputs)
    assert not inputs["output"].exists()


def test_skip_unmatched_lists_them_in_unexported_csv(inputs):
    write_rows(inputs["deployments"], HEADER, [CAM01])
    result = export(inputs, skip_unmatched=True)
    assert result.unexported == {"no_deployment": 1}
    unexported = read(inputs, "unexported")
    assert unexported[["filepath", "reason"]].values.tolist() == [["CAM02/IMG_0001.JPG", "no_deployment"]]
    assert len(read(inputs, "media")) == 2


def test_a_deployment_column_names_the_deployment_instead_of_the_folder(inputs):
    frame = pd.read_csv(inputs["predictions"], dtype=str, keep_default_na=False)
    frame["site"] = ["CAM02", "CAM02", "CAM01"]
    frame.to_csv(inputs["predictions"], index=False)
    export(inputs, deployment_column="site")
    media = read(inputs, "media").set_index("filePath")
    assert media.loc["CAM02/IMG_0001.JPG", "deploymentID"] == "CAM01"
    with pytest.raises(ConfigError, match="--deployment-column must be a column of the predictions.*'camera'"):
        export(inputs, deployment_column="camera", overwrite=True)


def test_overlapping_deployments_at_one_location_are_refused(inputs):
    later = ["CAM02", "L1", "50.1", "4.2", "2024-05-20T08:00:00+02:00", "2024-07-01T08:00:00+02:00"]
    write_rows(inputs["deployments"], HEADER, [CAM01, later])
    with pytest.raises(DataError, match="deployments CAM01 and CAM02 at location L1 overlap in time"):
        export(inputs)


def test_duplicate_media_paths_are_refused(inputs):
    frame = pd.read_csv(inputs["predictions"], dtype=str, keep_default_na=False)
    pd.concat([frame, frame.iloc[[0]]]).to_csv(inputs["predictions"], index=False)
    with pytest.raises(DataError, match=r"lists 1 image\(s\) more than once.*/data/cards/CAM01/DCIM/IMG_0001.JPG"):
        export(inputs)


def test_a_deployments_file_that_is_not_utf8_is_refused_with_a_hint(inputs):
    write_rows(inputs["deployments"], [*HEADER, "locationName"], [[*CAM01, "Forêt de Soignes"]], encoding="latin-1")
    with pytest.raises(DataError, match=r"is not UTF-8 text .*save it as UTF-8"):
        export(inputs)


def test_classes_missing_from_the_taxonomy_are_listed(inputs):
    write_rows(inputs["taxonomy"], ["class", "scientificName"], [["deer", "Capreolus capreolus"]])
    with pytest.raises(DataError, match=r"does not map the model's class\(es\) fox"):
        export(inputs)


def test_blank_human_and_vehicle_classes_become_those_observation_types(inputs):
    write_predictions(inputs["predictions"], [(f"CAM01/{label}.jpg", "ok", label, 0.9, "2024-05-02 06:00:00")
                                              for label in ("deer", "empty", "person", "car")])
    frame = pd.read_csv(inputs["predictions"])
    for name in ("empty", "person", "car"):
        frame[f"prob_{name}"] = (frame["label"] == name) * 0.9
    frame.to_csv(inputs["predictions"], index=False)
    write_rows(inputs["taxonomy"], ["class", "scientificName"],
               [["deer", "Capreolus capreolus"], ["fox", "Vulpes vulpes"], ["empty", ""], ["person", ""], ["car", ""]])
    export(inputs)
    media = read(inputs, "media").set_index("mediaID")
    observations = read(inputs, "observations")
    kinds = {media.loc[m, "fileName"]: (kind, name) for m, kind, name in
             zip(observations["mediaID"], observations["observationType"], observations["scientificName"])}
    assert kinds == {"deer.jpg": ("animal", "Capreolus capreolus"), "empty.jpg": ("blank", ""),
                     "person.jpg": ("human", ""), "car.jpg": ("vehicle", "")}
    assert media.set_index("fileName")["filePublic"].to_dict() == {"deer.jpg": "true", "empty.jpg": "true",
                                                                   "person.jpg": "false", "car.jpg": "true"}


def test_images_without_time_outside_their_deployment_or_unreadable_are_listed_with_the_reason(inputs):
    write_predictions(inputs["predictions"], [
        ("CAM01/a.jpg", "ok", "deer", 0.9, ""),
        ("CAM01/b.jpg", "ok", "deer", 0.9, "2023-01-01 00:00:00"),
        ("CAM01/c.jpg", "failed", "", 0.0, ""),
        ("CAM01/d.jpg", "ok", "fox", 0.7, "2024-05-05 12:00:00"),
        ("CAM01/e.jpg", "ok", "fox", 0.7, "yesterday"),
    ])
    result = export(inputs)
    assert result.media == 1
    assert read(inputs, "unexported")[["filepath", "reason", "detail"]].values.tolist() == [
        ["CAM01/a.jpg", "no_timestamp", "no EXIF capture time"],
        ["CAM01/b.jpg", "outside_deployment", "taken 2023-01-01T00:00:00+02:00, outside deployment CAM01 "
                                              "(2024-05-01T08:00:00+02:00 to 2024-06-01T08:00:00+02:00)"],
        ["CAM01/c.jpg", "failed", "truncated"],
        ["CAM01/e.jpg", "no_timestamp", "datetime 'yesterday' is not YYYY-MM-DD HH:MM:SS"]]


def test_time_from_mtime_reads_the_files_modification_time_as_local_camera_time(inputs, tmp_path):
    image = tmp_path / "cards" / "CAM01" / "a.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"not read")
    when = pd.Timestamp("2024-05-10 13:14:15").to_pydatetime()
    os.utime(image, (when.timestamp(), when.timestamp()))
    write_predictions(inputs["predictions"], [("CAM01/a.jpg", "ok", "deer", 0.9, "")], root=str(tmp_path / "cards"))
    export(inputs, time_from="mtime")
    assert read(inputs, "media")["timestamp"].tolist() == ["2024-05-10T13:14:15+02:00"]


def test_metadata_without_a_sampling_design_is_a_config_error(inputs):
    inputs["metadata"].write_text("contributors: [{title: Jane Doe}]\nproject: {title: Test}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"project.samplingDesign must be one of: simpleRandom.*Received: None"):
        export(inputs)


def test_the_command_reports_bad_deployments_in_one_line_and_exits_1(inputs):
    write_rows(inputs["deployments"], HEADER, [CAM01, ["CAM02", "L2", "50.2", "200", *CAM02[4:]]])
    result = subprocess.run([sys.executable, "-c", "from ecoclassify.cli import main; main()", "camtrapdp",
                             str(inputs["predictions"]), "--deployments", str(inputs["deployments"]),
                             "--taxonomy", str(inputs["taxonomy"]), "--metadata", str(inputs["metadata"]),
                             "-o", str(inputs["output"])], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Error: " in result.stderr and "longitude must be between -180 and 180. Received: 200" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_commands_spelled_out_choices_equal_the_librarys():
    from ecoclassify.cli.camtrapdp_command import TIME_SOURCES as CLI_TIME_SOURCES
    from ecoclassify.prediction.camtrapdp import TIME_SOURCES

    assert CLI_TIME_SOURCES == TIME_SOURCES


def test_the_package_never_replaces_its_own_input_files_even_with_overwrite(inputs, tmp_path):
    before = inputs["deployments"].read_bytes()
    with pytest.raises(RunError, match=r"would replace its own input file\(s\) .*deployments.csv"):
        export({**inputs, "output": tmp_path}, overwrite=True)
    assert inputs["deployments"].read_bytes() == before
    assert not (tmp_path / "media.csv").exists()
