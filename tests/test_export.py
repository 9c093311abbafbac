"""Export for field devices: SavedModel and TFLite predict like the Keras model they come from."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from ecoclassify.cli.app import main
from ecoclassify.config import Config
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.exporting import FORMATS, QUANTIZATIONS, default_output, export, representative_images
from ecoclassify.models.io import load_classifier
from ecoclassify.cli.tool_commands import export_command, init_command
from ecoclassify.training.session import train

pytestmark = pytest.mark.slow

main.add_command(init_command)
main.add_command(export_command)

COLOURS = {"deer": (200, 60, 40), "fox": (40, 180, 60), "owl": (50, 60, 200), "boar": (200, 200, 200)}
SIZE = 32


def write_colour_images(root: Path, per_class: int, seed: int) -> list[Path]:
    """Class folders of class-coloured noise: easy for a tiny CNN, so its predictions are confident."""
    rng = np.random.default_rng(seed)
    paths = []
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            path = root / label / f"{label}_{i:03d}.jpg"
            Image.fromarray(pixels).save(path, quality=95)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny custom CNN trained once for the module, with augmentation on (it must not be exported)."""
    tmp = tmp_path_factory.mktemp("export")
    write_colour_images(tmp / "images", per_class=20, seed=0)
    config = Config.from_dict({
        "experiment": {"name": "tiny", "output_dir": str(tmp / "runs"), "seed": 3},
        "data": {"source": "folders", "root": str(tmp / "images"), "image_size": [SIZE, SIZE],
                 "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"backbone": "custom_cnn", "weights": "none",
                  "custom_cnn": {"filters": [8, 16], "convs_per_block": 1}, "head": {"dense": [16], "dropout": 0.1}},
        "augmentation": {"enabled": True, "flip": "horizontal", "rotation": 0.1, "crop": 0.2, "contrast": 0.2},
        # val_loss keeps the most confident epoch (val_macro_f1 would keep the first perfect one).
        "training": {"batch_size": 8, "mode": "scratch", "epochs": 5, "learning_rate": 0.01, "monitor": "val_loss",
                     "early_stopping": {"enabled": False}},
    })
    run = train(config, verbose=0)
    # Held-out test images, drawn fresh from the same classes.
    test_paths = write_colour_images(tmp / "test_images", per_class=25, seed=1)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in test_paths])
    classifier = load_classifier(run.run_dir)
    reference = classifier.model.predict(images, verbose=0)
    return run.run_dir, images, reference, classifier


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """Every format and quantisation exported once: ``{"saved_model" | "float32" | "float16" | "int8": path}``."""
    run_dir = trained[0]
    out = tmp_path_factory.mktemp("exported")
    return {
        "saved_model": export(run_dir, "saved_model", output=out / "saved_model"),
        "float32": export(run_dir, "tflite", output=out / "float32"),
        "float16": export(run_dir, "tflite", "float16", output=out / "float16"),
        "int8": export(run_dir, "tflite", "int8"),  # default output: RUN_DIR/export/tflite-int8
    }


