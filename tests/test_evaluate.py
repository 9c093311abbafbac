"""``evaluate`` and ``ecoclassify evaluate``: a trained model on new labelled sets (folders, CSV, COCO)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ecoclassify.cli.app import main
from ecoclassify.config import Config
from ecoclassify.errors import DataError, RunError
from ecoclassify.cli.evaluate_command import evaluate_command
from ecoclassify.evaluation import evaluate
from ecoclassify.training.session import train

pytestmark = pytest.mark.slow

main.add_command(evaluate_command)  # cli.py wires it the same way

COLOURS = {"deer": (150, 90, 40), "fox": (40, 90, 160), "owl": (60, 150, 60)}


def write_colour_images(folder: Path, label: str, count: int, seed: int, shift: int = 0) -> list[Path]:
    """Images a tiny CNN can tell apart: the class colour (shifted, as at another site) plus noise."""
    rng = np.random.default_rng(seed)
    colour = np.array(COLOURS.get(label, (200, 200, 200))) + shift
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.clip(colour + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{label}_{seed}_{i:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run folder of a tiny CNN trained once for the whole module."""
    base = tmp_path_factory.mktemp("training")
    for label in COLOURS:
        write_colour_images(base / "images" / label, label, 10, seed=len(label))
    config = Config.from_dict({
        "experiment": {"name": "tiny", "output_dir": str(base / "runs"), "seed": 7},
        "data": {"source": "folders", "root": str(base / "images"), "image_size": [32, 32],
                 "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"backbone": "custom_cnn", "weights": "none",
                  "custom_cnn": {"filters": [8, 16], "convs_per_block": 1}, "head": {"dense": [16], "dropout": 0.1}},
        "augmentation": {"enabled": False},
        "training": {"batch_size": 8, "mode": "scratch", "epochs": 4, "learning_rate": 0.01,
                     "early_stopping": {"enabled": False}},
        "report": {"target_precisions": [0.9, 0.99]},
    })
    return train(config, verbose=0).run_dir


@pytest.fixture
def new_site(tmp_path) -> Path:
    """Class folders from "another site" (colours shifted), with one unreadable file."""
    root = tmp_path / "site_b"
    for seed, label in enumerate(COLOURS, start=100):
        write_colour_images(root / label, label, 4, seed=seed, shift=8)
    (root / "fox" / "card_error.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated by a failing SD card")
    return root


def test_evaluate_writes_the_full_report_into_a_new_folder_of_the_run(run_dir, new_site):
    result = evaluate(run_dir, new_site)
    assert result.output_dir.parent == run_dir / "evaluations" and result.output_dir.name.startswith("site_b-")
    names = {p.name for p in result.output_dir.iterdir()}
    assert {"metrics.json", "per_class.csv", "confusion_matrix.csv", "thresholds.csv", "predictions.csv",
            "excluded.csv", "report.html", "report.md", "confusion_matrix.png", "pr_curves.png",
            "reliability_diagram.png", "training_curves.png"} <= names
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["kind"] == "evaluation" and metrics["classes"] == ["deer", "fox", "owl"]
    assert metrics["test"]["n_images"] == 12 and metrics["split_counts"] == {"evaluated": 12}
    assert metrics["test"]["thresholds"]["targets"] == [0.9, 0.99]  # from the run's config
    assert metrics["data"]["images_listed"] == 13 and metrics["data"]["images_evaluated"] == 12
    assert len(result.predictions) == 12 and {"p_deer", "p_fox", "p_owl"} <= set(result.predictions.columns)
    assert "tiny" in metrics["title"] and "site_b" in metrics["title"]
    # The run's own files are untouched: an evaluation never writes into the run folder itself.
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["n_images"] == 6


def test_an_unreadable_file_is_recorded_with_its_reason_and_not_fatal(run_dir, new_site, tmp_path):
    result = evaluate(run_dir, new_site, tmp_path / "eval")
    assert result.output_dir == tmp_path / "eval"
    excluded = pd.read_csv(result.output_dir / "excluded.csv")
    assert excluded["filepath"].str.endswith("card_error.jpg").tolist() == [True]
    # A JPEG that starts right and stops short is "truncated" (see ecoclassify.data.images).
    assert excluded["error"].tolist() == ["truncated"] and excluded["label"].tolist() == ["fox"]
    assert result.metrics["unreadable"] == {"n_images": 1, "by_reason": {"truncated": 1}}
    assert "card_error.jpg" in (result.output_dir / "report.html").read_text()
    assert "1 unreadable image(s) were left out (1 truncated)" in (result.output_dir / "report.md").read_text()


