"""``predict --detections``: the detector's boxes are classified, images are labelled from their boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.prediction._predict_support import COLOURS, run_cli, tiny_model_dir

from ecoclassify.errors import ConfigError, DataError
from ecoclassify.prediction.labelling import predict

HEIGHT, WIDTH = 96, 128
# file -> (squares (class colour, pixel box x, y, w, h), detections as MegaDetector writes them, or None)
ANIMAL, PERSON = "1", "2"


def bbox(x: int, y: int, w: int, h: int) -> list[float]:
    return [x / WIDTH, y / HEIGHT, w / WIDTH, h / HEIGHT]


SCENES = {
    "cam1/deer_and_fox.jpg": ([("deer", (4, 10, 48, 40)), ("fox", (70, 40, 50, 50))],
                              [(ANIMAL, 0.95, (4, 10, 48, 40)), (ANIMAL, 0.6, (70, 40, 50, 50))]),
    "cam1/owl.jpg": ([("owl", (30, 20, 60, 60))], [(ANIMAL, 0.8, (30, 20, 60, 60))]),
    "cam1/empty.jpg": ([], []),
    "cam1/faint.jpg": ([("fox", (10, 10, 40, 40))], [(ANIMAL, 0.1, (10, 10, 40, 40))]),
    "cam1/person.jpg": ([("owl", (10, 10, 40, 40))], [(PERSON, 0.9, (10, 10, 40, 40))]),
    "cam2/failed.jpg": ([("deer", (10, 10, 40, 40))], "Failure image access"),
    "cam2/not_detected.jpg": ([("deer", (10, 10, 40, 40))], None),
}


def write_scenes(folder: Path) -> Path:
    """The card and its MegaDetector file (with Windows separators, as MegaDetector on Windows writes them)."""
    rng = np.random.default_rng(0)
    images = []
    for name, (squares, detections) in SCENES.items():
        pixels = (110 + rng.integers(0, 20, (HEIGHT, WIDTH, 3))).astype(np.uint8)
        for colour, (x, y, w, h) in squares:
            noise = rng.normal(0, 15, (h, w, 3))
            pixels[y:y + h, x:x + w] = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name, quality=95)
        if detections is None:
            continue
        entry = {"file": name.replace("/", "\\")}
        if isinstance(detections, str):
            entry.update(failure=detections, detections=None)
        else:
            entry["detections"] = [{"category": c, "conf": conf, "bbox": bbox(*box)} for c, conf, box in detections]
        images.append(entry)
    md = folder.parent / "md.json"
    md.write_text(json.dumps({"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt",
                                       "detector_metadata": {"megadetector_version": "v5a.0.0",
                                                             "typical_detection_threshold": 0.2}},
                              "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
                              "images": images}))
    return md


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture()
def card(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "card"
    return folder, write_scenes(folder)


CROP = {"crop_margin": 0.0, "crop_square": False}


def test_images_are_labelled_from_their_boxes_and_every_species_of_a_frame_is_listed(card, model_dir):
    folder, md = card
    frame = predict(model_dir, folder, detections=md, top_k=2, **CROP)
    rows = frame.set_index("filepath")
    both = rows.loc["cam1/deer_and_fox.jpg"]
    assert (both["status"], both["label"], both["species"], both["n_boxes"]) == ("ok", "deer", "deer;fox", 2)
    assert both["detection_conf"] == 0.95 and both["box"] == "0.031250,0.104167,0.375000,0.416667"
    assert rows.loc["cam1/owl.jpg", "label"] == "owl"
    boxes = frame.attrs["boxes"]
    assert list(boxes.loc[boxes["filepath"] == "cam1/deer_and_fox.jpg", "top1_label"]) == ["deer", "fox"]
    assert list(boxes.loc[boxes["filepath"] == "cam1/deer_and_fox.jpg", "detection_conf"]) == [0.95, 0.6]
    probs = boxes[[f"prob_{c}" for c in COLOURS]].dropna().to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_empty_frames_are_blank_with_the_detectors_confidence_and_other_categories_keep_their_name(card, model_dir):
    folder, md = card
    rows = predict(model_dir, folder, detections=md, **CROP).set_index("filepath")
    assert (rows.loc["cam1/empty.jpg", "label"], rows.loc["cam1/empty.jpg", "score"]) == ("blank", 1.0)
    assert (rows.loc["cam1/faint.jpg", "label"], rows.loc["cam1/faint.jpg", "score"]) == ("blank", 0.9)
    person = rows.loc["cam1/person.jpg"]
    assert (person["label"], person["species"], person["score"]) == ("person", "person", 0.9)
    assert np.isnan(person["prob_owl"])  # a person box is not classified


def test_images_missing_from_the_detection_file_or_failed_by_the_detector_are_failure_rows(card, model_dir):
    folder, md = card
    frame = predict(model_dir, folder, detections=md, **CROP)
    rows = frame.set_index("filepath")
    assert tuple(rows.loc["cam2/failed.jpg", ["status", "error", "detail"]]) == (
        "failed", "detector_failure", "Failure image access")
    assert tuple(rows.loc["cam2/not_detected.jpg", ["status", "error"]]) == ("failed", "not_in_detections")
    assert pd.isna(rows.loc["cam2/not_detected.jpg", "label"])
    assert len(frame) == len(SCENES) and frame.attrs["summary"].failed_by_reason == {
        "detector_failure": 1, "not_in_detections": 1}


def test_crops_of_many_images_batched_together_give_the_numbers_of_one_crop_per_batch(card, model_dir):
    folder, md = card
    big = predict(model_dir, folder, detections=md, batch_size=32, **CROP).attrs["boxes"]
    small = predict(model_dir, folder, detections=md, batch_size=1, **CROP).attrs["boxes"]
    columns = [f"prob_{c}" for c in COLOURS]
    assert np.array_equal(big[columns].to_numpy(), small[columns].to_numpy(), equal_nan=True)


def test_a_detection_file_covering_none_of_the_inputs_is_an_error(tmp_path, model_dir, card):
    folder, _ = card
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"file": "elsewhere/IMG_1.JPG", "detections": []}]}))
    with pytest.raises(DataError, match=r"covers none of the 7 input images.*elsewhere/IMG_1.JPG"):
        predict(model_dir, folder, detections=other)


def test_detections_refuse_options_they_do_not_support_yet(tmp_path):
    with pytest.raises(ConfigError, match=r"detections .* does not support resume, sequence_gap"):
        predict("model", tmp_path, detections=tmp_path / "md.json", output=tmp_path / "p.csv", resume=True,
                sequence_gap=5)
    with pytest.raises(ConfigError, match=r"min_confidence: .*less than or equal to 1"):
        predict("model", tmp_path, detections=tmp_path / "md.json", min_confidence=2)


def test_md_output_keeps_the_detectors_boxes_and_adds_classifications_that_megadetector_validates(card, model_dir,
                                                                                                   tmp_path):
    pytest.importorskip("megadetector", reason="megadetector-utils is a dev dependency: pip install -e '.[dev]'")
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    folder, md = card
    output = tmp_path / "classified.json"
    predict(model_dir, folder, detections=md, output=output, fmt="md-json", top_k=2, **CROP)
    validation = validate_batch_results(str(output))["validation_results"]
    assert validation["errors"] == [] and validation["warnings"] == []
    data = json.loads(output.read_text())
    assert data["info"]["detector"] == "md_v5a.0.0.pt"
    assert data["info"]["detector_metadata"]["megadetector_version"] == "v5a.0.0"
    assert data["info"]["classifier"].endswith("/model.keras")
    assert data["classification_categories"] == {"0": "deer", "1": "fox", "2": "owl"}
    images = {image["file"]: image for image in data["images"]}
    deer_fox = images["cam1/deer_and_fox.jpg"]["detections"]
    assert [d["conf"] for d in deer_fox] == [0.95, 0.6]
    assert [d["classifications"][0][0] for d in deer_fox] == ["0", "1"] and len(deer_fox[0]["classifications"]) == 2
    assert images["cam1/faint.jpg"]["detections"] == [{"category": "1", "conf": 0.1,
                                                       "bbox": [0.078125, 0.104167, 0.3125, 0.416667]}]
    assert "classifications" not in images["cam1/person.jpg"]["detections"][0]
    assert images["cam2/failed.jpg"]["detections"] is None
    assert images["cam2/failed.jpg"]["failure"] == "detector_failure: Failure image access"
    assert images["cam2/not_detected.jpg"]["failure"].startswith("not_in_detections")


def test_the_cli_writes_one_row_per_image_and_one_per_box(card, model_dir, tmp_path):
    folder, md = card
    output = tmp_path / "out" / "labels.csv"
    output.parent.mkdir()
    result = run_cli("predict", str(model_dir), str(folder), "--detections", str(md), "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert "7 images: 5 ok, 2 failed" in result.stdout
    images = pd.read_csv(output)
    boxes = pd.read_csv(tmp_path / "out" / "labels.boxes.csv")
    assert len(images) == 7 and len(boxes) == 4  # deer, fox, owl and the person box
    assert "trained on whole frames" in result.stderr
    again = run_cli("predict", str(model_dir), str(folder), "--detections", str(md), "-o", str(output))
    assert again.returncode == 1 and "exists: use --overwrite" in again.stderr


def test_a_crop_model_used_on_whole_frames_warns(card, model_dir, tmp_path, caplog):
    folder, _ = card
    crop_model = tmp_path / "crop-run"
    shutil.copytree(model_dir, crop_model)
    labels = json.loads((crop_model / "labels.json").read_text())
    labels["crops"] = {"min_confidence": 0.2, "margin": 0.0, "square": False}
    (crop_model / "labels.json").write_text(json.dumps(labels))
    with caplog.at_level("WARNING"):
        predict(crop_model, folder / "cam1" / "owl.jpg")
    assert "trained on detector crops" in caplog.text


def test_a_listed_file_gone_since_detection_is_a_not_found_failure_and_a_resized_one_keeps_its_boxes(card, model_dir):
    folder, md = card
    owl = Image.open(folder / "cam1" / "owl.jpg")
    owl.resize((WIDTH * 2, HEIGHT * 2)).save(folder / "cam1" / "owl.jpg", quality=95)  # boxes are normalised
    (folder / "cam1" / "empty.jpg").unlink()
    (folder / "cam1" / "deer_and_fox.jpg").unlink()
    listing = folder / "files.txt"
    listing.write_text("cam1/owl.jpg\ncam1/empty.jpg\ncam1/deer_and_fox.jpg\n")
    rows = predict(model_dir, listing, detections=md, **CROP).set_index("filepath")
    assert tuple(rows.loc["cam1/deer_and_fox.jpg", ["status", "error"]]) == ("failed", "not_found")
    assert tuple(rows.loc["cam1/empty.jpg", ["status", "error"]]) == ("failed", "not_found")
    assert (rows.loc["cam1/owl.jpg", "label"], rows.loc["cam1/owl.jpg", "width"]) == ("owl", WIDTH * 2)
