"""``predict --runtime litert``: the same labels as Keras, a kept file that is checked, never trusted blindly."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tests.prediction._predict_support import COLOURS, tiny_model_dir
from tests.prediction.test_predict import StopAfter, write_numbered
from ecoclassify.errors import ConfigError, ModelError, RunError
from ecoclassify.files import LITERT_FILE, LITERT_RECORD
from ecoclassify.prediction.labelling import PredictionInterrupted, predict

pytest.importorskip("ai_edge_litert", reason="the LiteRT runtime needs ecoclassify[litert]")

PROBS = [f"prob_{name}" for name in COLOURS]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path_factory, tmp_path) -> Path:
    """A fresh copy of the tiny trained model's run folder (each test starts without a LiteRT file)."""
    return Path(shutil.copytree(tiny_model_dir(tmp_path_factory), tmp_path / "run"))


def assert_same_labels(litert: pd.DataFrame, keras_frame: pd.DataFrame, probs: list[str]) -> float:
    """Same rows and top-1 labels; returns the largest probability difference."""
    assert litert[["root", "filepath", "status", "label"]].equals(keras_frame[["root", "filepath", "status", "label"]])
    return float(np.nanmax(np.abs(litert[probs].to_numpy() - keras_frame[probs].to_numpy())))


@pytest.mark.shared
@pytest.mark.slow
def test_litert_labels_every_shared_camera_trap_jpeg_like_keras(shared_dir, run_dir, tmp_path):
    images = shared_dir / "data" / "camera-traps"
    with_keras = predict(run_dir, images, batch_size=16)
    with_litert = predict(run_dir, images, batch_size=16, runtime="litert")
    assert (with_keras["status"] == "ok").sum() >= 400  # the real JPEGs, not just a few
    # Probabilities are written rounded to 6 decimals: 1e-4 leaves room for that and more.
    assert assert_same_labels(with_litert, with_keras, PROBS) <= 1e-4
    record = json.loads((run_dir / LITERT_RECORD).read_text())
    assert record["agreement"]["passed"] and record["agreement"]["images_from"] == "input"
    assert record["agreement"]["max_abs_diff"] <= 1e-4 and record["xnnpack"] is True


@pytest.mark.shared
@pytest.mark.slow
def test_litert_runs_a_mobilenet_v2_classifier_like_keras_on_real_jpegs(shared_dir, tmp_path):
    from ecoclassify.config import Config
    from ecoclassify.models.build import build_model

    config = Config.from_dict({"data": {"source": "demo", "image_size": [64, 64]},
                               "model": {"backbone": "mobilenet_v2", "weights": "none"},
                               "augmentation": {"enabled": False}})
    keras.utils.set_random_seed(3)
    run = tmp_path / "mobilenet"
    run.mkdir()
    build_model(config, 3).save(run / "model.keras")
    (run / "labels.json").write_text(json.dumps({"classes": list(COLOURS), "image_size": [64, 64]}))
    images = sorted((shared_dir / "data" / "camera-traps").rglob("*.jpg"))[::15]
    with_keras = predict(run, images, batch_size=8)
    with_litert = predict(run, images, batch_size=8, runtime="litert")
    assert assert_same_labels(with_litert, with_keras, PROBS) <= 1e-4


def test_the_converted_model_is_kept_and_reused_while_the_model_is_unchanged(run_dir, tmp_path, caplog):
    card = write_numbered(tmp_path / "card", 10)
    with caplog.at_level(logging.INFO, logger="ecoclassify.models.litert"):
        first = predict(run_dir, card, batch_size=4, runtime="litert")
    assert "converting model.keras for LiteRT" in caplog.text
    record = json.loads((run_dir / LITERT_RECORD).read_text())
    assert record["agreement"]["images"] == 8 and record["agreement"]["top1_agree"] == 8
    kept = (run_dir / LITERT_FILE).stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecoclassify.models.litert"):
        again = predict(run_dir, card, batch_size=5, runtime="litert", threads=1)
    assert "converting" not in caplog.text and (run_dir / LITERT_FILE).stat().st_mtime_ns == kept
    assert assert_same_labels(again, first, PROBS) <= 1e-6


