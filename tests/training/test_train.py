"""Training end to end: run folder, stages and freezing, determinism, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from ecoclassify.cli.app import main
from ecoclassify.config import Config
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.run import new_run_dir
from ecoclassify.training.session import TrainingInterrupted, train

pytestmark = pytest.mark.slow

COLOURS = {"deer": (150, 90, 40), "fox": (40, 90, 160), "owl": (60, 150, 60)}


def write_learnable_folders(root: Path, per_class: int = 10, size: int = 32) -> Path:
    """Class folders whose images a tiny CNN can tell apart: a class colour plus noise."""
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i:02d}.jpg", quality=95)
    return root


def tiny_config(tmp_path: Path, **sections) -> dict:
    """A config mapping for a tiny custom CNN on 32 px images in ``tmp_path/images``."""
    config = {
        "experiment": {"name": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 7},
        "data": {"source": "folders", "root": str(tmp_path / "images"), "image_size": [32, 32],
                 "min_images_per_class": 5, "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"backbone": "custom_cnn", "weights": "none",
                  "custom_cnn": {"filters": [8, 16], "convs_per_block": 1}, "head": {"dense": [16], "dropout": 0.1}},
        "augmentation": {"enabled": False},
        "training": {"batch_size": 8, "mode": "scratch", "epochs": 2, "learning_rate": 0.01,
                     "early_stopping": {"enabled": False}},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_learnable_folders(tmp_path / "images")


class StopAfter(keras.callbacks.Callback):
    """Simulates Ctrl-C at the end of a given (absolute) epoch."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_training_writes_a_complete_run_folder_with_a_self_contained_model(tmp_path, images):
    (images / "fox" / "broken.jpg").write_bytes(b"not a jpeg at all")
    run = train(Config.from_dict(tiny_config(tmp_path)), verbose=0)

    names = {p.name for p in run.run_dir.iterdir()}
    assert {"config.yaml", "labels.json", "splits.csv", "excluded.csv", "model.keras", "history.csv",
            "metrics.json", "state.json"} <= names
    assert "backup" not in names  # resume data is removed once training finished
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert {"ecoclassify", "tensorflow", "keras"} <= set(saved["provenance"])
    assert json.loads((run.run_dir / "labels.json").read_text())["classes"] == ["deer", "fox", "owl"]
    excluded = pd.read_csv(run.run_dir / "excluded.csv")
    assert excluded["filepath"].str.endswith("broken.jpg").tolist() == [True]
    assert excluded["error"].tolist() == ["unreadable"]
    splits = pd.read_csv(run.run_dir / "splits.csv")
    assert list(splits.columns) == ["filepath", "label", "group", "split"]
    assert len(splits) == 30 and not splits["filepath"].str.endswith("broken.jpg").any()
    history = pd.read_csv(run.run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert {"val_macro_f1", "val_accuracy", "loss"} <= set(history.columns)
    test = json.loads((run.run_dir / "metrics.json").read_text())["test"]
    assert test["n_images"] == 6 and 0 <= test["accuracy"] <= 1 and 0 <= test["macro_f1"] <= 1
    assert test["mAP"] is not None

    # The saved model needs nothing else: raw uint8 pixels in, probabilities out, safe to load.
    model = keras.saving.load_model(run.model_path, safe_mode=True)
    pixels = np.asarray(Image.open(images / "deer" / "deer_00.jpg"))[None]
    proba = model.predict(pixels, verbose=0)
    assert proba.shape == (1, 3) and abs(float(proba.sum()) - 1) < 1e-5


def test_a_run_folder_is_never_reused(tmp_path):
    from datetime import datetime

    now = datetime(2026, 1, 2, 3, 4, 5)
    first = new_run_dir(tmp_path, "exp", now)
    second = new_run_dir(tmp_path, "exp", now)
    assert first.name == "exp-20260102-030405" and second.name == "exp-20260102-030405-2"


def test_frozen_backbone_weights_do_not_move_while_the_head_trains(tmp_path, images):
    config = tiny_config(tmp_path, model={"backbone": "mobilenet_v2", "weights": "none", "head": {"dense": []}},
                         training={"mode": "transfer", "epochs": 1})
    from ecoclassify.models.build import build_model

    keras.utils.set_random_seed(7)
    reference = build_model(Config.from_dict(config), 3).get_layer("backbone").get_weights()
    run = train(Config.from_dict(config), verbose=0)
    model = keras.saving.load_model(run.model_path, safe_mode=True)
    after = model.get_layer("backbone").get_weights()
    assert len(after) == len(reference)
    assert all(np.array_equal(a, b) for a, b in zip(reference, after))  # BN statistics included
    head = model.get_layer("predictions").get_weights()
    keras.utils.set_random_seed(7)
    fresh_head = build_model(Config.from_dict(config), 3).get_layer("predictions").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(head, fresh_head))


