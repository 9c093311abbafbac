"""Training that is killed, runs out of disk or loses an image stops cleanly and can be resumed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pandas as pd
import pytest
import yaml

from ecoclassify.config import Config
from ecoclassify.errors import DataError, RunError
from ecoclassify.training.session import TrainingInterrupted, train
from tests.training.test_train import StopAfter, tiny_config, write_learnable_folders

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_learnable_folders(tmp_path / "images")


def four_epochs(tmp_path: Path) -> Config:
    return Config.from_dict(tiny_config(tmp_path, model={"custom_cnn": {"filters": [4], "convs_per_block": 1}},
                                        training={"epochs": 4}))


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir


def leftovers(run_dir: Path) -> list[str]:
    """Temporary or hidden files anywhere in the run folder."""
    return [p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def backups(run_dir: Path, stage: int = 1) -> list[Path]:
    """The finished backup files of a stage (temporary ones start with a dot)."""
    return sorted(p for p in (run_dir / "backup" / f"stage-{stage}").glob("*.weights.h5") if not p.name.startswith("."))


class AfterEpochs(keras.callbacks.Callback):
    """Calls ``action()`` when the given epoch begins (to break something mid-run)."""

    def __init__(self, epoch: int, action) -> None:
        super().__init__()
        self.epoch, self.action = epoch, action

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.action()


def cli(log: Path, *args: str) -> subprocess.Popen:
    """``ecoclassify ARGS`` in a new process of this checkout, its output going to ``log``
    (a file, not a pipe: a full pipe would block the process while the test waits for it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-c", "from ecoclassify.cli import main; main()", *args], env=env,
                                stdout=handle, stderr=subprocess.STDOUT)


def test_a_run_killed_with_sigkill_right_after_a_backup_appears_resumes_with_the_cli(tmp_path, images):
    stages = [{"epochs": 8, "learning_rate": 1e-2, "trainable": "all"},
              {"epochs": 2, "learning_rate": 1e-3, "trainable": "all"}]
    config = tiny_config(tmp_path, model={"custom_cnn": {"filters": [4], "convs_per_block": 1}},
                         training={"mode": None, "stages": stages})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    process = cli(tmp_path / "first.log", "train", str(path))
    found: list[Path] = []
    while not found and process.poll() is None:
        found = list((tmp_path / "runs").glob("*/backup/stage-1/*.weights.h5"))
        found = [p for p in found if not p.name.startswith(".")]
        time.sleep(0.02)
    assert found, f"training ended before a backup was seen: {(tmp_path / 'first.log').read_text()[-2000:]}"
    process.send_signal(signal.SIGKILL)  # no chance to clean up: the backup must already be whole
    process.wait()
    run_dir = only_run(tmp_path)

    resumed = cli(tmp_path / "resumed.log", "train", "--resume", str(run_dir))
    resumed.wait()
    output = (tmp_path / "resumed.log").read_text()
    assert resumed.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(10))  # every epoch once, across both stages
    assert json.loads((run_dir / "state.json").read_text())["finished"] is True
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "backup").exists()


def test_a_damaged_newest_backup_falls_back_to_the_previous_one_with_a_message(tmp_path, images, caplog):
    config = four_epochs(tmp_path)
    with pytest.raises(TrainingInterrupted):
        train(config, verbose=0, callbacks=[StopAfter(epoch=2)])
    run_dir = only_run(tmp_path)
    newest = max(backups(run_dir), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # as a crash mid-write would leave it

    with caplog.at_level("WARNING", logger="ecoclassify"):
        run = train(config, resume=run_dir, verbose=0)
    assert f"the backup {newest} is damaged and is skipped" in caplog.text
    assert "continuing from the previous backup instead, epoch-00002.weights.h5" in caplog.text
    assert run.history["epoch"].tolist() == [0, 1, 2, 3]  # epoch 2 ran again and is logged once


def test_when_every_backup_is_damaged_resume_says_what_to_do_and_that_advice_works(tmp_path, images):
    config = four_epochs(tmp_path)
    with pytest.raises(TrainingInterrupted):
        train(config, verbose=0, callbacks=[StopAfter(epoch=1)])
    run_dir = only_run(tmp_path)
    assert backups(run_dir)
    for backup in backups(run_dir):
        backup.write_bytes(b"\x89HDF\r\n\x1a\n truncated")

    with pytest.raises(RunError) as error:
        train(config, resume=run_dir, verbose=0)
    message = str(error.value)
    assert "every training backup in" in message and "is damaged" in message
    assert f"Delete the folder {run_dir / 'backup' / 'stage-1'} and resume again" in message

    shutil.rmtree(run_dir / "backup" / "stage-1")
    run = train(config, resume=run_dir, verbose=0)
    assert run.history["epoch"].tolist() == [0, 1, 2, 3]


def test_a_disk_without_room_for_the_next_save_stops_training_with_the_resume_command(tmp_path, images, monkeypatch):
    real_disk_usage = shutil.disk_usage
    full = {"now": False}

    def disk_usage(path):
        usage = real_disk_usage(path)
        return usage._replace(free=1000) if full["now"] else usage

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    config = four_epochs(tmp_path)
    with pytest.raises(RunError) as error:
        train(config, verbose=0, callbacks=[AfterEpochs(2, lambda: full.update(now=True))])
    run_dir = only_run(tmp_path)
    message = str(error.value)
    assert "not enough free disk space in" in message and "0.0 MB free" in message
    assert f"continue with: ecoclassify train --resume {run_dir}" in message
    assert leftovers(run_dir) == []
    assert [p.name for p in backups(run_dir)] == ["epoch-00001.weights.h5", "epoch-00002.weights.h5"]

    full["now"] = False  # space freed
    run = train(config, resume=run_dir, verbose=0)
    assert run.history["epoch"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("writer, from_epoch", [("save_weights", 2), ("save", 0)])
def test_a_disk_that_fills_up_mid_save_leaves_no_temporary_file_and_a_resumable_run(tmp_path, images, monkeypatch,
                                                                                    writer, from_epoch):
    original = getattr(keras.Model, writer)
    full = {"now": False}

    def fills_the_disk(self, filepath, *args, **kwargs):
        if not full["now"]:
            return original(self, filepath, *args, **kwargs)
        Path(filepath).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, writer, fills_the_disk)
    config = four_epochs(tmp_path)
    with pytest.raises(RunError, match="the disk is full") as error:
        train(config, verbose=0, callbacks=[AfterEpochs(from_epoch, lambda: full.update(now=True))])
    run_dir = only_run(tmp_path)
    assert f"continue with: ecoclassify train --resume {run_dir}" in str(error.value)
    assert leftovers(run_dir) == []

    monkeypatch.undo()
    run = train(config, resume=run_dir, verbose=0)
    assert run.history["epoch"].tolist() == [0, 1, 2, 3]


def test_an_image_deleted_after_the_scan_stops_training_with_a_message_naming_it(tmp_path, images):
    gone = images / "fox" / "fox_03.jpg"
    with pytest.raises(DataError) as error:
        train(four_epochs(tmp_path), verbose=0, callbacks=[AfterEpochs(0, gone.unlink)])
    message = str(error.value)
    assert f"the image {gone} (not_found: " in message
    assert "readable when the data was scanned" in message and "Traceback" not in message
    assert f"ecoclassify train --resume {only_run(tmp_path)}" in message
