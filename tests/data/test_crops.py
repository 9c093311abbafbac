"""Crops of detector boxes: cut from one decode, and training samples split by image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image

from ecoclassify.config import Config
from ecoclassify.data.crops import crop_window, load_crops
from ecoclassify.data.prepare import prepare_data

COLOURS = {"deer": (150, 90, 40), "fox": (40, 90, 160)}
SIZE = (120, 160)  # height, width


def scene(path: Path, squares: list[tuple[str, tuple[int, int, int, int]]], seed: int = 0, **save) -> list[list[float]]:
    """A grey frame with coloured squares ("animals") at pixel boxes (x, y, w, h); returns their MD bboxes."""
    height, width = SIZE
    rng = np.random.default_rng(seed)
    pixels = (120 + rng.integers(0, 15, (height, width, 3))).astype(np.uint8)
    bboxes = []
    for colour, (x, y, w, h) in squares:
        pixels[y:y + h, x:x + w] = COLOURS[colour]
        bboxes.append([x / width, y / height, w / width, h / height])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, **save)
    return bboxes


def test_every_box_is_cut_from_one_decode_with_its_margin_and_squared(tmp_path):
    bboxes = scene(tmp_path / "a.jpg", [("deer", (10, 20, 40, 30)), ("fox", (100, 60, 30, 40))])
    loaded = load_crops(tmp_path / "a.jpg", [tuple(b) for b in bboxes] + [None], (16, 16), margin=0.0, square=False)
    assert (loaded.width, loaded.height) == (160, 120) and len(loaded.arrays) == 3
    deer, fox, whole = (a.reshape(-1, 3).mean(axis=0) for a in loaded.arrays)
    assert np.allclose(deer, COLOURS["deer"], atol=12) and np.allclose(fox, COLOURS["fox"], atol=12)
    assert not np.allclose(whole, COLOURS["deer"], atol=30)  # the whole frame is mostly grey


def test_crop_windows_add_the_margin_square_around_the_centre_and_stay_inside_the_frame():
    assert crop_window((0.25, 0.25, 0.5, 0.25), 100, 100, 0.0, False) == (25, 25, 75, 50)
    assert crop_window((0.25, 0.25, 0.5, 0.25), 100, 100, 0.1, True) == pytest.approx((20, 7.5, 80, 67.5))
    assert crop_window((0.0, 0.0, 0.2, 0.2), 100, 100, 0.5, True) == (0, 0, 40, 40)  # shifted in, not cut
    assert crop_window((0.1, 0.1, 0.8, 0.8), 200, 100, 0.0, True) == (20, 0, 180, 100)  # as square as the frame allows
    assert crop_window(None, 200, 100, 0.5, True) == (0, 0, 200, 100)


def test_boxes_are_cut_from_the_frame_as_exif_orientation_shows_it(tmp_path):
    # Stored landscape with a deer at the top-left; EXIF 6 (rotate 90 clockwise) shows it portrait, deer top-right.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    scene(tmp_path / "r.jpg", [("deer", (0, 0, 40, 30))], exif=exif)
    loaded = load_crops(tmp_path / "r.jpg", [(1 - 30 / 120, 0.0, 30 / 120, 40 / 160)], (8, 8))
    assert (loaded.width, loaded.height) == (120, 160)
    assert np.allclose(loaded.arrays[0].reshape(-1, 3).mean(axis=0), COLOURS["deer"], atol=12)


def make_crop_set(root: Path) -> Path:
    """Two classes of scenes, boxes in an MD file; image 5 of each class has no detection above 0.2."""
    images = []
    for label in COLOURS:
        for i in range(6):
            squares = [(label, (10 + 8 * i, 20, 40, 30)), (label, (100, 60, 40, 40))]
            bboxes = scene(root / label / f"img{i}.jpg", squares, seed=i)
            detections = [{"category": "1", "conf": 0.9 - 0.1 * j, "bbox": b} for j, b in enumerate(bboxes)]
            if i == 5:
                detections = [{"category": "1", "conf": 0.1, "bbox": bboxes[0]}]
            images.append({"file": f"{label}\\img{i}.jpg", "detections": detections})  # Windows separators
    md = root.parent / "md.json"
    md.write_text(json.dumps({"info": {"format_version": "1.4"}, "detection_categories": {"1": "animal"},
                              "images": images}))
    return md


def crop_config(root: Path, md: Path, **crops) -> Config:
    return Config.from_dict({
        "experiment": {"name": "crops", "output_dir": str(root.parent / "runs"), "seed": 3},
        "data": {"source": "folders", "root": str(root), "image_size": [32, 32], "min_images_per_class": 2,
                 "split": {"val": 0.2, "test": 0.2}, "crops": {"detections": str(md), "min_size_px": 8, **crops}},
        "model": {"backbone": "custom_cnn", "weights": "none", "custom_cnn": {"filters": [4]},
                  "head": {"dense": [], "dropout": 0.0}},
        "training": {"mode": "scratch", "epochs": 1, "batch_size": 8},
        "augmentation": {"enabled": False},
    })


def test_crops_of_one_image_share_its_split_and_images_without_a_detection_are_listed_as_excluded(tmp_path):
    root = tmp_path / "images"
    md = make_crop_set(root)
    prepared = prepare_data(crop_config(root, md))
    assert prepared.ok, prepared.errors
    samples = prepared.samples
    assert len(samples) == 2 * 5 * 2 and set(samples["box"].str.count(",")) == {3}
    assert samples.groupby("filepath")["split"].nunique().max() == 1
    assert set(samples["split"]) == {"train", "val", "test"}
    excluded = prepared.excluded.set_index("filepath")
    for label in COLOURS:
        row = excluded.loc[str(root / label / "img5.jpg")]
        assert (row["error"], row["detail"]) == ("no_detection", "no detection above threshold")
    assert any("give no crop" in warning for warning in prepared.warnings)


def test_images_without_a_detection_become_the_empty_label_when_one_is_named(tmp_path):
    root = tmp_path / "images"
    md = make_crop_set(root)
    prepared = prepare_data(crop_config(root, md, empty_label="blank", boxes="best"))
    blanks = prepared.samples[prepared.samples["label"] == "blank"]
    assert prepared.classes == ["blank", "deer", "fox"]
    assert sorted(Path(p).name for p in blanks["filepath"]) == ["img5.jpg", "img5.jpg"] and set(blanks["box"]) == {""}
    assert len(prepared.samples) == 2 * 6  # best: one crop per image


def test_a_detection_file_covering_none_of_the_images_is_an_error_not_an_empty_set(tmp_path):
    root = tmp_path / "images"
    make_crop_set(root)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"file": "elsewhere/x.jpg", "detections": []}]}))
    prepared = prepare_data(crop_config(root, other))
    assert not prepared.ok
    assert "covers none of the 12 images" in prepared.errors[0] and "elsewhere/x.jpg" in prepared.errors[0]


@pytest.mark.slow
def test_a_model_trained_on_crops_records_how_in_labels_json_and_splits_csv(tmp_path):
    from ecoclassify.training.session import train

    root = tmp_path / "images"
    md = make_crop_set(root)
    run = train(crop_config(root, md), verbose=0)
    labels = json.loads((run.run_dir / "labels.json").read_text())
    assert labels["crops"] == {"min_confidence": 0.2, "categories": ["animal"], "boxes": "all", "margin": 0.1,
                               "square": True, "min_size_px": 8, "empty_label": None}
    splits = pd.read_csv(run.run_dir / "splits.csv", dtype=str, keep_default_na=False)
    assert list(splits.columns) == ["filepath", "label", "group", "split", "box"] and len(splits) == 20
    excluded = pd.read_csv(run.run_dir / "excluded.csv", dtype=str)
    assert set(excluded["error"]) == {"no_detection"}


@pytest.mark.shared
def test_real_megadetector_output_for_the_shared_images_gives_one_crop_per_confident_animal_box(shared_dir, tmp_path):
    base = shared_dir / "data" / "camera-traps"
    md = base / "detections" / "detections.json"
    data = json.loads(md.read_text())
    table = pd.read_csv(base / "coarse.csv", dtype=str, keep_default_na=False)
    covered = table[table["filepath"].isin({image["file"] for image in data["images"]})]
    assert len(covered) == 44 and len(table) == 471  # the detection file covers 44 of the 471 images
    labels = tmp_path / "covered.csv"
    covered[covered["label"] != "exclude"].to_csv(labels, index=False)
    config = Config.from_dict({
        "experiment": {"name": "real", "output_dir": str(tmp_path / "runs")},
        "data": {"source": "csv", "labels": str(labels), "root": str(base), "image_size": 32,
                 "min_images_per_class": 1, "split": {"method": "group", "group_by": "site", "val": 0.0, "test": 0.3},
                 "crops": {"detections": str(md)}},
    })
    prepared = prepare_data(config)
    # Expected independently: animal boxes (category "1") at conf >= 0.2, per image.
    expected = {image["file"]: sum(1 for d in image["detections"] if d["category"] == "1" and d["conf"] >= 0.2)
                for image in data["images"] if image["file"] in set(covered.loc[covered["label"] != "exclude",
                                                                                 "filepath"])}
    crops = prepared.samples.assign(file=[Path(p).relative_to(base).as_posix() for p in prepared.samples["filepath"]])
    assert crops.groupby("file").size().to_dict() == {f: n for f, n in expected.items() if n}
    assert crops.groupby("file")["split"].nunique().max() == 1
    no_box = prepared.excluded[prepared.excluded["error"] == "no_detection"]
    assert sorted(Path(p).relative_to(base).as_posix() for p in no_box["filepath"]) == sorted(
        f for f, n in expected.items() if n == 0)
    first = crops.iloc[0]
    loaded = load_crops(first["filepath"], [tuple(float(v) for v in first["box"].split(","))], (64, 64),
                        margin=0.1, square=True)
    assert loaded.arrays[0].shape == (64, 64, 3) and loaded.arrays[0].std() > 5  # a real picture, not padding


def test_a_boxs_own_label_is_used_only_when_it_is_one_of_the_datas_labels(tmp_path):
    root = tmp_path / "images"
    make_crop_set(root)
    coco = tmp_path / "boxes.json"
    images = [{"id": i, "file_name": f"{label}/img{n}.jpg", "width": SIZE[1], "height": SIZE[0]}
              for i, (label, n) in enumerate((label, n) for label in COLOURS for n in range(6))]
    annotations = [{"id": f"a{i}", "image_id": i, "category_id": 1, "bbox": [10, 20, 40, 30]} for i in range(12)]
    annotations.append({"id": "fox-in-deer", "image_id": 0, "category_id": 2, "bbox": [100, 60, 40, 40]})
    coco.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "Red Deer"}, {"id": 2, "name": "fox"}]}))
    prepared = prepare_data(crop_config(root, coco))
    first = prepared.samples[prepared.samples["filepath"] == str(root / "deer" / "img0.jpg")]
    assert sorted(first["label"]) == ["deer", "fox"]  # "Red Deer" is no label of the data: the image's label counts
    assert prepared.classes == ["deer", "fox"]