def test_a_from_layer_stage_trains_exactly_the_layers_from_the_boundary_on(tmp_path, images):
    config = Config.from_dict(tiny_config(tmp_path, model={"backbone": "vgg16", "weights": "none"}, training={
        "mode": None, "stages": [{"epochs": 1, "learning_rate": 1e-3, "trainable": {"from_layer": "block5_conv1"}}]}))
    from ecoclassify.models.build import build_model

    keras.utils.set_random_seed(7)
    before = {layer.name: layer.get_weights() for layer in build_model(config, 3).get_layer("backbone").layers}
    run = train(config, verbose=0)
    backbone = keras.saving.load_model(run.model_path, safe_mode=True).get_layer("backbone")
    moved = {layer.name for layer in backbone.layers
             if layer.get_weights() and not all(np.array_equal(a, b) for a, b in zip(before[layer.name],
                                                                                      layer.get_weights()))}
    assert moved == {"block5_conv1", "block5_conv2", "block5_conv3"}


def test_an_unknown_from_layer_is_a_config_error_naming_the_closest_layers(tmp_path, images):
    config = Config.from_dict(tiny_config(tmp_path, model={"backbone": "vgg16", "weights": "none"}, training={
        "mode": None, "stages": [{"epochs": 1, "learning_rate": 1e-3, "trainable": {"from_layer": "block5_conv"}}]}))
    with pytest.raises(ConfigError) as error:
        train(config, verbose=0)
    message = str(error.value)
    assert "training.stages[0].trainable.from_layer" in message and "block5_conv1" in message
    assert "'block5_conv'" in message


def test_the_same_seed_with_determinism_gives_identical_weights(tmp_path, images):
    config = Config.from_dict(tiny_config(tmp_path, training={"deterministic": True},
                                          augmentation={"enabled": True, "flip": "horizontal", "rotation": 0.05}))
    first = keras.saving.load_model(train(config, verbose=0).model_path, safe_mode=True).get_weights()
    second = keras.saving.load_model(train(config, verbose=0).model_path, safe_mode=True).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_an_interrupted_run_resumes_from_its_last_epoch_like_an_uninterrupted_one(tmp_path, images):
    stages = [{"epochs": 2, "learning_rate": 1e-2, "trainable": "all", "name": "warm"},
              {"epochs": 2, "learning_rate": 1e-3, "trainable": "all", "name": "slow"}]
    config = Config.from_dict(tiny_config(tmp_path, training={"mode": None, "stages": stages, "deterministic": True}))
    whole = train(config, verbose=0)

    with pytest.raises(TrainingInterrupted) as interrupted:
        train(config, verbose=0, callbacks=[StopAfter(epoch=2)])  # first epoch of the second stage
    assert interrupted.value.exit_code == 130 and "--resume" in str(interrupted.value)
    run_dir = sorted((tmp_path / "runs").iterdir())[-1]
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0, 1, 2]

    resumed = train(config, resume=run_dir, verbose=0)
    assert resumed.run_dir == run_dir
    history = resumed.history
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    # Epochs before the interruption are the uninterrupted run's, to the last digit.
    pd.testing.assert_frame_equal(history.iloc[:3], whole.history.iloc[:3])
    assert resumed.metrics["epochs"] == whole.metrics["epochs"] == 4
    assert resumed.metrics["test"]["n_images"] == whole.metrics["test"]["n_images"]
    with pytest.raises(RunError, match="already finished"):
        train(config, resume=run_dir, verbose=0)