def test_labels_the_model_does_not_know_are_an_error_that_lists_them(run_dir, new_site, tmp_path):
    write_colour_images(new_site / "wolf", "wolf", 3, seed=5)
    write_colour_images(new_site / "lynx", "lynx", 1, seed=6)
    with pytest.raises(DataError) as error:
        evaluate(run_dir, new_site, tmp_path / "out")
    message = str(error.value)
    assert "2 label(s) of the data are not classes of the model: lynx (1), wolf (3)" in message
    assert "deer, fox, owl" in message and "--unknown-labels other" in message
    assert not (tmp_path / "out").exists()  # a failed evaluation leaves nothing behind
    result = evaluate(run_dir, new_site, tmp_path / "out", exclude_labels=["wolf", "lynx"])
    assert result.metrics["test"]["n_images"] == 12


def test_unknown_labels_can_be_counted_as_other_which_the_model_never_predicts(run_dir, new_site, tmp_path):
    write_colour_images(new_site / "wolf", "wolf", 3, seed=5)
    result = evaluate(run_dir, new_site, tmp_path / "out", unknown_labels="other")
    test = result.metrics["test"]
    assert result.classes == ["deer", "fox", "owl", "other"] and result.unknown_labels == {"wolf": 3}
    assert test["n_images"] == 15 and test["not_predicted_classes"] == ["other"]
    assert "other" in test["map_excluded_classes"] and test["log_loss_n_images"] == 12
    other = test["per_class"][3]
    assert other["support"] == 3 and other["n_predicted"] == 0 and other["recall"] == 0.0
    assert sum(test["confusion_matrix"]["counts"][3]) == 3
    predictions = result.predictions
    assert predictions.loc[predictions["true_label"] == "other", "original_label"].tolist() == ["wolf"] * 3
    assert "p_other" not in predictions.columns
    assert "counted as 'other': wolf (3)" in html.unescape((result.output_dir / "report.html").read_text())


def test_a_csv_with_sites_gets_per_site_metrics(run_dir, tmp_path):
    rows = []
    for site, shift in (("ridge", 0), ("valley", 12)):
        for label in COLOURS:
            for path in write_colour_images(tmp_path / site / label, label, 3, seed=shift + len(label), shift=shift):
                rows.append({"filepath": path.relative_to(tmp_path).as_posix(), "label": label, "site": site})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    result = evaluate(run_dir, tmp_path / "labels.csv", tmp_path / "out")
    groups = result.metrics["test"]["groups"]["site"]
    assert [(g["group"], g["n_images"]) for g in groups] == [("ridge", 9), ("valley", 9)]
    assert set(pd.read_csv(tmp_path / "out" / "per_group.csv")["group"]) == {"ridge", "valley"}
    assert "site" in result.predictions.columns


def test_a_coco_camera_traps_file_is_evaluated_with_its_locations_as_sites(run_dir, tmp_path):
    images, annotations = [], []
    categories = [{"id": i, "name": name} for i, name in enumerate(COLOURS)]
    for i, label in enumerate(COLOURS):
        for j, path in enumerate(write_colour_images(tmp_path / "img", label, 2, seed=40 + i)):
            image_id = f"{label}-{j}"
            images.append({"id": image_id, "file_name": path.name, "location": f"cam{j}"})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": i})
    coco = tmp_path / "cct.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    result = evaluate(run_dir / "model.keras", coco, tmp_path / "out", root=tmp_path / "img", target_precisions=[0.8])
    assert result.metrics["test"]["n_images"] == 6
    assert [g["group"] for g in result.metrics["test"]["groups"]["site"]] == ["cam0", "cam1"]
    assert result.metrics["test"]["thresholds"]["targets"] == [0.8]


def test_an_existing_output_folder_is_never_overwritten_without_asking(run_dir, new_site, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not empty.*overwrite=True"):
        evaluate(run_dir, new_site, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    evaluate(run_dir, new_site, out, overwrite=True)
    assert (out / "report.html").is_file() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(RunError, match="is a run folder"):
        evaluate(run_dir, new_site, run_dir, overwrite=True)


def test_the_evaluate_command_writes_a_report_and_prints_the_headline(run_dir, new_site, tmp_path):
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(new_site), "--output", str(out),
                                       "--target-precision", "0.9"])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output
    assert "12 images: accuracy" in result.output and "1 unreadable image(s) left out" in result.output
    assert "precision 0.9:" in result.output
    assert json.loads((out / "metrics.json").read_text())["test"]["thresholds"]["targets"] == [0.9]




