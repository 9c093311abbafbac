"""``data.source: camtrapdp``: a Camera Trap Data Package's human observations as training labels.

Small packages are written by the tests; the standard's own example (media as URLs) is read from
``../shared/standards`` when present. The export -> import round trip on a real predict run is in
``tests/prediction/test_camtrapdp.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ecoclassify.config import DataConfig
from ecoclassify.data.camtrapdp import MEDIA_COLUMNS, OBSERVATION_COLUMNS, PROFILE_URL
from ecoclassify.data.sources import load_source
from ecoclassify.errors import DataError

MEDIA = [("m1", "2024-05-02T06:00:00+02:00", "D1/a.jpg"), ("m2", "2024-05-02T06:00:02+02:00", "D1/b.jpg"),
         ("m3", "2024-05-02T07:00:00+02:00", "D1/c.jpg"), ("m4", "2024-05-02T09:00:00+02:00", "D1/d.jpg")]


def observation(**values: str) -> dict[str, str]:
    return {column: values.get(column, "") for column in OBSERVATION_COLUMNS}


def write_package(folder: Path, observations: list[dict[str, str]], profile: str = PROFILE_URL,
                  media: list[tuple[str, str, str]] = MEDIA) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"deploymentID": "D1", "locationID": "L1", "latitude": 50, "longitude": 4,
                   "deploymentStart": "2024-05-01T00:00:00+02:00", "deploymentEnd": "2024-06-01T00:00:00+02:00"}]
                 ).to_csv(folder / "deployments.csv", index=False)
    pd.DataFrame([{**{c: "" for c in MEDIA_COLUMNS}, "mediaID": m, "deploymentID": "D1", "timestamp": t,
                   "filePath": p, "filePublic": "true", "fileMediatype": "image/jpeg"} for m, t, p in media]
                 ).to_csv(folder / "media.csv", index=False)
    pd.DataFrame(observations, columns=OBSERVATION_COLUMNS).to_csv(folder / "observations.csv", index=False)
    resources = [{"name": name, "path": f"{name}.csv", "profile": "tabular-data-resource"}
                 for name in ("deployments", "media", "observations")]
    (folder / "datapackage.json").write_text(json.dumps({"profile": profile, "resources": resources}),
                                             encoding="utf-8")
    return folder


def labels_of(result) -> dict[str, str]:
    return {Path(fp).name: label for fp, label in zip(result.samples["filepath"], result.samples["label"])}


def test_an_event_label_applies_to_its_media_and_a_media_label_wins(tmp_path):
    package = write_package(tmp_path / "pkg", [
        observation(observationID="e", deploymentID="D1", eventID="e1", eventStart="2024-05-02T04:00:00Z",
                    eventEnd="2024-05-02T04:00:02Z", observationLevel="event", observationType="animal",
                    scientificName="Vulpes vulpes", classificationMethod="human"),
        observation(observationID="o2", deploymentID="D1", mediaID="m2", eventID="e1", observationLevel="media",
                    observationType="blank", classificationMethod="human"),
        # m4 lies outside the event's window but is linked to it by eventID (by the machine).
        observation(observationID="o4", deploymentID="D1", mediaID="m4", eventID="e1", observationLevel="media",
                    observationType="animal", scientificName="Meles meles", classificationMethod="machine"),
    ])
    result = load_source(DataConfig(source="camtrapdp", labels=package / "datapackage.json"))
    assert labels_of(result) == {"a.jpg": "Vulpes vulpes", "b.jpg": "blank", "d.jpg": "Vulpes vulpes"}
    assert set(result.samples["site"]) == {"L1"} and set(result.samples["sequence"]) == {"e1"}
    assert result.samples.set_index("mediaID").loc["m1", "datetime"] == "2024-05-02 06:00:00"
    assert any("1 observation(s)" in w and "not classified by a person" in w for w in result.warnings)


def test_a_package_of_another_camtrap_dp_version_is_refused_naming_it(tmp_path):
    package = write_package(tmp_path / "pkg", [], profile="https://raw.githubusercontent.com/tdwg/camtrap-dp/0.1.7/"
                                                          "camtrap-dp-profile.json")
    with pytest.raises(DataError, match=r"declares Camtrap DP version 0.1.7 .*reads versions 1.0, 1.0.1, 1.0.2"):
        load_source(DataConfig(source="camtrapdp", labels=package))


def test_a_package_without_human_observations_says_so(tmp_path):
    package = write_package(tmp_path / "pkg", [
        observation(observationID="o1", deploymentID="D1", mediaID="m1", observationLevel="media",
                    observationType="animal", scientificName="Vulpes vulpes", classificationMethod="machine")])
    with pytest.raises(DataError, match=r"no observations classified by a person.*Observations found: 1 machine"):
        load_source(DataConfig(source="camtrapdp", labels=package))


def test_a_table_that_is_not_utf8_is_refused(tmp_path):
    package = write_package(tmp_path / "pkg", [])
    (package / "observations.csv").write_bytes(",".join(OBSERVATION_COLUMNS).encode() + b"\nx,D1,m1,,,,media,"
                                               b"animal,,Lutra lutra \xe9,,,,,,,,,,,,,human,,,,,\n")
    with pytest.raises(DataError, match=r"observations table .* is not UTF-8 text"):
        load_source(DataConfig(source="camtrapdp", labels=package))


def test_media_paths_leading_outside_the_package_are_left_out_unopened(tmp_path):
    media = [*MEDIA[:1], ("m9", "2024-05-02T06:00:00+02:00", "../elsewhere/secret.jpg")]
    package = write_package(tmp_path / "pkg", [
        observation(observationID=f"o{m}", deploymentID="D1", mediaID=m, observationLevel="media",
                    observationType="blank", classificationMethod="human") for m in ("m1", "m9")], media=media)
    result = load_source(DataConfig(source="camtrapdp", labels=package))
    assert labels_of(result) == {"a.jpg": "blank"}
    assert result.excluded[["label", "error"]].values.tolist() == [["blank", "outside_root"]]


def test_the_source_needs_a_labels_package():
    from ecoclassify.errors import ConfigError
    from ecoclassify.config import Config

    with pytest.raises(ConfigError, match="labels is required for source 'camtrapdp'"):
        Config.from_dict({"data": {"source": "camtrapdp"}})


@pytest.mark.shared
def test_the_standards_example_package_reads_with_media_found_by_file_name(shared_dir, tmp_path):
    example = shared_dir / "standards" / "camtrap-dp-1.0.2" / "example"
    result = load_source(DataConfig(source="camtrapdp", labels=example, root=example / "media", multi_label="drop"))
    by_media = result.samples.set_index("mediaID")
    assert by_media.loc["07840dcc", "label"] == "Anas platyrhynchos"
    assert by_media.loc["07840dcc", "site"] == "e254a13c"  # the locationID of deployment 00a2c20d
    assert Path(by_media.loc["07840dcc", "filepath"]) == example / "media" / "20200709093328-RCNX0001.JPG"
    assert set(result.samples["label"]) >= {"blank", "human", "vehicle", "Vulpes vulpes"}
    assert (result.excluded["error"] == "multiple_labels").sum() == 40
