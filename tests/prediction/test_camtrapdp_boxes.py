"""``ecoclassify camtrapdp`` of ``predict --detections`` output: one observation per box, with its bbox.

A real ``predict --detections`` run of the tiny model on camera-trap-like frames (coloured
"animals" at known pixel boxes, EXIF capture times as a camera writes them) and a MegaDetector
file; the package is validated offline as in ``test_camtrapdp.py``, and read back for crop
training.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ecoclassify.errors import DataError
from ecoclassify.prediction.camtrapdp import export_camtrapdp
from tests.prediction._predict_support import COLOURS, exif_time, tiny_model_dir
from tests.prediction.test_camtrapdp import _require_shared, table, validation_errors, write_inputs

HEIGHT, WIDTH = 96, 128
ANIMAL, PERSON = "1", "2"
DEPLOYMENTS = [["CAM01", "L1", "50.1", "4.1", "2024-05-01T00:00:00+02:00", "2024-06-01T00:00:00+02:00"],
               ["CAM02", "L2", "50.2", "4.2", "2024-05-01T00:00:00+02:00", "2024-06-01T00:00:00+02:00"]]
# file -> (squares (class colour, pixel box x, y, w, h), detections (category, conf, pixel box), or None: not in md)
SCENES = {
    "CAM01/deer_and_fox.jpg": ([("deer", (4, 10, 48, 40)), ("fox", (70, 40, 50, 50))],
                               [(ANIMAL, 0.95, (4, 10, 48, 40)), (ANIMAL, 0.6, (70, 40, 50, 50))]),
    "CAM01/empty.jpg": ([], []),
    "CAM01/person.jpg": ([("owl", (10, 10, 40, 40))], [(PERSON, 0.9, (10, 10, 40, 40))]),
    "CAM02/owl.jpg": ([("owl", (30, 20, 60, 60))], [(ANIMAL, 0.8, (30, 20, 60, 60)), (ANIMAL, 0.05, (0, 0, 9, 9))]),
    "CAM02/two_deer.jpg": ([("deer", (2, 2, 40, 40)), ("deer", (80, 50, 40, 40))],
                           [(ANIMAL, 0.7, (2, 2, 40, 40)), (ANIMAL, 0.9, (80, 50, 40, 40))]),
    "CAM02/not_detected.jpg": ([("deer", (10, 10, 40, 40))], None),
}


def write_card(cards: Path) -> Path:
    """The frames (with EXIF capture times) and their MegaDetector file."""
    rng = np.random.default_rng(0)
    images = []
    for number, (name, (squares, detections)) in enumerate(SCENES.items()):
        pixels = (110 + rng.integers(0, 20, (HEIGHT, WIDTH, 3))).astype(np.uint8)
        for colour, (x, y, w, h) in squares:
            noise = rng.normal(0, 15, (h, w, 3))
            pixels[y:y + h, x:x + w] = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
        (cards / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(cards / name, quality=95, exif=exif_time(dt.datetime(2024, 5, 2, 6, number)))
        if detections is not None:
            images.append({"file": name, "detections": [
                {"category": c, "conf": conf, "bbox": [x / WIDTH, y / HEIGHT, w / WIDTH, h / HEIGHT]}
                for c, conf, (x, y, w, h) in detections]})
    md = cards.parent / "md.json"
    md.write_text(json.dumps({"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt"},
                              "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
                              "images": images}))
    return md


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory) -> dict[str, Path]:
    """One real ``predict --detections`` run, written as json and as csv (with its .boxes.csv)."""
    _require_shared()
    from ecoclassify.prediction.labelling import predict

    folder = tmp_path_factory.mktemp("camtrapdp-crops")
    cards = folder / "cards"
    md = write_card(cards)
    model = tiny_model_dir(tmp_path_factory)
    for fmt in ("json", "csv"):
        predict(model, cards, detections=md, crop_margin=0.0, crop_square=False, output=folder / f"predictions.{fmt}",
                fmt=fmt)
    return {"cards": cards, "md": md, "json": folder / "predictions.json", "csv": folder / "predictions.csv",
            **write_inputs(folder / "inputs", deployments=DEPLOYMENTS)}


def export(run: dict[str, Path], fmt: str, output: Path, **options) -> object:
    return export_camtrapdp(run[fmt], run["deployments"], run["taxonomy"], run["metadata"], output, **options)


def expected_boxes(run: dict[str, Path]) -> pd.DataFrame:
    """The per-box rows predict wrote, with the file path as the package gives it."""
    boxes = pd.DataFrame(json.loads(run["json"].read_text())["boxes"])
    return boxes.assign(filePath=boxes["filepath"])


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_crop_predictions_export_one_observation_per_box_with_its_bbox_and_validate(crop_run, tmp_path, fmt):
    package = tmp_path / "package"
    result = export(crop_run, fmt, package)
    assert validation_errors(package) == []
    media = table(package, "media").set_index("mediaID")
    observations = table(package, "observations")
    observations["filePath"] = [media.loc[m, "filePath"] for m in observations["mediaID"]]
    with_box = observations[observations["bboxX"] != ""]
    boxes = expected_boxes(crop_run)
    # Every box predict classified or named (the faint 0.05 owl box is below the detector threshold).
    assert len(with_box) == len(boxes) == 6
    for (path, x, y, w, h, count, kind, name, probability), box in zip(
            with_box[["filePath", "bboxX", "bboxY", "bboxWidth", "bboxHeight", "count", "observationType",
                      "scientificName", "classificationProbability"]].itertuples(index=False),
            boxes.itertuples(index=False)):
        assert path == box.filePath and count == "1"
        assert [float(v) for v in (x, y, w, h)] == pytest.approx([float(v) for v in box.box.split(",")], abs=1e-6)
        assert float(probability) == pytest.approx(box.top1_score, abs=1e-6)
        if box.classified:
            taxa = {"deer": "Muntiacus muntjak", "fox": "Paradoxurus hermaphroditus", "owl": "Strigiformes"}
            assert (kind, name) == ("animal", taxa[box.top1_label])
        else:
            assert (kind, name) == ("human", "")
    by_file = observations.groupby("filePath")
    assert by_file.size().to_dict() == {"CAM01/deer_and_fox.jpg": 2, "CAM01/empty.jpg": 1, "CAM01/person.jpg": 1,
                                        "CAM02/owl.jpg": 1, "CAM02/two_deer.jpg": 2}
    empty = observations[observations["filePath"] == "CAM01/empty.jpg"].iloc[0]
    assert (empty["observationType"], empty["bboxX"], empty["count"]) == ("blank", "", "")
    deer_and_fox = with_box[with_box["filePath"] == "CAM01/deer_and_fox.jpg"]
    assert deer_and_fox[["bboxX", "bboxY", "bboxWidth", "bboxHeight"]].iloc[0].tolist() == [
        "0.03125", "0.104167", "0.375", "0.416667"]  # pixels (4, 10, 48, 40) of a 128 x 96 frame
    assert media.set_index("filePath").loc["CAM01/person.jpg", "filePublic"] == "false"
    assert result.unexported == {"failed": 1} and result.observation_types["blank"] == 1


def test_a_box_below_the_threshold_is_unclassified_with_its_bbox_and_probability(crop_run, tmp_path):
    export(crop_run, "json", tmp_path / "package", min_score=1.0)
    observations = table(tmp_path / "package", "observations")
    animals = observations[observations["observationType"].isin(["animal", "unclassified"])]
    assert set(animals["observationType"]) == {"unclassified"} and (animals["scientificName"] == "").all()
    assert (animals["bboxX"] != "").all() and animals["classificationProbability"].astype(float).between(0, 1).all()
    assert validation_errors(tmp_path / "package") == []


def test_a_csv_of_crop_predictions_without_its_boxes_file_is_refused_with_the_file_it_needs(crop_run, tmp_path):
    lonely = tmp_path / "predictions.csv"
    lonely.write_bytes(crop_run["csv"].read_bytes())
    with pytest.raises(DataError, match=r"predict --detections.*predictions\.boxes\.csv"):
        export(crop_run | {"csv": lonely}, "csv", tmp_path / "package")
    assert not (tmp_path / "package").exists()


def test_a_reviewed_crop_package_trains_on_its_own_boxes_with_their_labels(crop_run, tmp_path):
    from ecoclassify.config import Config
    from ecoclassify.data.prepare import prepare_data

    package = tmp_path / "package"
    export(crop_run, "json", package)
    observations = table(package, "observations")
    observations["classificationMethod"] = "human"  # a person checked every box (as in Agouti)
    observations.to_csv(package / "observations.csv", index=False)
    media = table(package, "media").set_index("mediaID")
    boxed = observations[observations["bboxX"] != ""]
    expected = sorted(
        (str(crop_run["cards"] / media.loc[m, "filePath"]), tuple(round(float(v), 6) for v in box),
         name if kind == "animal" else kind)
        for m, kind, name, *box in boxed[["mediaID", "observationType", "scientificName", "bboxX", "bboxY",
                                          "bboxWidth", "bboxHeight"]].itertuples(index=False))
    config = Config.from_dict({
        "data": {"source": "camtrapdp", "labels": str(package / "datapackage.json"), "root": str(crop_run["cards"]),
                 "image_size": 32, "min_images_per_class": 1, "split": {"val": 0.0, "test": 0.0},
                 "crops": {"detections": str(package / "datapackage.json"), "categories": None, "min_size_px": 8}},
        "model": {"backbone": "custom_cnn", "weights": "none"}, "training": {"monitor": "loss"}})

    prepared = prepare_data(config)

    assert prepared.ok, prepared.errors
    samples = prepared.samples
    found = sorted((fp, tuple(round(float(v), 6) for v in box.split(",")), label)
                   for fp, box, label in zip(samples["filepath"], samples["box"], samples["label"]))
    assert found == expected and len(found) == 6
    both = samples[samples["filepath"].str.endswith("deer_and_fox.jpg")]
    assert both["label"].nunique() == 2  # two species in one frame: one crop each, not a multi-label refusal
    assert "human" in set(samples["label"])  # the person's box keeps its observation's type
    excluded = prepared.excluded.set_index("filepath")
    assert excluded.loc[str(crop_run["cards"] / "CAM01" / "empty.jpg"), "error"] == "no_detection"


def test_a_box_of_a_label_the_filter_leaves_out_is_no_sample_and_never_takes_its_images_label(crop_run, tmp_path):
    from ecoclassify.config import Config
    from ecoclassify.data.prepare import prepare_data

    package = tmp_path / "package"
    export(crop_run, "json", package)
    observations = table(package, "observations").assign(classificationMethod="human")
    observations.to_csv(package / "observations.csv", index=False)
    media = table(package, "media").set_index("mediaID")
    both = observations[[media.loc[m, "filePath"] == "CAM01/deer_and_fox.jpg" for m in observations["mediaID"]]]
    left_out = sorted(both["scientificName"])[1]  # the image keeps the other species as its label
    config = Config.from_dict({
        "data": {"source": "camtrapdp", "labels": str(package), "root": str(crop_run["cards"]), "image_size": 32,
                 "min_images_per_class": 1, "split": {"val": 0.0, "test": 0.0}, "exclude_labels": [left_out],
                 "crops": {"detections": str(package), "categories": None, "min_size_px": 8}},
        "model": {"backbone": "custom_cnn", "weights": "none"}, "training": {"monitor": "loss"}})

    prepared = prepare_data(config)

    assert prepared.ok, prepared.errors
    assert left_out not in set(prepared.samples["label"])
    frame = prepared.samples[prepared.samples["filepath"].str.endswith("deer_and_fox.jpg")]
    assert frame["label"].tolist() == [sorted(both["scientificName"])[0]]  # one crop, of the kept species
    assert any("left out by data.include_labels/exclude_labels" in w for w in prepared.warnings)


def test_boxes_that_do_not_match_the_predictions_are_refused_not_exported_as_blanks(crop_run, tmp_path):
    from ecoclassify.prediction.crop_outputs import boxes_path

    edited = tmp_path / "predictions.csv"
    edited.write_bytes(crop_run["csv"].read_bytes())
    boxes = pd.read_csv(boxes_path(crop_run["csv"]), dtype=str, keep_default_na=False)
    boxes[boxes["filepath"] != "CAM02/owl.jpg"].to_csv(boxes_path(edited), index=False)
    with pytest.raises(DataError, match=r"does not match the predictions: 1 image\(s\) differ, e\.g\. CAM02/owl\.jpg "
                                        r"\(1 in the predictions, 0 in the boxes\)"):
        export(crop_run | {"csv": edited}, "csv", tmp_path / "package")
    assert not (tmp_path / "package").exists()