def tflite_predict(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Run an exported .tflite file image by image through its serving signature."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(model_path))
    runner = interpreter.get_signature_runner("serving_default")
    return np.concatenate([runner(image=image[None])["probabilities"] for image in images])


def test_the_fixture_model_augments_in_training_and_makes_confident_predictions(trained):
    _, _, reference, classifier = trained
    assert classifier.model.get_layer("augmentation") is not None
    top2 = np.sort(reference, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 0.05  # no near-ties: top-1 comparisons below are meaningful


def test_a_saved_model_export_predicts_exactly_like_the_keras_model(trained, exported):
    _, images, reference, classifier = trained
    path = exported["saved_model"]
    assert path.name == "saved_model" and (path / "saved_model.pb").is_file()

    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert serving.structured_input_signature[1]["image"].dtype == tf.uint8
    probabilities = serving(image=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, reference, atol=1e-5)

    labels = json.loads((path.parent / "labels.json").read_text(encoding="utf-8"))
    assert labels["classes"] == classifier.classes and labels["image_size"] == [SIZE, SIZE]
    assert labels["input"]["dtype"] == "uint8" and labels["input"]["shape"] == [None, SIZE, SIZE, 3]
    assert (path.parent / "labels.txt").read_text(encoding="utf-8").splitlines() == classifier.classes


def test_a_float32_tflite_export_predicts_like_the_keras_model(trained, exported):
    _, images, reference, classifier = trained
    path = exported["float32"]
    assert path.name == "model.tflite"
    probabilities = tflite_predict(path, images)
    np.testing.assert_array_equal(probabilities.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(probabilities, reference, atol=1e-4)
    labels = json.loads((path.parent / "labels.json").read_text(encoding="utf-8"))
    assert labels["format"] == "tflite" and labels["quantize"] is None and labels["calibration_images"] == 0
    assert labels["input"]["shape"] == [1, SIZE, SIZE, 3] and labels["output"]["shape"] == [1, len(classifier.classes)]
    assert (path.parent / "labels.txt").read_text(encoding="utf-8").splitlines() == classifier.classes


def test_the_tflite_graph_is_the_deterministic_inference_graph_taking_uint8(trained, exported):
    images = trained[1]
    path = exported["float32"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (image_input,) = interpreter.get_input_details()
    assert image_input["dtype"] == np.uint8 and list(image_input["shape"]) == [1, SIZE, SIZE, 3]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any("RANDOM" in op or "MULTINOMIAL" in op for op in ops), ops
    first, second = tflite_predict(path, images[:8]), tflite_predict(path, images[:8])
    np.testing.assert_array_equal(first, second)


def test_a_float16_tflite_export_keeps_the_keras_top1_in_a_smaller_file(trained, exported):
    _, images, reference, _ = trained
    probabilities = tflite_predict(exported["float16"], images)
    np.testing.assert_array_equal(probabilities.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(probabilities, reference, atol=1e-2)
    assert exported["float16"].stat().st_size < exported["float32"].stat().st_size


def test_an_int8_tflite_export_agrees_with_the_keras_model_on_at_least_95_percent(trained, exported,
                                                                                  record_property, capsys):
    run_dir, images, reference, _ = trained
    path = exported["int8"]
    assert path == run_dir / "export" / "tflite-int8" / "model.tflite"
    agreement = float((tflite_predict(path, images).argmax(1) == reference.argmax(1)).mean())
    record_property("int8_top1_agreement", agreement)
    sizes = ", ".join(f"{name} {_size(p)} bytes" for name, p in exported.items())
    with capsys.disabled():
        print(f"\nint8 top-1 agreement with Keras: {agreement:.1%} on {len(images)} test images; {sizes}")
    assert agreement >= 0.95
    labels = json.loads((path.parent / "labels.json").read_text(encoding="utf-8"))
    assert labels["quantize"] == "int8" and labels["calibration_images"] == 48  # the whole train split (< 100)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    conv_weights = [t for t in interpreter.get_tensor_details() if len(t["shape"]) == 4 and t["dtype"] == np.int8]
    assert conv_weights, "int8 export has no int8 convolution weights"
    assert path.stat().st_size < exported["float16"].stat().st_size


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def test_int8_calibration_uses_at_most_the_limit_of_training_images(trained):
    run_dir = trained[0]
    calibration = representative_images(run_dir, (SIZE, SIZE), limit=10)
    assert calibration.shape == (10, SIZE, SIZE, 3) and calibration.dtype == np.uint8


def test_int8_without_the_runs_split_list_is_a_data_error(trained, tmp_path):
    run_dir = trained[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.keras", "labels.json"):
        shutil.copy(run_dir / name, bare / name)
    with pytest.raises(DataError, match="splits.csv"):
        export(bare / "model.keras", "tflite", "int8", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_existing_export_is_replaced_only_with_overwrite(trained, tmp_path):
    run_dir = trained[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RunError, match="already exists.*--overwrite"):
        export(run_dir, "saved_model", output=out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    export(run_dir, "saved_model", output=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.txt", "saved_model"]
    assert out.stat().st_mode & 0o777 != 0o700  # not left private like a mkdtemp folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left behind


@pytest.mark.parametrize("fmt, quantize, output, message", [
    ("onnx", None, None, "format must be one of: saved_model, tflite. Received: format='onnx'"),
    ("tflite", "int4", None, "quantize must be one of: float16, int8"),
    ("saved_model", "int8", None, "quantize applies to format 'tflite' only"),
    ("saved_model", None, "model.tflite", "format 'saved_model' writes a folder"),
    ("tflite", None, "model.onnx", "format 'tflite' writes a .tflite file"),
    ("tflite", None, "model.keras", ".keras is not a TensorFlow Lite file. Received: output="),
])
def test_bad_export_arguments_are_config_errors(trained, tmp_path, fmt, quantize, output, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        export(trained[0], fmt, quantize, output=tmp_path / output if output else None)


def test_the_cli_choices_match_the_library():
    params = {p.name: p for p in export_command.params}
    assert tuple(params["fmt"].type.choices) == FORMATS
    assert tuple(params["quantize"].type.choices) == QUANTIZATIONS


def test_the_export_command_writes_the_bundle_and_refuses_to_overwrite_it(trained, tmp_path):
    run_dir = trained[0]
    out = tmp_path / "device"
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run_dir), "--format", "tflite", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"exported .*model\.tflite \(\d+ kB\) with labels\.json and labels\.txt", result.output)
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.txt", "model.tflite"]

    again = runner.invoke(main, ["export", str(run_dir), "--format", "tflite", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output

    wrong = runner.invoke(main, ["export", str(run_dir), "--format", "saved_model", "--quantize", "int8"])
    assert wrong.exit_code == 2 and "tflite' only" in wrong.output


def test_the_default_output_is_inside_the_run_folder(tmp_path):
    assert default_output(tmp_path, "tflite", "int8") == tmp_path / "export" / "tflite-int8"
    assert default_output(tmp_path, "saved_model") == tmp_path / "export" / "saved_model"
    assert default_output(tmp_path / "model.keras", "tflite") == tmp_path / "export" / "tflite"


def test_an_export_into_its_own_run_folder_is_refused_even_with_overwrite(trained, tmp_path):
    run_dir = trained[0]
    before = sorted(p.name for p in run_dir.iterdir())
    runner = CliRunner()
    for output in (run_dir, run_dir.parent):
        result = runner.invoke(main, ["export", str(run_dir), "--format", "saved_model", "-o", str(output),
                                      "--overwrite"])
        assert result.exit_code == 1, result.output
        assert "is or contains the run folder" in result.output and "Traceback" not in result.output
    with pytest.raises(RunError, match="is or contains the run folder"):
        export(run_dir / "model.keras", "tflite", output=run_dir, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert load_classifier(run_dir).classes == sorted(COLOURS)


def test_an_export_over_another_run_folder_is_refused_even_with_overwrite(trained, tmp_path):
    other = tmp_path / "runs" / "other-run"
    shutil.copytree(trained[0], other)
    before = sorted(p.name for p in other.iterdir())
    for output in (other, tmp_path / "runs"):
        with pytest.raises(RunError, match="holds a run folder"):
            export(trained[0], "saved_model", output=output, overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == before


def test_a_tflite_export_to_a_file_name_writes_that_file_with_its_labels_beside_it(trained, tmp_path):
    run_dir, images, reference, classifier = trained
    device = tmp_path / "device"
    device.mkdir()
    (device / "labels.json").write_text("someone else's", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run_dir), "--format", "tflite", "-o", str(device / "camtrap.tflite")])
    assert result.exit_code == 0, result.output
    assert "camtrap.labels.json and camtrap.labels.txt" in result.output
    assert sorted(p.name for p in device.iterdir()) == ["camtrap.labels.json", "camtrap.labels.txt", "camtrap.tflite",
                                                       "labels.json"]
    assert (device / "labels.json").read_text(encoding="utf-8") == "someone else's"
    assert (device / "camtrap.labels.txt").read_text(encoding="utf-8").split() == classifier.classes
    assert json.loads((device / "camtrap.labels.json").read_text())["classes"] == classifier.classes
    probabilities = tflite_predict(device / "camtrap.tflite", images[:8])
    np.testing.assert_allclose(probabilities, reference[:8], atol=1e-4)

    again = runner.invoke(main, ["export", str(run_dir), "--format", "tflite", "-o", str(device / "camtrap.tflite")])
    assert again.exit_code == 1 and "already exist" in again.output and "--overwrite" in again.output
    replaced = export(run_dir, "tflite", "float16", output=device / "camtrap.tflite", overwrite=True)
    assert replaced == device / "camtrap.tflite" and json.loads(
        (device / "camtrap.labels.json").read_text())["quantize"] == "float16"
    assert sorted(p.name for p in device.iterdir()) == ["camtrap.labels.json", "camtrap.labels.txt", "camtrap.tflite",
                                                       "labels.json"]  # no temporary folder left behind


def test_a_saved_model_to_a_tflite_name_is_refused_before_anything_is_written(trained, tmp_path):
    result = CliRunner().invoke(main, ["export", str(trained[0]), "--format", "saved_model",
                                       "-o", str(tmp_path / "model.tflite")])
    assert result.exit_code == 2 and "format 'saved_model' writes a folder" in result.output
    assert list(tmp_path.iterdir()) == []
