"""``validate`` / ``prepare_data`` on real files, and the ``ecoclassify`` command line."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import ecoclassify
from ecoclassify.cli.app import main
from ecoclassify.config import Config, load_config
from ecoclassify.data.prepare import prepare_data
from ecoclassify.errors import ConfigError, DataError
from ecoclassify.data.validation import format_validation, validate

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
MODEL = {"backbone": "custom_cnn", "weights": "none"}


def config_for(root: Path, **data) -> Config:
    """A config on ``root`` with small images and a model that needs no download."""
    return Config.from_dict({"data": {"root": str(root), "image_size": 32, **data}, "model": MODEL})


@pytest.fixture
def damaged_folder(tmp_path, write_class_folders, make_image) -> Path:
    """``images/{deer,fox}`` with 6 good JPEGs each, plus three damaged files in ``deer``."""
    root = tmp_path / "images"
    write_class_folders(root, {"deer": 6, "fox": 6})
    good = make_image(tmp_path / "source.jpg").read_bytes()
    (root / "deer" / "empty.jpg").write_bytes(b"")
    (root / "deer" / "notes.jpg").write_text("field notes, not a photo\n")
    (root / "deer" / "cut.jpg").write_bytes(good[: len(good) // 2])
    return root


# --- prepare_data / validate --------------------------------------------------------------------


def test_unreadable_images_are_excluded_with_their_reasons_and_training_can_start(damaged_folder):
    prepared = validate(config_for(damaged_folder, on_corrupt="exclude"))
    reasons = {Path(fp).name: error for fp, error in zip(prepared.excluded["filepath"], prepared.excluded["error"])}
    assert reasons == {"empty.jpg": "empty", "notes.jpg": "unreadable", "cut.jpg": "truncated"}
    assert set(prepared.excluded["label"]) == {"deer"}
    assert prepared.excluded["detail"].str.len().gt(0).all()
    assert prepared.ok and prepared.errors == []
    prepared.raise_if_unusable()
    assert len(prepared.samples) == 12
    assert not prepared.samples["filepath"].str.contains("empty.jpg|notes.jpg|cut.jpg").any()
    assert any(w.startswith("3 unreadable image(s) excluded (1 empty, 1 truncated, 1 unreadable)")
               for w in prepared.warnings)


def test_unreadable_images_stop_training_when_on_corrupt_is_error(damaged_folder):
    prepared = validate(config_for(damaged_folder, on_corrupt="error"))
    assert prepared.ok is False
    assert len(prepared.excluded) == 3
    with pytest.raises(DataError) as info:
        prepared.raise_if_unusable()
    message = str(info.value)
    assert message.startswith(
        "3 image(s) cannot be read (1 empty, 1 truncated, 1 unreadable), and data.on_corrupt is 'error'"
    )
    for name, reason in (("empty.jpg", "empty"), ("notes.jpg", "unreadable"), ("cut.jpg", "truncated")):
        assert f"{damaged_folder / 'deer' / name} ({reason})" in message
    assert "data.on_corrupt: exclude" in message


def test_counts_per_class_and_split_sum_to_the_usable_images(damaged_folder):
    prepared = prepare_data(config_for(damaged_folder))
    counts = prepared.counts()
    assert list(counts.columns) == ["train", "val", "test", "total"]
    assert counts.index.tolist() == prepared.classes == ["deer", "fox"]
    assert counts[["train", "val", "test"]].to_numpy().sum() == len(prepared.samples) == 12
    assert (counts["total"] == counts[["train", "val", "test"]].sum(axis=1)).all()
    assert counts.loc["deer"].tolist() == [4, 1, 1, 6]


def test_split_frame_returns_the_samples_of_one_split(damaged_folder):
    prepared = prepare_data(config_for(damaged_folder))
    sizes = {name: len(prepared.split_frame(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 2}


def test_byte_identical_images_in_two_splits_are_reported_as_leaks(tmp_path, write_class_folders):
    written = write_class_folders(tmp_path / "train", {"deer": 3, "fox": 3})
    write_class_folders(tmp_path / "test", {"deer": 1, "fox": 1})
    write_class_folders(tmp_path / "val", {"deer": 1, "fox": 1})
    leaked = tmp_path / "test" / "deer" / "copy_of_train.jpg"
    shutil.copyfile(written["deer"][0], leaked)
    within = tmp_path / "train" / "fox" / "burst_copy.jpg"  # a duplicate inside one split is not a leak
    shutil.copyfile(written["fox"][0], within)
    prepared = validate(config_for(tmp_path, split={"method": "predefined"}, min_images_per_class=1))
    assert prepared.ok
    assert len(prepared.duplicates) == 4 and prepared.duplicates["sha1"].nunique() == 2
    assert sorted(prepared.leaks["filepath"]) == sorted([str(written["deer"][0]), str(leaked)])
    assert sorted(prepared.leaks["split"]) == ["test", "train"]
    assert any(w.startswith("leakage: 1 identical image(s) appear in more than one split") for w in prepared.warnings)
    report = format_validation(prepared)
    assert " = ".join(sorted([str(written["deer"][0]), str(leaked)])) in report


def test_a_class_too_small_after_exclusions_makes_validation_not_ok(damaged_folder):
    prepared = validate(config_for(damaged_folder, min_images_per_class=7))
    assert not prepared.ok
    assert "deer (6)" in prepared.errors[0] and "fox (6)" in prepared.errors[0]
    with pytest.raises(DataError, match="data.min_images_per_class=7"):
        prepared.raise_if_unusable()


def test_class_weights_naming_an_unknown_class_make_validation_not_ok(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 5, "fox": 5})
    config = Config.from_dict({"data": {"root": str(tmp_path), "image_size": 32}, "model": MODEL,
                               "training": {"class_weight": {"deer": 1, "wolf": 3}}})
    prepared = validate(config)
    assert prepared.errors == ["training.class_weight names classes that are not in the data: wolf. Classes: deer, fox"]


def test_validate_accepts_the_path_of_a_yaml_config(tmp_path, write_class_folders, write_config):
    write_class_folders(tmp_path / "images", {"deer": 5, "fox": 5})
    path = write_config(tmp_path, {"data": {"root": "images", "image_size": 32}, "model": MODEL})
    prepared = validate(path)
    assert prepared.ok and prepared.classes == ["deer", "fox"] and prepared.root == tmp_path / "images"


def test_the_public_validate_function_stays_callable_after_its_module_is_imported(
    tmp_path, write_class_folders, write_config
):
    importlib.import_module("ecoclassify.data.validation")  # what the CLI (or a first call) does
    importlib.import_module("ecoclassify.cli.app")
    write_class_folders(tmp_path / "images", {"deer": 5, "fox": 5})
    path = write_config(tmp_path, {"data": {"root": "images", "image_size": 32}, "model": MODEL})
    assert ecoclassify.validate(path).ok


def test_a_source_without_any_labelled_image_is_a_data_error(tmp_path, write_csv):
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], [])
    config = Config.from_dict({"data": {"source": "csv", "labels": str(tmp_path / "labels.csv"), "image_size": 32},
                               "model": MODEL})
    with pytest.raises(DataError, match="no labelled images found for data.source 'csv'"):
        prepare_data(config)


def test_png_images_are_usable_like_jpegs(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 5, "fox": 5}, suffix=".png")
    prepared = validate(config_for(tmp_path))
    assert prepared.excluded["error"].tolist() == []
    assert len(prepared.samples) == 10


def test_progress_is_reported_once_per_image(damaged_folder):
    calls = []
    validate(config_for(damaged_folder), progress=lambda advance, total: calls.append((advance, total)))
    assert calls == [(1, 15)] * 15


# --- command line -------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def good_config(tmp_path, write_class_folders, write_config) -> Path:
    write_class_folders(tmp_path / "images", {"deer": 6, "fox": 6})
    return write_config(tmp_path, {"data": {"root": "images", "image_size": 32}, "model": MODEL})


def test_cli_validate_prints_the_counts_table_and_exits_0_on_good_data(runner, good_config):
    result = runner.invoke(main, ["validate", str(good_config)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines.index("images per class and split:")
    assert lines[header + 1].split() == ["split", "train", "val", "test", "total"]
    assert lines[header + 3].split() == ["deer", "4", "1", "1", "6"]
    assert lines[header + 4].split() == ["fox", "4", "1", "1", "6"]
    assert "usable images: 12; classes: 2" in result.stdout
    assert result.stdout.rstrip().endswith("OK: training can start.")


def test_cli_validate_exits_1_naming_the_class_when_training_would_fail(runner, tmp_path, write_class_folders,
                                                                       write_config):
    write_class_folders(tmp_path / "images", {"deer": 6, "fox": 2})
    path = write_config(tmp_path, {"data": {"root": "images", "image_size": 32}, "model": MODEL})
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert "fox (2)" in result.stdout
    assert "deer (" not in result.stdout
    assert result.stdout.rstrip().endswith("NOT OK: training would fail (see errors above).")


def test_cli_validate_lists_unreadable_files_with_reasons(runner, damaged_folder, write_config):
    path = write_config(damaged_folder.parent, {"data": {"root": "images", "image_size": 32}, "model": MODEL})
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "unreadable images (3):" in result.stdout
    assert f"  {damaged_folder / 'deer' / 'empty.jpg'}: empty - the file has zero bytes" in result.stdout


def test_cli_config_errors_exit_2_with_one_paragraph_and_no_traceback(runner, tmp_path, write_config):
    path = write_config(tmp_path, {"data": {"root": "images", "split": {"methd": "group"}}, "model": MODEL})
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: data.split.methd is not a valid key in data.split.")
    assert "(did you mean 'method'?)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_data_errors_exit_1_with_one_paragraph(runner, tmp_path, write_config):
    path = write_config(tmp_path, {"data": {"root": "no_such_folder"}, "model": MODEL})
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    expected = f"Error: data.root must be an existing folder. Received: '{tmp_path / 'no_such_folder'}'"
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.output


def test_cli_a_missing_config_file_exits_2(runner, tmp_path):
    result = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: config file not found: {tmp_path / 'nope.yaml'}"


def test_cli_usage_errors_exit_2(runner, tmp_path):
    result = runner.invoke(main, ["validate", str(tmp_path)])  # a folder, not a config file
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2


def test_cli_set_overrides_the_yaml(runner, good_config):
    too_strict = runner.invoke(main, ["validate", str(good_config), "--set", "data.min_images_per_class=7"])
    assert too_strict.exit_code == 1 and "data.min_images_per_class=7" in too_strict.stdout
    misspelt = runner.invoke(main, ["validate", str(good_config), "--set", "training.batchsize=16"])
    assert misspelt.exit_code == 2 and "(did you mean 'batch_size'?)" in misspelt.stderr
    malformed = runner.invoke(main, ["validate", str(good_config), "--set", "training.batch_size"])
    assert malformed.exit_code == 2 and "--set expects key.path=value" in malformed.stderr


def test_cli_debug_shows_the_exception_instead_of_a_paragraph(runner, tmp_path, write_config):
    path = write_config(tmp_path, {"data": {"root": "images"}, "trainig": {}})
    result = runner.invoke(main, ["--debug", "validate", str(path)])
    assert isinstance(result.exception, ConfigError)
    assert "Error: " not in result.output


def test_cli_version_prints_the_package_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ecoclassify, version {ecoclassify.__version__}"


COMMANDS = [[]] + [[name] for name in sorted(main.commands)]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c else "main")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(runner, command, flag):
    result = runner.invoke(main, [*command, flag])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: main {' '.join(command)}".rstrip())
    assert "Traceback" not in result.output


def test_the_validate_command_is_registered(runner):
    assert "validate" in main.commands
    assert "validate" in runner.invoke(main, ["--help"]).stdout


def test_the_quickstart_config_validates_ok(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCLASSIFY_CACHE", str(tmp_path / "cache"))
    output_dir = load_config(QUICKSTART).experiment.output_dir
    output_existed = output_dir.exists()
    result = runner.invoke(main, ["validate", str(QUICKSTART), "--set", "data.demo.images_per_class=30"])
    assert result.exit_code == 0, result.output
    assert "OK: training can start." in result.stdout
    for label in ("bird", "deer", "empty", "fox"):
        assert any(line.split()[:1] == [label] and line.split()[-1] == "30" for line in result.stdout.splitlines())
    assert list((tmp_path / "cache").glob("demo-v*-30x*px/labels.csv"))  # generated into the cache, not ~
    assert output_dir.exists() == output_existed  # validation writes no run folder


def test_the_quickstart_config_expands_its_mode_and_resolves_output_dir_against_its_folder():
    raw = yaml.safe_load(QUICKSTART.read_text())
    config = load_config(QUICKSTART)
    assert config.model.backbone == raw["model"]["backbone"]
    assert len(config.training.stages) == (2 if raw["training"].get("mode") == "finetune" else 1)
    assert config.training.stages[0].epochs == raw["training"]["epochs"]
    assert config.experiment.output_dir == Path(os.path.normpath(QUICKSTART.parent / raw["experiment"]["output_dir"]))


def test_importing_the_cli_and_validating_a_config_never_imports_tensorflow(tmp_path):
    code = (
        "import sys, ecoclassify.cli.app, ecoclassify.config, ecoclassify.data.validation\n"
        f"ecoclassify.config.load_config({str(QUICKSTART)!r})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# --- images that must not be opened -------------------------------------------------------------


def test_a_device_listed_in_a_csv_is_never_opened_even_when_outside_paths_are_allowed(tmp_path, make_image,
                                                                                       write_csv):
    for label in ("deer", "fox"):
        for i in range(6):
            make_image(tmp_path / label / f"{i}.jpg")
    rows = [(f"{label}/{i}.jpg", label) for label in ("deer", "fox") for i in range(6)] + [("/dev/zero", "fox")]
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], rows)
    config = Config.from_dict({"data": {"source": "csv", "labels": str(tmp_path / "labels.csv"), "image_size": 32,
                                        "allow_outside_root": True}, "model": MODEL})
    prepared = prepare_data(config)
    assert prepared.ok and len(prepared.samples) == 12
    assert prepared.excluded[["filepath", "error"]].values.tolist() == [["/dev/zero", "not_a_regular_file"]]


def test_cli_validate_lists_csv_paths_outside_the_root_as_left_out_unopened(runner, tmp_path, write_class_folders,
                                                                            write_config, write_csv):
    write_class_folders(tmp_path / "data", {"deer": 6, "fox": 6})
    rows = [(f"{label}/img_{i:03d}.jpg", label) for label in ("deer", "fox") for i in range(6)]
    write_csv(tmp_path / "data" / "labels.csv", ["filepath", "label"], rows + [("/etc/passwd", "fox")])
    path = write_config(tmp_path, {"data": {"source": "csv", "labels": "data/labels.csv", "image_size": 32},
                                   "model": MODEL})
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "images left out unopened (1):" in result.stdout
    assert "  /etc/passwd: outside_root - it leads to /etc/passwd, outside" in result.stdout
    assert "usable images: 12" in result.stdout


@pytest.mark.slow
def test_cli_validate_and_train_agree_on_a_file_name_that_is_not_utf8(runner, tmp_path, write_class_folders,
                                                                     write_config):
    images = tmp_path / "images"
    write_class_folders(images, {"deer": 6, "fox": 6})
    odd = os.fsdecode(bytes(images / "deer") + b"/caf\xe9.jpg")  # a Latin-1 name from an old camera or card
    shutil.copy(images / "deer" / "img_000.jpg", odd)
    shown = f"{images / 'deer'}/caf\\xe9.jpg"
    path = write_config(tmp_path, {
        "experiment": {"name": "odd", "output_dir": "runs"},
        "data": {"root": "images", "image_size": 32},
        "model": {**MODEL, "custom_cnn": {"filters": [4]}},
        "training": {"epochs": 1, "batch_size": 8, "mode": "scratch"},
    })
    checked = runner.invoke(main, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "usable images: 12" in checked.stdout
    assert f"  {shown}: undecodable_name - " in checked.stdout
    trained = runner.invoke(main, ["train", str(path)])
    assert trained.exit_code == 0, trained.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    splits = (run_dir / "splits.csv").read_text(encoding="utf-8")
    assert len(splits.splitlines()) == 1 + 12 and "caf" not in splits
    excluded = (run_dir / "excluded.csv").read_text(encoding="utf-8").splitlines()
    assert excluded[1].startswith(f"{shown},deer,undecodable_name,")
    assert (run_dir / "model.keras").is_file()
