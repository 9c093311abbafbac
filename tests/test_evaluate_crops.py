"""``evaluate --detections``: a crop model scored per image, per crop and per site, beside a whole-frame model."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tests.prediction._predict_support import run_cli, tiny_model_dir
from tests.prediction.test_predict_crops import write_scenes

from ecoclassify.evaluation import evaluate

TRUTH = {"cam1/deer_and_fox.jpg": "deer", "cam1/owl.jpg": "owl", "cam1/empty.jpg": "blank",
         "cam1/faint.jpg": "blank", "cam1/person.jpg": "owl", "cam2/failed.jpg": "deer",
         "cam2/not_detected.jpg": "deer"}


@pytest.fixture()
def crop_model(tmp_path, tmp_path_factory):
    """The tiny model, recorded as trained on crops without margin or squaring (its labels.json says so)."""
    folder = tmp_path / "crop-run"
    shutil.copytree(tiny_model_dir(tmp_path_factory), folder)
    labels = json.loads((folder / "labels.json").read_text())
    labels["crops"] = {"min_confidence": 0.2, "margin": 0.0, "square": False}
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


@pytest.fixture()
def labelled(tmp_path):
    folder = tmp_path / "card"
    md = write_scenes(folder)
    labels = folder / "labels.csv"
    pd.DataFrame({"filepath": list(TRUTH), "label": list(TRUTH.values()),
                  "site": [name.split("/")[0] for name in TRUTH]}).to_csv(labels, index=False)
    return labels, md


def test_image_and_crop_level_scores_and_a_per_site_table_beside_the_whole_frame_model(labelled, crop_model, tmp_path,
                                                                                       tmp_path_factory):
    labels, md = labelled
    result = evaluate(crop_model, labels, tmp_path / "eval", detections=md,
                      compare_with=tiny_model_dir(tmp_path_factory))
    metrics = result.metrics
    # Images: deer, owl, blank, blank right; the owl labelled image with a person box is wrong.
    assert (metrics["image_level"]["n"], metrics["image_level"]["accuracy"]) == (5, 0.8)
    # Crops: the deer and owl boxes are right; the fox box of the deer-labelled image counts against it.
    assert metrics["crop_level"]["n"] == 3 and metrics["crop_level"]["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    (site,) = metrics["per_site"]  # cam2's two images have no detector result: left out
    assert site["site"] == "cam1" and site["images"] == 5 and site["accuracy_crops"] == 0.8
    assert site["macro_f1_frames"] is not None
    excluded = pd.read_csv(tmp_path / "eval" / "excluded.csv")
    assert sorted(excluded["error"]) == ["detector_failure", "not_in_detections"]
    assert json.loads((tmp_path / "eval" / "crop_metrics.json").read_text())["images_evaluated"] == 5
    assert (tmp_path / "eval" / "per_site.csv").is_file() and (tmp_path / "eval" / "crop_predictions.csv").is_file()


def test_the_cli_prints_image_and_crop_level_scores(labelled, crop_model, tmp_path):
    labels, md = labelled
    result = run_cli("evaluate", str(crop_model), "--data", str(labels), "--detections", str(md), "-o",
                     str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    assert "image level: 5 images, accuracy 0.800" in result.stdout
    assert "2 image(s) without a detector result or unreadable" in result.stdout
