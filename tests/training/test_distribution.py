"""Training under tf.distribute: two logical CPU devices stand in for two GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tests.training.test_train import tiny_config, write_learnable_folders

pytestmark = pytest.mark.slow

SCRIPT = """
import json, logging, sys
import tensorflow as tf
# Must happen before TensorFlow initialises its devices: two replicas on one CPU.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ecoclassify.config import load_config
from ecoclassify.training.session import train
logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
run = train(load_config(sys.argv[1]), verbose=0)
print(json.dumps({"run_dir": str(run.run_dir), "test": run.metrics["test"], "epochs": run.metrics["epochs"]}))
"""


def test_mirrored_training_on_two_replicas_saves_a_model_that_predicts_like_a_single_device_one(tmp_path,
                                                                                               write_config):
    images = write_learnable_folders(tmp_path / "images", per_class=12)
    config = tiny_config(tmp_path, training={"distribution": "mirrored", "devices": ["/cpu:0", "/cpu:1"],
                                             "epochs": 3, "batch_size": 8})
    path = write_config(tmp_path, config)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distribution mirrored: training on 2 replica(s)" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["epochs"] == 3 and report["test"]["n_images"] > 0
    assert 0.0 <= report["test"]["macro_f1"] <= 1.0

    model = keras.saving.load_model(Path(report["run_dir"]) / "model.keras", safe_mode=True)
    batch = np.stack([np.asarray(Image.open(images / label / f"{label}_00.jpg")) for label in ("deer", "fox", "owl")])
    proba = model.predict(batch, verbose=0)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    # Colour classes are easy: the distributed run must have learnt something, like a single-device one.
    assert report["test"]["accuracy"] > 0.5


def test_devices_without_mirrored_distribution_is_a_config_error(tmp_path):
    from ecoclassify.config import Config
    from ecoclassify.errors import ConfigError

    with pytest.raises(ConfigError, match="training.devices applies to distribution 'mirrored' only"):
        Config.from_dict(tiny_config(tmp_path, training={"devices": ["/gpu:0"]}))