def test_a_corrupt_litert_file_is_converted_again_with_a_warning(run_dir, tmp_path, caplog):
    card = write_numbered(tmp_path / "card", 6)
    reference = predict(run_dir, card, batch_size=4, runtime="litert")
    damaged = (run_dir / LITERT_FILE).read_bytes()
    (run_dir / LITERT_FILE).write_bytes(damaged[: len(damaged) // 2])
    with caplog.at_level(logging.WARNING, logger="ecoclassify.models.litert"):
        rebuilt = predict(run_dir, card, batch_size=4, runtime="litert")
    assert "is corrupt" in caplog.text and "Converting model.keras again" in caplog.text
    record = json.loads((run_dir / LITERT_RECORD).read_text())
    assert record["tflite_sha256"] == _sha256(run_dir / LITERT_FILE)
    pd.testing.assert_frame_equal(rebuilt, reference)


def test_a_stale_litert_file_is_converted_again_when_the_model_changes(run_dir, tmp_path, caplog):
    card = write_numbered(tmp_path / "card", 6)
    predict(run_dir, card, batch_size=4, runtime="litert")
    old = json.loads((run_dir / LITERT_RECORD).read_text())
    model = keras.saving.load_model(run_dir / "model.keras")
    weights = model.get_weights()
    weights[-1] = weights[-1] + np.array([2.0, 0.0, 0.0], dtype=weights[-1].dtype)  # favour "deer"
    model.set_weights(weights)
    model.save(run_dir / "model.keras")  # retrained in place: same name, new contents
    with caplog.at_level(logging.WARNING, logger="ecoclassify.models.litert"):
        with_litert = predict(run_dir, card, batch_size=4, runtime="litert")
    assert "is stale: model.keras changed since it was converted" in caplog.text
    new = json.loads((run_dir / LITERT_RECORD).read_text())
    assert new["source_sha256"] == _sha256(run_dir / "model.keras") != old["source_sha256"]
    assert assert_same_labels(with_litert, predict(run_dir, card, batch_size=4), PROBS) <= 1e-4


def test_a_conversion_that_disagrees_with_keras_is_refused_and_nothing_is_kept(run_dir, tmp_path, monkeypatch):
    from ecoclassify.models import conversion

    card = write_numbered(tmp_path / "card", 6)
    output = tmp_path / "predictions.csv"
    other = keras.saving.load_model(run_dir / "model.keras")
    weights = other.get_weights()
    weights[-1] = weights[-1] + np.array([0.0, 0.0, 5.0], dtype=weights[-1].dtype)
    other.set_weights(weights)
    wrong = conversion.convert_tflite(other, None, None, batch=None)  # a converter bug, in effect
    monkeypatch.setattr(conversion, "convert_tflite", lambda *args, **kwargs: wrong)
    with pytest.raises(ModelError) as refused:
        predict(run_dir, card, output=output, batch_size=4, runtime="litert")
    message = str(refused.value)
    assert "does not give Keras' results on 6 input images" in message and "--runtime keras" in message
    assert not (run_dir / LITERT_FILE).exists() and not (run_dir / LITERT_RECORD).exists()
    assert not output.exists() and not Path(f"{output}.checkpoint").exists()  # the same command may run again


@keras.saving.register_keras_serializable(package="ecoclassify_tests")
class InverseErf(keras.layers.Layer):
    """A layer whose operation (Erfinv) TensorFlow Lite has no kernel for."""

    def call(self, inputs):
        return keras.ops.erfinv(keras.ops.tanh(inputs) * 0.5)


def test_a_model_litert_cannot_convert_names_the_layer_and_suggests_keras(tmp_path):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = InverseErf(name="field_noise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "labels.json").write_text(json.dumps({"classes": list(COLOURS)}))
    card = write_numbered(tmp_path / "card", 3)
    assert predict(run, card)["status"].eq("ok").all()  # Keras runs it
    with pytest.raises(ModelError) as refused:
        predict(run, card, runtime="litert")
    message = str(refused.value)
    assert "operation Erfinv (layer 'field_noise')" in message and "Use --runtime keras" in message


def test_resuming_with_the_other_runtime_is_refused_unless_overwrite(run_dir, tmp_path):
    card = write_numbered(tmp_path / "card", 12)
    output = tmp_path / "predictions.csv"
    with pytest.raises(PredictionInterrupted):
        predict(run_dir, card, output=output, batch_size=4, checkpoint_every=4, progress=StopAfter(8))
    with pytest.raises(RunError) as refused:
        predict(run_dir, card, output=output, batch_size=4, resume=True, runtime="litert")
    assert "runtime was 'keras', now 'litert'" in str(refused.value) and "--overwrite" in str(refused.value)
    assert not (run_dir / LITERT_FILE).exists()  # refused before converting
    frame = predict(run_dir, card, output=output, batch_size=4, overwrite=True, runtime="litert")
    assert frame.attrs["metadata"]["options"]["runtime"] == "litert" and output.exists()


def test_an_unknown_runtime_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"runtime must be one of: keras, litert\. Received: runtime='tflite'"):
        predict("no-model", "no-input", runtime="tflite")


RUN_WITHOUT_LITERT = """
import sys
sys.modules["ai_edge_litert"] = None  # as if ecoclassify[litert] were not installed
from ecoclassify.cli import main
try:
    code = main.main(args=sys.argv[1:], prog_name="ecoclassify", standalone_mode=False) or 0
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("\\nRESULT", {"code": code, "loaded": loaded[:3]})
"""


def test_litert_without_the_package_names_it_before_tensorflow_loads(run_dir, tmp_path):
    card = write_numbered(tmp_path / "card", 2)
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_LITERT, "predict", str(run_dir), str(card), "-o",
                           str(tmp_path / "out.csv"), "--runtime", "litert"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    output = done.stdout + done.stderr
    line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")][-1]
    assert eval(line[len("RESULT "):]) == {"code": 2, "loaded": []}, output  # noqa: S307 - our own repr
    assert "ai-edge-litert" in output and "pip install 'ecoclassify[litert]'" in output
    assert not (tmp_path / "out.csv").exists()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
