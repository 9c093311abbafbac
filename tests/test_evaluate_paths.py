"""``evaluate`` lists the images its labels file points outside the root at, and never opens them."""

from __future__ import annotations


import pandas as pd
import pytest

from ecoclassify.config import Config
from ecoclassify.evaluation import evaluate
from ecoclassify.models.build import build_model

pytestmark = pytest.mark.slow


def test_evaluate_lists_csv_paths_outside_the_root_in_excluded_csv(tmp_path, make_image, write_csv):
    config = Config.from_dict({"data": {"source": "demo", "image_size": 32},
                               "model": {"backbone": "custom_cnn", "weights": "none",
                                         "custom_cnn": {"filters": [4], "convs_per_block": 1}}})
    run = tmp_path / "run"
    run.mkdir()
    build_model(config, num_classes=2).save(run / "model.keras")
    (run / "labels.json").write_text('{"classes": ["deer", "fox"]}')
    rows = []
    for label in ("deer", "fox"):
        for i in range(3):
            make_image(tmp_path / "data" / label / f"{i}.jpg")
            rows.append((f"{label}/{i}.jpg", label))
    make_image(tmp_path / "secret.jpg")
    labels = write_csv(tmp_path / "data" / "labels.csv", ["filepath", "label"], rows + [("../secret.jpg", "fox")])
    result = evaluate(run, labels, tmp_path / "out")
    assert result.metrics["test"]["n_images"] == 6
    excluded = pd.read_csv(tmp_path / "out" / "excluded.csv", dtype=str)
    assert excluded[["filepath", "label", "error"]].values.tolist() == [
        [str(tmp_path / "data" / ".." / "secret.jpg"), "fox", "outside_root"]]