def test_the_evaluate_command_shows_each_phase_unless_quiet(run_dir, new_site, tmp_path, caplog):
    loud = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(new_site), "-o", str(tmp_path / "a")])
    assert loud.exit_code == 0, loud.output
    assert "checking images" in loud.output and "labelling images" in loud.output
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ecoclassify")]
    for phase in ("loading the model", "labelling 12 images", "report: drawing the plots"):
        assert any(phase in message for message in messages), (phase, messages)
    caplog.clear()
    quiet = CliRunner().invoke(main, ["--quiet", "evaluate", str(run_dir), "--data", str(new_site), "-o",
                                      str(tmp_path / "b")])
    assert quiet.exit_code == 0, quiet.output
    assert "checking images" not in quiet.output and "labelling images" not in quiet.output
    assert quiet.output.startswith("report:") and "12 images: accuracy" in quiet.output
    assert [r for r in caplog.records if r.name.startswith("ecoclassify") and r.levelname == "INFO"] == []

def test_the_evaluate_command_flags_a_target_the_few_images_cannot_support(run_dir, new_site, tmp_path):
    # 12 images: even all right, their one-sided 95 % lower bound is 0.78, below 0.9.
    out = tmp_path / "few"
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(new_site), "--output", str(out),
                                       "--target-precision", "0.9"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "metrics.json").read_text())["test"]["thresholds"]["overall"][0]
    assert row["supported"] is False and row["n_images"] == 12 and row["bound_method"] == "clopper-pearson"
    line = next(line for line in result.output.splitlines() if line.startswith("precision 0.9:"))
    assert "auto-labels" not in line  # never presented as a usable threshold
    if row["reachable"]:
        assert row["precision_lower_bound"] < 0.9
        images = f"{row['n_auto_labelled']} image" + ("" if row["n_auto_labelled"] == 1 else "s")
        assert line.startswith(f"precision 0.9: not supported by the data: {images}, "
                               f"lower bound {row['precision_lower_bound']:.3f} < target 0.9")
    assert "not supported by the data" in (out / "report.md").read_text()
    assert "not supported by the data" in html.unescape((out / "report.html").read_text())


def test_the_evaluate_command_reports_a_target_enough_images_support_as_met(run_dir, tmp_path):
    data = tmp_path / "many"
    for seed, label in enumerate(COLOURS, start=200):
        write_colour_images(data / label, label, 30, seed=seed)
    out = tmp_path / "many-report"
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(data), "--output", str(out),
                                       "--target-precision", "0.4"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "metrics.json").read_text())["test"]["thresholds"]["overall"][0]
    assert row["supported"] is True and row["n_images"] == 90 and row["precision_lower_bound"] >= 0.4
    assert (f"precision 0.4: threshold {row['threshold']:.4f} auto-labels {row['share_auto_labelled']:.1%} of images "
            f"({row['n_auto_labelled']} images, lower bound {row['precision_lower_bound']:.3f})") in result.output

def test_the_evaluate_command_exits_1_listing_unknown_labels_or_counts_them_with_the_option(run_dir, new_site,
                                                                                           tmp_path):
    write_colour_images(new_site / "wolf", "wolf", 2, seed=9)
    failed = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(new_site), "-o", str(tmp_path / "a")])
    assert failed.exit_code == 1
    assert "not classes of the model: wolf (2)" in failed.output and "Traceback" not in failed.output
    counted = CliRunner().invoke(main, ["evaluate", str(run_dir), "--data", str(new_site), "-o", str(tmp_path / "b"),
                                        "--unknown-labels", "other"])
    assert counted.exit_code == 0, counted.output
    assert "14 images" in counted.output


def test_the_evaluate_command_rejects_a_folder_that_is_not_a_model(tmp_path, new_site):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "empty"), "--data", str(new_site)])
    assert result.exit_code == 1 and "run folder containing model.keras" in result.output


def test_evaluate_reports_exactly_the_probabilities_predict_writes_for_the_same_files(run_dir, new_site, tmp_path):
    from ecoclassify.prediction.labelling import predict

    result = evaluate(run_dir, new_site, batch_size=4)
    predicted = predict(run_dir, new_site, batch_size=4).set_index("filepath")
    evaluated = result.predictions
    assert len(evaluated) == 12  # the unreadable file is in excluded.csv, not here
    classes = result.classes
    for row in evaluated.itertuples(index=False):
        relative = Path(row.filepath).relative_to(new_site).as_posix()
        expected = [predicted.loc[relative, f"prob_{name}"] for name in classes]
        got = [getattr(row, f"p_{name}") for name in classes]
        np.testing.assert_allclose(got, expected, rtol=0, atol=5e-7)  # predict rounds to 6 decimals
        assert row.predicted_label == predicted.loc[relative, "label"]
