"""MegaDetector-format output read by MegaDetector's own tools: validator, csv conversion, separation."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.prediction._predict_support import coloured, exif_time, jpeg_bytes, run_cli, tiny_model_dir

from ecoclassify.errors import ConfigError
from ecoclassify.prediction.md_categories import default_md_category, parse_md_category_options, resolve_md_categories
from ecoclassify.models.io import load_classifier
from ecoclassify.prediction.labelling import predict

# The tiny model learns the colours deer, fox, owl; here they are called blank, fox and human.
COLOUR_OF = {"blank": "deer", "fox": "fox", "human": "owl"}
START = dt.datetime(2024, 5, 6, 13, 45, 0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("field-model") / "field-run"
    shutil.copytree(tiny_model_dir(tmp_path_factory), folder)
    (folder / "labels.json").write_text(json.dumps({"classes": list(COLOUR_OF), "image_size": [32, 32]}))
    return folder


def write_card(folder: Path) -> dict[str, str]:
    """JPEGs with EXIF times: a burst of foxes, blanks, a person; plus a damaged file. Returns {file: class}."""
    shots = [("fox", 0), ("fox", 2), ("fox", 4), ("blank", 600), ("blank", 1200), ("human", 1800)]
    truth = {}
    for index, (label, seconds) in enumerate(shots):
        name = f"cam1/IMG_{index:04d}.JPG"
        coloured(folder / name, COLOUR_OF[label], size=(48, 64), seed=index,
                 exif=exif_time(START + dt.timedelta(seconds=seconds)), quality=92)
        truth[name] = label
    (folder / "cam1" / "IMG_0099.JPG").write_bytes(jpeg_bytes()[:300])
    return truth


def test_md_json_passes_megadetectors_validator_and_its_tools_sort_blanks_people_and_animals(tmp_path, model_dir):
    pytest.importorskip("megadetector", reason="megadetector-utils is a dev dependency: pip install -e '.[dev]'")
    from megadetector.postprocessing.convert_output_format import convert_json_to_csv
    from megadetector.postprocessing.separate_detections_into_folders import (
        SeparateDetectionsIntoFoldersOptions,
        separate_detections_into_folders,
    )
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    card = tmp_path / "card"
    truth = write_card(card)
    output = tmp_path / "md.json"
    frame = predict(model_dir, card, output=output, fmt="md-json", top_k=2, sequence_gap=10)
    read = frame[frame["status"] == "ok"]
    assert dict(zip(read["filepath"], read["label"])) == truth

    validation = validate_batch_results(str(output))["validation_results"]
    assert validation["errors"] == [] and validation["warnings"] == []
    data = json.loads(output.read_text())
    info = data["info"]
    assert info["format_version"] == "1.6" and info["detector"] == "ecoclassify whole-image classifier (no detector)"
    assert info["classifier"] == "field-run/model.keras"
    assert info["classifier_metadata"]["md_categories"] == {"blank": "empty", "fox": "animal", "human": "person"}
    images = {image["file"]: image for image in data["images"]}
    confs = [d["conf"] for image in data["images"] for d in image["detections"] or []]
    assert min(confs) >= info["detector_metadata"]["conservative_detection_threshold"]
    assert info["detector_metadata"]["typical_detection_threshold"] == 0.5
    assert images["cam1/IMG_0003.JPG"]["detections"] == [] and images["cam1/IMG_0004.JPG"]["detections"] == []
    assert [d["category"] for d in images["cam1/IMG_0005.JPG"]["detections"]] == ["2"]
    assert [d["category"] for d in images["cam1/IMG_0000.JPG"]["detections"]] == ["1"]
    first = images["cam1/IMG_0000.JPG"]
    assert (first["datetime"], first["width"], first["height"]) == ("2024:05:06 13:45:00", 64, 48)
    burst = [images[f"cam1/IMG_{i:04d}.JPG"] for i in range(3)]
    assert {image["seq_id"] for image in burst} == {burst[0]["seq_id"]}
    assert [image["frame_num"] for image in burst] == [0, 1, 2]
    assert all(image["seq_num_frames"] == 3 and image["seq_label"] == "fox" for image in burst)
    assert images["cam1/IMG_0003.JPG"]["seq_id"] != burst[0]["seq_id"]
    assert images["cam1/IMG_0099.JPG"]["detections"] is None and "seq_id" not in images["cam1/IMG_0099.JPG"]

    convert_json_to_csv(str(output), str(tmp_path / "md.csv"))
    table = pd.read_csv(tmp_path / "md.csv").set_index("image_path")
    assert float(table.loc["cam1/IMG_0003.JPG", "max_confidence"]) == 0
    assert float(table.loc["cam1/IMG_0005.JPG", "max_conf_person"]) > 0.5
    assert float(table.loc["cam1/IMG_0000.JPG", "max_conf_animal"]) > 0.5
    assert table.loc["cam1/IMG_0000.JPG", "datetime"] == "2024:05:06 13:45:00"

    options = SeparateDetectionsIntoFoldersOptions()
    options.results_file = str(output)
    options.base_input_folder = str(card)
    options.base_output_folder = str(tmp_path / "separated")
    separate_detections_into_folders(options)
    placed = {path.relative_to(tmp_path / "separated").parts[0]: set() for path in (tmp_path / "separated").iterdir()}
    for path in (tmp_path / "separated").rglob("*.JPG"):
        placed[path.relative_to(tmp_path / "separated").parts[0]].add(path.name)
    assert placed["animals"] == {"IMG_0000.JPG", "IMG_0001.JPG", "IMG_0002.JPG"}
    assert placed["empty"] == {"IMG_0003.JPG", "IMG_0004.JPG"}
    assert placed["people"] == {"IMG_0005.JPG"}
    assert placed["processing_failure"] == {"IMG_0099.JPG"}


def test_the_md_category_option_maps_a_class_the_name_does_not_explain(tmp_path, model_dir):
    card = tmp_path / "card"
    write_card(card)
    result = run_cli("predict", str(model_dir), str(card), "-o", str(tmp_path / "md.json"), "--format", "md-json",
                     "--md-category", "fox=vehicle", "--md-category", "human=empty")
    assert result.returncode == 0, result.stderr
    images = {image["file"]: image for image in json.loads((tmp_path / "md.json").read_text())["images"]}
    assert [d["category"] for d in images["cam1/IMG_0000.JPG"]["detections"]] == ["3"]
    assert images["cam1/IMG_0005.JPG"]["detections"] == []


def test_a_wrong_md_category_is_refused_before_the_model_loads(tmp_path, model_dir):
    card = tmp_path / "card"
    write_card(card)
    result = run_cli("predict", str(model_dir), str(card), "-o", str(tmp_path / "md.json"), "--format", "md-json",
                     "--md-category", "fox=bird")
    assert result.returncode == 2
    assert "--md-category fox=... must be one of: animal, person, vehicle, empty. Received: 'bird'" in result.stderr
    with pytest.raises(ConfigError, match=r"names class\(es\) the model does not have: deer.*blank, fox, human"):
        predict(load_classifier(model_dir), card, md_categories={"deer": "animal"})


@pytest.mark.parametrize("name, category", [
    ("blank", "empty"), ("Empty", "empty"), ("nothing", "empty"), ("no animal", "empty"),
    ("human", "person"), ("person", "person"), ("People", "person"), ("human_or_vehicle", "person"),
    ("vehicle", "vehicle"), ("car", "vehicle"), ("pickup truck", "vehicle"),
    ("deer", "animal"), ("carnivore", "animal"), ("empty_nest_bird", "animal"),
])
def test_the_default_md_category_comes_from_the_class_name(name, category):
    assert default_md_category(name) == category


def test_md_category_overrides_are_checked_against_the_model_classes():
    assert resolve_md_categories(["blank", "staff"], {"staff": "person"}) == {"blank": "empty", "staff": "person"}
    assert parse_md_category_options(["a=b=empty"]) == {"a=b": "empty"}
    with pytest.raises(ConfigError, match=r"--md-category must be CLASS=CATEGORY"):
        parse_md_category_options(["fox"])