def test_resume_refuses_a_config_that_changed(tmp_path, images):
    config = Config.from_dict(tiny_config(tmp_path))
    with pytest.raises(TrainingInterrupted):
        train(config, verbose=0, callbacks=[StopAfter(epoch=0)])
    run_dir = next((tmp_path / "runs").iterdir())
    changed = Config.from_dict(tiny_config(tmp_path, training={"batch_size": 4}))
    with pytest.raises(RunError) as error:
        train(changed, resume=run_dir, verbose=0)
    assert "training.batch_size: 8 -> 4" in str(error.value)


def test_a_validation_metric_without_a_validation_split_stops_before_a_run_folder_exists(tmp_path, images):
    config = Config.from_dict(tiny_config(tmp_path, data={"split": {"val": 0.0, "test": 0.2}}))
    with pytest.raises(DataError, match="training.monitor 'val_macro_f1' needs a validation split"):
        train(config, verbose=0)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_train_command_prints_the_run_folder_and_headline_metrics(tmp_path, images, write_config):
    path = write_config(tmp_path, tiny_config(tmp_path))
    result = CliRunner().invoke(main, ["train", str(path), "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "run folder:" in result.output and "macro-F1" in result.output
    run_dir = next((tmp_path / "runs").iterdir())
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [0]



#: What a train run says while it works, one message per phase that can take a while.
TRAIN_PHASES = ("reading and checking the images", "building the model", "stage 1/1", "keeping the best model",
                "evaluating the best model on the test split (6 images)", "report: computing the metrics",
                "report: drawing the plots", "report: writing report.html")


def test_the_train_command_says_what_each_phase_does_and_flags_unsupported_thresholds(tmp_path, images,
                                                                                        write_config, caplog):
    path = write_config(tmp_path, tiny_config(tmp_path))
    result = CliRunner().invoke(main, ["train", str(path), "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("checking images") == 1  # the scan's progress bar, once
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ecoclassify")]
    for phase in TRAIN_PHASES:
        assert any(phase in message for message in messages), (phase, messages)
    # Six test images cannot support 0.95 (59 would be needed even without an error).
    assert "auto-labelling thresholds on the test split:" in result.output
    assert "precision 0.95: not supported by the data" in result.output or "precision 0.95: not reachable" in result.output
    assert "auto-labels" not in result.output
    # The report was made with the best model held in memory: the same predictions as model.keras.
    run_dir = next((tmp_path / "runs").iterdir())
    report = pd.read_csv(run_dir / "report" / "predictions_test.csv")
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    pixels = np.stack([np.asarray(Image.open(f)) for f in report["filepath"]])
    np.testing.assert_allclose(model.predict(pixels, verbose=0), report[["p_deer", "p_fox", "p_owl"]], atol=1e-5)


def test_the_quiet_train_command_prints_only_the_results(tmp_path, images, write_config, caplog):
    path = write_config(tmp_path, tiny_config(tmp_path))
    result = CliRunner().invoke(main, ["--quiet", "train", str(path), "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert [r.getMessage() for r in caplog.records if r.name.startswith("ecoclassify") and r.levelname == "INFO"] == []
    assert "loss" not in result.output  # no Keras progress either
    assert result.output.startswith("run folder:") and "test: accuracy" in result.output

def test_the_train_command_exits_2_on_a_config_error_without_a_traceback(tmp_path, images, write_config):
    path = write_config(tmp_path, tiny_config(tmp_path, training={"optimiser": "adam"}))
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 2
    assert "training.optimiser is not a valid key" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_the_quickstart_config_trains_offline_on_the_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCLASSIFY_CACHE", str(tmp_path / "cache"))
    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    result = CliRunner().invoke(main, ["train", str(quickstart), "--set", f"experiment.output_dir={tmp_path / 'runs'}",
                                       "--set", "training.epochs=1", "--set", "data.demo.images_per_class=12"])
    assert result.exit_code == 0, result.output
    assert "test: accuracy" in result.output


def test_a_head_stage_on_cached_features_trains_the_same_model_as_on_images(tmp_path, images, caplog):
    def run(cache):
        config = Config.from_dict(tiny_config(
            tmp_path, model={"backbone": "vgg16", "weights": "none", "head": {"dense": [8], "dropout": 0.2}},
            training={"mode": "transfer", "epochs": 3, "cache_features": cache, "deterministic": True}))
        return train(config, verbose=0)

    with caplog.at_level("INFO", logger="ecoclassify"):
        cached = run("auto")
    assert "on cached features" in caplog.text
    plain = run(False)
    np.testing.assert_allclose(cached.history["loss"], plain.history["loss"], rtol=1e-3)
    np.testing.assert_allclose(cached.history["val_macro_f1"], plain.history["val_macro_f1"], atol=1e-6)
    # approx on the whole dict would hide the difference behind a TypeError from its report when a
    # non-numeric entry (map_excluded_classes, a list) differed: numbers approx, the rest exactly.
    numbers = {k for k, v in plain.metrics["test"].items() if isinstance(v, float)}
    assert {k: cached.metrics["test"][k] for k in numbers} == pytest.approx(
        {k: plain.metrics["test"][k] for k in numbers}, abs=1e-6)
    assert {k: v for k, v in cached.metrics["test"].items() if k not in numbers} == \
        {k: v for k, v in plain.metrics["test"].items() if k not in numbers}
    # The saved model is the end-to-end model either way, with the same predictions.
    batch = np.asarray(Image.open(images / "owl" / "owl_03.jpg"))[None]
    a = keras.saving.load_model(cached.model_path, safe_mode=True)
    b = keras.saving.load_model(plain.model_path, safe_mode=True)
    assert a.inputs[0].shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(a.predict(batch, verbose=0), b.predict(batch, verbose=0), atol=1e-5)


def test_forcing_the_feature_cache_with_augmentation_on_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="training.cache_features true needs augmentation.enabled: false"):
        Config.from_dict(tiny_config(tmp_path, training={"cache_features": True},
                                     augmentation={"enabled": True, "flip": "horizontal"}))


def test_the_best_model_checkpoint_breaks_ties_by_the_lower_validation_loss(tmp_path):
    from ecoclassify.training.callbacks import BestModelCheckpoint, best_in_history

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = BestModelCheckpoint(tmp_path / "model.keras", "val_macro_f1")
    checkpoint.set_model(model)
    epochs = [{"val_macro_f1": 0.8, "val_loss": 0.9}, {"val_macro_f1": 0.8, "val_loss": 0.5},
              {"val_macro_f1": 0.8, "val_loss": 0.7}, {"val_macro_f1": 0.7, "val_loss": 0.1}]
    for epoch, logs in enumerate(epochs):
        checkpoint.on_epoch_end(epoch, logs)
    assert (checkpoint.best, checkpoint.best_loss, checkpoint.best_epoch) == (0.8, 0.5, 1)
    history = pd.DataFrame([{"epoch": i, **logs} for i, logs in enumerate(epochs)])
    history.to_csv(tmp_path / "history.csv", index=False)
    assert best_in_history(tmp_path / "history.csv", "val_macro_f1") == (0.8, 0.5)
    assert best_in_history(tmp_path / "history.csv", "val_loss") == (0.1, 0.1)
