"""The shipped camera-trap configs on the real camera-trap set in ../shared (skipped without it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecoclassify.cli.app import main
from ecoclassify.config import load_config
from ecoclassify.data.prepare import prepare_data

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CAMERA_TRAP_CONFIGS = sorted(CONFIGS.glob("camera_traps_*.yaml"))
# camera_traps_grouped.yaml is the template for a user's own CSV (placeholder paths).
SHIPPED_FOR_THE_BENCHMARK = [p for p in CAMERA_TRAP_CONFIGS if p.name != "camera_traps_grouped.yaml"]

pytestmark = pytest.mark.shared


@pytest.fixture
def coarse_csv(shared_dir) -> Path:
    return shared_dir / "data" / "camera-traps" / "coarse.csv"


def test_the_benchmark_configs_point_at_the_shared_csv_and_leave_exclude_out_through_config(coarse_csv):
    assert len(SHIPPED_FOR_THE_BENCHMARK) == 7
    assert CONFIGS / "camera_traps_new_sites.yaml" in SHIPPED_FOR_THE_BENCHMARK
    for path in SHIPPED_FOR_THE_BENCHMARK:
        config = load_config(path)
        assert config.data.source == "csv"
        assert Path(config.data.labels).resolve() == coarse_csv.resolve(), path.name
        assert config.data.exclude_labels == ["exclude"], path.name


def test_the_real_camera_trap_csv_is_read_as_is_with_every_image_usable(coarse_csv):
    before = hashlib.sha1(coarse_csv.read_bytes()).hexdigest()
    table = pd.read_csv(coarse_csv)
    prepared = prepare_data(load_config(CONFIGS / "camera_traps_vgg16_finetune.yaml"))

    assert prepared.ok, prepared.errors
    kept = table[table["label"] != "exclude"]
    assert len(prepared.samples) == len(kept) == 435
    assert prepared.classes == sorted(kept["label"].unique())
    assert "exclude" not in prepared.classes
    assert prepared.excluded.empty and not prepared.skipped
    names = {Path(p).name for p in prepared.samples["filepath"]}
    assert "vulture-trailcam-1.png" in names  # the PNG among the JPEGs
    assert hashlib.sha1(coarse_csv.read_bytes()).hexdigest() == before


def test_grouping_the_real_set_by_source_keeps_every_source_in_one_split(coarse_csv):
    config = load_config(CONFIGS / "camera_traps_efficientnet_lite0_transfer.yaml",
                         overrides=["data.split.method=group", "data.split.group_by=source"])
    prepared = prepare_data(config)
    samples = prepared.samples
    sources = samples["filepath"].map(lambda p: Path(p).relative_to(coarse_csv.parent).parts[0])
    assert sources.nunique() == 7
    assert (samples.assign(source=sources).groupby("source")["split"].nunique() == 1).all()
    assert set(samples["split"]) == {"train", "val", "test"}


def test_validate_accepts_the_shipped_fine_tune_config_on_the_real_set(coarse_csv):
    result = CliRunner().invoke(main, ["validate", str(CONFIGS / "camera_traps_efficientnet_lite0_finetune.yaml")])
    assert result.exit_code == 0, result.output
    assert "usable images: 435; classes: 6" in result.output
    assert "36 image(s) left out by the label filter" in result.output


def test_the_new_sites_config_validates_and_tests_on_sources_it_never_trained_on(coarse_csv):
    prepared = prepare_data(load_config(CONFIGS / "camera_traps_new_sites.yaml"))

    assert prepared.ok, prepared.errors
    samples = prepared.samples
    sources = samples["filepath"].map(lambda p: Path(p).relative_to(coarse_csv.parent).parts[0])
    held_out = set(sources[samples["split"] != "train"])
    assert held_out and not held_out & set(sources[samples["split"] == "train"])
