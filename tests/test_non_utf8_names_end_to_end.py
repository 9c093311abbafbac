"""A folder with file names that are not UTF-8, through the whole command line: validate, train,
predict and sort (issue: hostile and unlucky input, item 3). Nothing crashes, nothing is lost,
and validate agrees with train."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.prediction._predict_support import run_cli
from tests.training.test_train import tiny_config, write_learnable_folders

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform in ("win32", "darwin"),
                                 reason="only Linux-like file systems store names as arbitrary bytes")]

LATIN1 = b"caf\xe9.jpg"  # "café.jpg" written by a Latin-1 system


def test_a_folder_with_a_name_that_is_not_utf8_goes_through_validate_train_predict_and_sort(tmp_path):
    images = write_learnable_folders(tmp_path / "images")
    odd = Path(os.fsdecode(bytes(images / "deer") + b"/" + LATIN1))
    shutil.copy(images / "deer" / "deer_00.jpg", odd)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, training={"epochs": 1})), encoding="utf-8")

    validated = run_cli("validate", str(config), timeout=600)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "undecodable_name" in validated.stdout and "caf\\xe9.jpg" in validated.stdout

    trained = run_cli("train", str(config), timeout=900)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    excluded = pd.read_csv(run_dir / "excluded.csv", dtype=str, keep_default_na=False)
    assert excluded[["error"]].values.tolist() == [["undecodable_name"]]
    assert excluded["filepath"].iloc[0].endswith("caf\\xe9.jpg")  # printable, and the same as validate said
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    assert len(splits) == 30  # the other images, each once

    output = tmp_path / "predictions.csv"
    predicted = run_cli("predict", str(run_dir), str(images), "-o", str(output), timeout=600)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert "31 images: 31 ok" in predicted.stdout  # predict labels the file training could not list

    dest = tmp_path / "sorted"
    sorted_ = run_cli("sort", str(output), str(dest), timeout=600)
    assert sorted_.returncode == 0, sorted_.stdout + sorted_.stderr
    copies = [p for p in dest.rglob("*") if p.is_file() and p.name.endswith(".jpg")]
    assert len(copies) == 31
    assert any(os.fsencode(p.name) == LATIN1 for p in copies)  # the very bytes of the name
    assert odd.read_bytes() == next(p for p in copies if os.fsencode(p.name) == LATIN1).read_bytes()
