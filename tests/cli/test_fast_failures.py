"""Wrong paths and options are reported before TensorFlow is imported (issue: fast failures).

Each case runs the real command line in a fresh Python and checks, after the command has
failed, that no TensorFlow or Keras module was ever imported: the error did not wait for the
20-50 s TensorFlow start-up of a busy laptop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RUN = """
import sys
from ecoclassify.cli import main
try:
    code = main.main(args=sys.argv[1:], prog_name="ecoclassify", standalone_mode=False) or 0
except SystemExit as exc:
    code = exc.code
except BaseException as exc:  # click's own exits in non-standalone mode
    code = getattr(exc, "exit_code", 99)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("\\nRESULT", {"code": code, "loaded": loaded[:3]})
"""


def run_cli(*args: str, cwd: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")][-1]
    result = eval(line[len("RESULT "):])  # noqa: S307 - our own repr of a dict of str and int
    return result, done.stdout + done.stderr


@pytest.fixture
def run_like(tmp_path: Path) -> Path:
    """A folder that looks like a run folder to the path checks, with a model that is not loaded."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.json").write_text(json.dumps({"classes": ["a", "b"], "image_size": [32, 32]}))
    (run / "model.keras").write_bytes(b"not read by these checks")
    return run


def test_predict_with_a_missing_run_folder_fails_before_tensorflow_loads(tmp_path):
    (tmp_path / "x").mkdir()
    result, output = run_cli("predict", "missing-run", "x", "-o", "y.csv", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "run folder containing model.keras" in output


def test_predict_with_a_missing_input_fails_before_tensorflow_loads(tmp_path, run_like):
    result, output = run_cli("predict", str(run_like), "no-such-card", "-o", "y.csv", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "INPUT does not exist" in output


def test_predict_into_an_existing_output_fails_before_tensorflow_loads(tmp_path, run_like):
    (tmp_path / "card").mkdir()
    (tmp_path / "y.csv").write_text("kept\n")
    result, output = run_cli("predict", str(run_like), "card", "-o", "y.csv", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "exists: use --overwrite" in output
    assert (tmp_path / "y.csv").read_text() == "kept\n"


def test_evaluate_into_a_run_folder_fails_before_tensorflow_loads(tmp_path, run_like):
    (tmp_path / "site" / "a").mkdir(parents=True)
    result, output = run_cli("evaluate", str(run_like), "--data", "site", "-o", str(run_like), cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "is a run folder" in output


def test_export_of_a_folder_without_a_model_fails_before_tensorflow_loads(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    result, output = run_cli("export", "not-a-run", "--format", "tflite", cwd=tmp_path)
    assert result == {"code": 1, "loaded": []}, output
    assert "run folder containing model.keras" in output


def test_benchmark_with_an_unknown_backbone_fails_before_tensorflow_loads(tmp_path):
    result, output = run_cli("benchmark", "--backbone", "vgg61", cwd=tmp_path)
    assert result == {"code": 2, "loaded": []}, output
    assert "--backbone must be one of" in output and "vgg16" in output


def test_train_with_a_misspelt_key_fails_before_tensorflow_loads(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {source: demo}\ntraining: {batch_sise: 4}\n")
    result, output = run_cli("train", "c.yaml", cwd=tmp_path)
    assert result == {"code": 2, "loaded": []}, output
    assert "batch_sise" in output
