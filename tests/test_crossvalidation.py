"""``ecoclassify crossval``: one run per fold, pooled out-of-fold predictions, resume, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ecoclassify.cli.app import main
from ecoclassify.crossvalidation import CrossvalInterrupted, crossval

pytestmark = pytest.mark.slow

COLOURS = {"deer": (150, 90, 40), "fox": (40, 90, 160), "owl": (60, 150, 60)}
SITES = ("siteA", "siteB", "siteC")


def write_sites(root: Path, per_class: int = 4, owl_only_at: str | None = None) -> Path:
    """Learnable images (class colour + noise) at three sites, listed in ``root/labels.csv``."""
    rng = np.random.default_rng(0)
    rows = []
    for site in SITES:
        for label, colour in COLOURS.items():
            if owl_only_at and label == "owl" and site != owl_only_at:
                continue
            for i in range(per_class):
                path = root / site / f"{label}_{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path, quality=95)
                rows.append({"filepath": f"{site}/{label}_{i}.jpg", "label": label, "site": site})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def tiny_config(tmp_path: Path, labels: Path, epochs: int = 1) -> Path:
    config = {
        "experiment": {"name": "cv", "output_dir": str(tmp_path / "runs"), "seed": 3},
        "data": {"source": "csv", "labels": str(labels), "image_size": 32, "min_images_per_class": 2,
                 "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"backbone": "custom_cnn", "weights": "none",
                  "custom_cnn": {"filters": [4], "convs_per_block": 1}, "head": {"dense": [], "dropout": 0.0}},
        "augmentation": {"enabled": False},
        "training": {"batch_size": 8, "mode": "scratch", "epochs": epochs, "learning_rate": 0.01,
                     "early_stopping": {"enabled": False}},
    }
    path = tmp_path / "cv.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + (repr(result.exception) if result.exit_code not in (0, 1, 2) else "")


def only_crossval_dir(tmp_path: Path) -> Path:
    (found,) = [p for p in (tmp_path / "runs").iterdir() if "-crossval-" in p.name]
    return found


def fold_dirs(cv_dir: Path) -> dict[str, Path]:
    """The fold run folders (``fold-<name>-<timestamp>``) by fold name; folders kept aside are not runs."""
    runs = (re.fullmatch(r"(fold-.+)-\d{8}-\d{6}(-\d+)?", p.name) for p in cv_dir.iterdir() if p.is_dir())
    return {match.group(1): cv_dir / match.group(0) for match in runs if match}


def test_leaving_one_site_out_trains_a_run_per_site_and_pools_their_predictions(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images"))
    code, output = run_cli("crossval", str(config), "--group-by", "site")
    assert code == 0, output
    cv_dir = only_crossval_dir(tmp_path)
    assert f"crossval folder: {cv_dir}" in output and "pooled over 36 of 36 images" in output

    runs = fold_dirs(cv_dir)
    assert sorted(runs) == ["fold-siteA", "fold-siteB", "fold-siteC"]
    for site in SITES:
        splits = pd.read_csv(runs[f"fold-{site}"] / "splits.csv")
        held_out = splits["filepath"].str.contains(f"/{site}/")
        # The held-out site is exactly the test split: no image of it trains or picks the model.
        assert (splits.loc[held_out, "split"] == "test").all() and held_out.sum() == 12
        assert (splits.loc[~held_out, "split"] != "test").all() and (splits["split"] == "val").any()
        assert (runs[f"fold-{site}"] / "model.keras").is_file()

    state = json.loads((cv_dir / "crossval.json").read_text())
    assert state["status"] == "finished" and state["protocol"] == {"type": "leave-one-group-out", "group_by": "site"}
    assert [f["status"] for f in state["folds"]] == ["finished"] * 3
    assert state["n_images_covered"] == 36 and state["n_images_not_covered"] == 0
    # The pooled figures are those of the folds' own test predictions, put together.
    pooled = pd.concat(pd.read_csv(runs[f"fold-{site}"] / "report" / "predictions_test.csv") for site in SITES)
    assert state["pooled"]["accuracy"] == pytest.approx(pooled["correct"].mean())
    per_group = pd.read_csv(cv_dir / "report" / "per_group.csv")
    assert per_group["group"].tolist() == list(SITES) and per_group["n_images"].tolist() == [12, 12, 12]
    assert [row["group"] for row in state["per_group"]] == list(SITES)
    assert {row["class"] for row in state["per_class"]} == set(COLOURS)
    assert np.array(state["confusion_matrix"]["counts"]).sum() == 36
    folds = pd.read_csv(cv_dir / "folds.csv")
    assert folds["fold"].tolist() == ["fold-siteA", "fold-siteB", "fold-siteC"]
    assert folds["n_test"].tolist() == [12, 12, 12] and set(folds["status"]) == {"finished"}
    assert (cv_dir / "report" / "report.html").is_file()


def test_k_fold_crossval_predicts_every_image_exactly_once(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images"))
    code, output = run_cli("crossval", str(config), "--folds", "3", "--set", "experiment.name=kfold")
    assert code == 0, output
    cv_dir = only_crossval_dir(tmp_path)
    assert cv_dir.name.startswith("kfold-crossval-")
    runs = fold_dirs(cv_dir)
    assert sorted(runs) == ["fold-1", "fold-2", "fold-3"]
    tested = pd.concat(pd.read_csv(run / "splits.csv").query("split == 'test'") for run in runs.values())
    assert len(tested) == 36 and tested["filepath"].is_unique
    # Stratified: every class is in every fold's test part, 4 images of each.
    assert (tested.groupby("label").size() == 12).all()
    predictions = pd.read_csv(cv_dir / "report" / "predictions_test.csv")
    assert len(predictions) == 36 and set(predictions["fold"]) == {"fold-1", "fold-2", "fold-3"}


class InterruptAtEpoch(keras.callbacks.Callback):
    """Simulates Ctrl-C at the end of the n-th epoch counted over all folds (1-based)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_an_interrupted_crossval_resumes_at_its_first_unfinished_fold(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images"), epochs=2)
    with pytest.raises(CrossvalInterrupted) as stopped:
        crossval(config, group_by="site", verbose=0, callbacks=[InterruptAtEpoch(3)])  # fold 2, first epoch
    assert stopped.value.exit_code == 130 and "--resume" in str(stopped.value)
    cv_dir = only_crossval_dir(tmp_path)
    before = fold_dirs(cv_dir)
    assert sorted(before) == ["fold-siteA", "fold-siteB"]
    first_model = (before["fold-siteA"] / "model.keras").read_bytes()
    assert pd.read_csv(before["fold-siteB"] / "history.csv")["epoch"].tolist() == [0]
    state = json.loads((cv_dir / "crossval.json").read_text())
    assert [f["status"] for f in state["folds"]] == ["finished", "pending", "pending"]

    code, output = run_cli("crossval", "--resume", str(cv_dir))
    assert code == 0, output
    after = fold_dirs(cv_dir)
    assert sorted(after) == ["fold-siteA", "fold-siteB", "fold-siteC"]
    # The finished fold is kept as it was; the interrupted one continued in its own folder.
    assert after["fold-siteA"] == before["fold-siteA"] and (after["fold-siteA"] / "model.keras").read_bytes() == first_model
    assert after["fold-siteB"] == before["fold-siteB"]
    assert pd.read_csv(after["fold-siteB"] / "history.csv")["epoch"].tolist() == [0, 1]
    state = json.loads((cv_dir / "crossval.json").read_text())
    assert state["status"] == "finished" and state["n_images_covered"] == 36
    code, output = run_cli("crossval", "--resume", str(cv_dir))
    assert code == 1 and "already finished" in output


def test_a_fold_run_that_cannot_be_resumed_is_kept_aside_and_trained_again(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images"))
    with pytest.raises(CrossvalInterrupted):
        crossval(config, group_by="site", verbose=0, callbacks=[InterruptAtEpoch(2)])  # fold 2, first epoch
    cv_dir = only_crossval_dir(tmp_path)
    broken = fold_dirs(cv_dir)["fold-siteB"]
    (broken / "splits.csv").unlink()  # a run folder train --resume refuses

    result = crossval(None, resume=cv_dir, verbose=0)
    assert result["status"] == "finished" and result["n_images_covered"] == 36
    assert not broken.exists() and broken.with_name(broken.name + ".incomplete").is_dir()
    retrained = fold_dirs(cv_dir)["fold-siteB"]
    assert retrained != broken and (retrained / "model.keras").is_file()
    assert result["folds"][1]["run_dir"] == retrained.name


def test_a_fold_whose_training_part_lacks_a_class_is_listed_and_not_counted(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images", owl_only_at="siteC"))
    code, output = run_cli("crossval", str(config), "--group-by", "site")
    assert code == 0, output
    assert "pooled over 16 of 28 images" in output and "fold-siteC not trained" in output
    cv_dir = only_crossval_dir(tmp_path)
    assert sorted(fold_dirs(cv_dir)) == ["fold-siteA", "fold-siteB"]
    state = json.loads((cv_dir / "crossval.json").read_text())
    skipped = [f for f in state["folds"] if f["status"] == "skipped"]
    assert [f["fold"] for f in skipped] == ["fold-siteC"] and "owl" in skipped[0]["reason"]
    assert skipped[0]["n_test"] == 12 and state["folds_skipped"] == ["fold-siteC"]
    assert state["n_images_covered"] == 16 and state["n_images_not_covered"] == 12
    assert state["n_images"] == 28 and state["n_images_in_skipped_folds"] == 12
    report = json.loads((cv_dir / "report" / "metrics.json").read_text())
    assert any("fold-siteC was not trained" in note for note in report["notes"])
    assert pd.read_csv(cv_dir / "folds.csv").set_index("fold").loc["fold-siteC", "status"] == "skipped"


RUN = """
import sys
from ecoclassify.cli import main
try:
    code = main.main(args=sys.argv[1:], prog_name="ecoclassify", standalone_mode=False) or 0
except SystemExit as exc:
    code = exc.code
except BaseException as exc:
    code = getattr(exc, "exit_code", 99)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("\\nRESULT", {"code": code, "loaded": loaded[:3]})
"""


def run_fresh_cli(*args: str, cwd: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")][-1]
    return eval(line[len("RESULT "):]), done.stdout + done.stderr  # noqa: S307 - our own repr


def test_a_missing_group_column_is_refused_naming_the_columns_before_tensorflow_loads(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images", per_class=2))
    result, output = run_fresh_cli("crossval", str(config), "--group-by", "camera", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "--group-by 'camera' is not a column of the data. Columns found: label, site" in output
    assert not (tmp_path / "runs").exists()


def test_images_without_a_group_value_are_refused_naming_examples(tmp_path):
    labels = write_sites(tmp_path / "images", per_class=2)
    table = pd.read_csv(labels)
    table.loc[3, "site"] = None
    table.to_csv(labels, index=False)
    code, output = run_cli("crossval", str(tiny_config(tmp_path, labels)), "--group-by", "site")
    assert code == 1 and "--group-by 'site': 1 image(s) have no site value" in output
    assert table.loc[3, "filepath"] in output
    assert not (tmp_path / "runs").exists()


def test_a_group_column_with_one_value_is_refused_naming_it(tmp_path):
    labels = write_sites(tmp_path / "images", per_class=2)
    table = pd.read_csv(labels).assign(site="siteA")
    table.to_csv(labels, index=False)
    config = tiny_config(tmp_path, labels)
    result, output = run_fresh_cli("crossval", str(config), "--group-by", "site", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "needs at least 2 groups" in output and "Received values: ['siteA']" in output
    assert not (tmp_path / "runs").exists()


def test_crossval_options_are_checked_before_anything_is_written(tmp_path):
    config = tiny_config(tmp_path, write_sites(tmp_path / "images", per_class=2))
    code, output = run_cli("crossval", str(config), "--group-by", "site", "--folds", "3")
    assert code == 2 and "exactly one of --group-by COLUMN" in output
    code, output = run_cli("crossval", str(config))
    assert code == 2 and "Received: group_by=None, folds=None" in output
    code, output = run_cli("crossval", str(config), "--folds", "1")
    assert code == 2 and "--folds must be an integer of at least 2. Received: 1" in output
    code, output = run_cli("crossval", str(config), "--group-by", "split")
    assert code == 2 and "--group-by cannot be 'split'" in output
    code, output = run_cli("crossval", "--resume", str(tmp_path), "--set", "training.epochs=3")
    assert code == 2 and "--set changes a CONFIG" in output
    code, output = run_cli("crossval", "--resume", str(tmp_path))
    assert code == 1 and "is not a crossval folder" in output
    assert not (tmp_path / "runs").exists()
