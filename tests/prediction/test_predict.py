"""Batch prediction over camera-trap folders: one row per file, failures with reasons, resumable."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.prediction._predict_support import (
    CLI,
    COLOURS,
    RUNNING_AS_ROOT,
    coloured,
    exif_time,
    jpeg_bytes,
    png_claiming_size,
    tiny_model_dir,
)
from ecoclassify.cli.app import main
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.models.io import load_classifier
from ecoclassify.cli.predict_commands import predict_command, sort_command
from ecoclassify.prediction.checkpoint import checkpoint_path
from ecoclassify.prediction.outputs import read_predictions
from ecoclassify.prediction.labelling import PredictionInterrupted, format_summary, predict

main.add_command(predict_command)
main.add_command(sort_command)

CLASSES = list(COLOURS)
PROB_COLUMNS = [f"prob_{name}" for name in CLASSES]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(model_dir):
    return load_classifier(model_dir)


def write_card(folder: Path) -> dict[str, tuple[str, str | None]]:
    """An SD card as it comes from the field; returns ``{filepath: (status, error)}`` for the images."""
    folder.mkdir(parents=True)
    expected: dict[str, tuple[str, str | None]] = {}

    def ok(name: str) -> None:
        expected[name] = ("ok", None)

    for name in ("good.jpg", "good.png", "good.tif", "IMG_0001.JPG", "night shot ü.jpg", "sub dir/é.png"):
        coloured(folder / name, "fox", seed=len(expected))
        ok(name)
    data = jpeg_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "half.jpg").write_bytes(data[: len(data) // 2])
    (folder / "header_cut.jpg").write_bytes(data[:200])  # inside the quantisation/Huffman tables
    (folder / "notes.jpg").write_text("deployment notes, not a photo\n")
    expected.update({"empty.jpg": ("failed", "empty"), "half.jpg": ("failed", "truncated"),
                     "header_cut.jpg": ("failed", "truncated"), "notes.jpg": ("failed", "unreadable")})
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.arange(1200, dtype=np.uint8).reshape(30, 40)).save(folder / "grey.png")
    palette = Image.new("P", (40, 30), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(folder / "palette.png", transparency=0)
    Image.new("RGBA", (40, 30), (10, 200, 30, 0)).save(folder / "rgba.png")
    deep = np.linspace(0, 65535, 1200).astype(np.uint16).reshape(30, 40)
    Image.frombytes("I;16", (40, 30), deep.astype("<u2").tobytes()).save(folder / "deep16.png")
    for name in ("cmyk.jpg", "grey.png", "palette.png", "rgba.png", "deep16.png"):
        ok(name)
    png_claiming_size(folder / "bomb.png", 30000, 30000)
    expected["bomb.png"] = ("failed", "too_large")
    locked = coloured(folder / "locked.jpg", "owl")
    locked.chmod(0)
    expected["locked.jpg"] = ("ok", None) if RUNNING_AS_ROOT else ("failed", "permission_denied")
    # Skipped, not failed: resource forks, Finder clutter, a video, a text file, a symlink loop.
    (folder / "._good.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42")
    (folder / "README.txt").write_text("camera 3, 2024\n")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    return expected


def assert_failed_rows_have_no_label(frame: pd.DataFrame) -> None:
    failed = frame[frame["status"] == "failed"]
    label_columns = [c for c in frame.columns if c in ("label", "score") or c.startswith(("top", "prob_"))]
    assert failed[label_columns].isna().all().all()
    assert failed["error"].notna().all() and failed["width"].isna().all()


def test_every_file_on_a_card_gets_one_row_with_its_status_and_reason(tmp_path, classifier):
    expected = write_card(tmp_path / "card")
    try:
        frame = predict(classifier, tmp_path / "card")
    finally:
        (tmp_path / "card" / "locked.jpg").chmod(0o644)

    assert frame["filepath"].tolist() == sorted(expected)  # each once, sorted
    errors = [error if isinstance(error, str) else None for error in frame["error"]]
    assert dict(zip(frame["filepath"], zip(frame["status"], errors))) == expected
    assert_failed_rows_have_no_label(frame)
    ok = frame[frame["status"] == "ok"]
    assert ok["label"].isin(CLASSES).all() and (ok["label"] == ok["top1_label"]).all()
    assert np.allclose(ok[PROB_COLUMNS].sum(axis=1), 1, atol=1e-5)
    assert (ok["score"] == ok[PROB_COLUMNS].max(axis=1)).all()
    assert (ok["top1_score"] >= ok["top2_score"]).all() and (ok["top2_score"] >= ok["top3_score"]).all()
    sizes = ok.set_index("filepath")[["width", "height"]]
    assert tuple(sizes.loc["good.jpg"]) == (48, 40) and tuple(sizes.loc["cmyk.jpg"]) == (40, 30)

    summary = frame.attrs["summary"]
    assert summary.total == len(frame) == summary.ok + summary.failed
    assert summary.failed_by_reason == Counter(error for status, error in expected.values() if status == "failed")
    assert summary.skipped_by_reason == {"hidden": 2, "not_an_image": 2, "symlink_loop": 1}
    assert sum(summary.labels.values()) == summary.ok
    assert "failed (" in format_summary(summary) and "5 other files skipped" in format_summary(summary)


def test_an_exif_rotated_photo_is_classified_as_it_is_displayed(tmp_path, classifier):
    rng = np.random.default_rng(3)
    stored = np.clip(np.array(COLOURS["deer"]) + rng.normal(0, 40, (24, 40, 3)), 0, 255).astype(np.uint8)
    stored[:8, :20] = (255, 255, 255)  # asymmetric, so a wrong rotation changes the scores
    (tmp_path / "cam").mkdir()
    Image.fromarray(stored).save(tmp_path / "cam" / "rotated.png", exif=exif_time(dt.datetime(2024, 5, 1, 6), orientation=6))
    Image.fromarray(np.rot90(stored, -1)).save(tmp_path / "cam" / "upright.png")  # orientation 6, displayed

    frame = predict(classifier, tmp_path / "cam").set_index("filepath")
    assert (frame.loc["rotated.png", "width"], frame.loc["rotated.png", "height"]) == (24, 40)
    assert frame.loc["rotated.png", PROB_COLUMNS].tolist() == frame.loc["upright.png", PROB_COLUMNS].tolist()
    assert frame.loc["rotated.png", "datetime"] == "2024-05-01 06:00:00"


def test_truncated_files_are_classified_when_allowed(tmp_path, classifier):
    data = jpeg_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    strict = predict(classifier, tmp_path / "half.jpg")
    tolerant = predict(classifier, tmp_path / "half.jpg", allow_truncated=True)
    assert strict["error"].tolist() == ["truncated"] and tolerant["status"].tolist() == ["ok"]


def test_labels_follow_the_class_colours_and_a_threshold_makes_unsure_ones_unknown(tmp_path, classifier):
    for index, label in enumerate(CLASSES * 3):
        coloured(tmp_path / "imgs" / f"{label}_{index}.png", label, seed=index)
    frame = predict(classifier, tmp_path / "imgs", top_k=5)
    assert (frame["label"] == frame["filepath"].str.split("_").str[0]).all()
    assert [c for c in frame.columns if c.startswith("top")] == [
        "top1_label", "top1_score", "top2_label", "top2_score", "top3_label", "top3_score"]  # at most 3 classes

    cut = float(frame["score"].median())
    strict = predict(classifier, tmp_path / "imgs", threshold=cut)
    unsure = strict["score"] < cut
    assert unsure.any() and (strict.loc[unsure, "label"] == "unknown").all()
    assert (strict.loc[~unsure, "label"] == frame.loc[~unsure, "label"]).all()
    assert (strict["top1_label"] == frame["top1_label"]).all()  # the best guess is kept


def test_a_list_file_names_images_relative_to_its_folder(tmp_path, classifier):
    coloured(tmp_path / "lists" / "cam" / "a.jpg", "deer")
    outside = coloured(tmp_path / "elsewhere" / "b.jpg", "owl")
    coloured(tmp_path / "lists" / "cam" / "._a.jpg", "deer")
    (tmp_path / "lists" / "todo.txt").write_text(
        f"# images to label\ncam/a.jpg  \n\n{outside}\ncam/missing.jpg\ncam/clip.mp4\ncam/._a.jpg\ncam/a.jpg\n")
    frame = predict(classifier, tmp_path / "lists" / "todo.txt")
    rows = {(Path(r).relative_to(tmp_path).as_posix(), f): s for r, f, s in
            zip(frame["root"], frame["filepath"], frame["status"])}
    assert rows == {("lists", "cam/a.jpg"): "ok", ("elsewhere", "b.jpg"): "ok", ("lists", "cam/missing.jpg"): "failed"}
    assert frame.set_index("filepath").loc["cam/missing.jpg", "error"] == "not_found"
    assert frame.attrs["summary"].skipped_by_reason == {"duplicate": 1, "hidden": 1, "not_an_image": 1}


def test_overlapping_inputs_give_each_file_one_row(tmp_path, classifier):
    coloured(tmp_path / "card" / "cam1" / "x.jpg", "fox")
    coloured(tmp_path / "card" / "y.jpg", "fox")
    frame = predict(classifier, [tmp_path / "card", tmp_path / "card" / "cam1", tmp_path / "card" / "y.jpg"])
    assert frame["filepath"].tolist() == ["cam1/x.jpg", "y.jpg"]
    assert frame.attrs["summary"].skipped_by_reason == {"duplicate": 2}


def test_inputs_are_checked_before_the_model_is_loaded(tmp_path):
    with pytest.raises(DataError, match="INPUT does not exist. Received: 'nowhere'"):
        predict(tmp_path / "no-model", "nowhere")
    (tmp_path / "blob.lst").write_bytes(b"\x00\x01binary")
    with pytest.raises(DataError, match="UTF-8 text"):
        predict(tmp_path / "no-model", tmp_path / "blob.lst")


@pytest.mark.parametrize(("option", "message"), [
    ({"batch_size": 0}, "batch_size must be a positive integer. Received: batch_size=0"),
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"threshold": 1.5}, "threshold must be a probability between 0 and 1. Received: threshold=1.5"),
    ({"fmt": "xlsx"}, "fmt must be one of: csv, json, md-json. Received: fmt='xlsx'"),
    ({"sequence_gap": -5}, "sequence_gap must be a positive number of seconds"),
    ({"resume": True}, "resume needs the output file"),
])
def test_invalid_options_are_config_errors_that_echo_the_value(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        predict(tmp_path / "no-model", tmp_path, **option)


def test_an_existing_output_is_never_replaced_without_overwrite(tmp_path, classifier):
    coloured(tmp_path / "imgs" / "a.jpg", "deer")
    output = tmp_path / "out" / "predictions.csv"
    predict(classifier, tmp_path / "imgs", output=output)
    before = output.read_bytes()
    with pytest.raises(RunError, match="exists: use --overwrite"):
        predict(classifier, tmp_path / "imgs", output=output)
    with pytest.raises(RunError, match="is complete: there is no checkpoint"):
        predict(classifier, tmp_path / "imgs", output=output, resume=True)
    assert output.read_bytes() == before
    coloured(tmp_path / "imgs" / "b.jpg", "owl")
    predict(classifier, tmp_path / "imgs", output=output, overwrite=True)
    assert read_predictions(output)[0]["filepath"].tolist() == ["a.jpg", "b.jpg"]
    assert not checkpoint_path(output).exists()
    assert oct(output.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def test_an_output_that_cannot_be_written_fails_before_any_image_is_read(tmp_path, classifier):
    coloured(tmp_path / "imgs" / "a.jpg", "deer")
    (tmp_path / "a-file").write_text("not a folder")
    progress = StopAfter(1)
    with pytest.raises(RunError, match="cannot write the checkpoint .* beside the output"):
        predict(classifier, tmp_path / "imgs", output=tmp_path / "a-file" / "p.csv", progress=progress)
    assert progress.done == 0


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


class StopAfter:
    """A progress callback that presses Ctrl-C once ``count`` files are done."""

    def __init__(self, count: int) -> None:
        self.count, self.done = count, 0

    def __call__(self, advance: int, total: int) -> None:
        self.done += advance
        if self.done >= self.count:
            raise KeyboardInterrupt


def write_numbered(folder: Path, count: int, start: int = 0) -> Path:
    for i in range(start, start + count):
        coloured(folder / f"cam{i % 2}" / f"IMG_{i:04d}.JPG", CLASSES[i % 3], size=(24, 32), seed=i)
    return folder


def test_ctrl_c_saves_a_checkpoint_and_resuming_gives_exactly_the_uninterrupted_rows(tmp_path, classifier):
    folder = write_numbered(tmp_path / "card", 45)
    (folder / "cam0" / "IMG_0002.JPG").write_bytes(b"")  # failed: retried on resume
    output = tmp_path / "predictions.csv"
    reference = predict(classifier, folder, batch_size=4)

    with pytest.raises(PredictionInterrupted) as interrupted:
        predict(classifier, folder, output=output, batch_size=4, checkpoint_every=6, progress=StopAfter(20))
    assert interrupted.value.exit_code == 130
    assert "Interrupted after 20 of 45 images" in str(interrupted.value) and "--resume" in str(interrupted.value)
    assert not output.exists()
    with pytest.raises(RunError, match="add --resume to continue it, or --overwrite"):
        predict(classifier, folder, output=output)
    saved = [json.loads(line) for part in sorted(checkpoint_path(output).glob("part-*.jsonl"))
             for line in part.read_text().splitlines()]
    assert len(saved) == 20  # the 4 not yet in a part were flushed on Ctrl-C

    resumed = predict(classifier, folder, output=output, batch_size=4, checkpoint_every=6, resume=True)
    pd.testing.assert_frame_equal(resumed, reference)
    pd.testing.assert_frame_equal(read_predictions(output)[0], reference)
    summary = resumed.attrs["summary"]
    assert summary.reused == 16 and summary.processed == 29  # the chunk with the failed file is redone
    assert not checkpoint_path(output).exists()


def _retrained_copy(model_dir: Path, folder: Path) -> Path:
    model = keras.saving.load_model(model_dir / "model.keras")
    weights = model.get_weights()
    weights[-1] = weights[-1] + np.array([0.5, 0.0, 0.0], dtype=weights[-1].dtype)
    model.set_weights(weights)
    folder.mkdir()
    model.save(folder / "model.keras")
    shutil.copy(model_dir / "labels.json", folder / "labels.json")
    return folder


def test_a_checkpoint_from_another_model_or_input_set_is_refused(tmp_path, classifier, model_dir):
    folder = write_numbered(tmp_path / "card", 12)
    output = tmp_path / "predictions.csv"
    with pytest.raises(PredictionInterrupted):
        predict(classifier, folder, output=output, batch_size=4, checkpoint_every=4, progress=StopAfter(8))

    other = _retrained_copy(model_dir, tmp_path / "other-model")
    with pytest.raises(RunError) as error:
        predict(other, folder, output=output, resume=True)
    assert "belongs to another run" in str(error.value) and "other-model" in str(error.value)
    with pytest.raises(RunError, match="inputs was"):
        predict(classifier, [folder / "cam0"], output=output, resume=True)
    with pytest.raises(RunError, match="allow_truncated was False, now True"):
        predict(classifier, folder, output=output, resume=True, allow_truncated=True)
    # A copy of the same model elsewhere is the same model.
    shutil.copytree(model_dir, tmp_path / "copied-model")
    resumed = predict(tmp_path / "copied-model", folder, output=output, resume=True, batch_size=4)
    assert resumed.attrs["summary"].reused == 8


def test_json_output_records_model_classes_roots_and_reads_back_identically(tmp_path, classifier):
    folder = write_numbered(tmp_path / "card", 5)
    (folder / "broken.jpg").write_text("no")
    frame = predict(classifier, folder, output=tmp_path / "p.json", fmt="json", sequence_gap=10)
    data = json.loads((tmp_path / "p.json").read_text())
    meta = data["ecoclassify"]
    assert meta["classes"] == CLASSES and meta["roots"] == [str(folder)]
    assert meta["model"].endswith("model.keras") and meta["ecoclassify"] and len(meta["model_sha256"]) == 64
    assert meta["summary"]["failed_by_reason"] == {"unreadable": 1} and meta["options"]["sequence_gap"] == 10
    assert len(data["predictions"]) == 6 and data["predictions"][0]["label"] is None  # broken.jpg sorts first
    back, back_meta = read_predictions(tmp_path / "p.json")
    pd.testing.assert_frame_equal(back, frame)
    assert back_meta["roots"] == meta["roots"]


def test_md_json_follows_the_megadetector_batch_output_format(tmp_path, classifier):
    folder = write_numbered(tmp_path / "card", 4)
    (folder / "cam1" / "cut.jpg").write_bytes(jpeg_bytes()[:300])
    frame = predict(classifier, folder, output=tmp_path / "md.json", fmt="md-json", top_k=2, threshold=0.6)
    data = json.loads((tmp_path / "md.json").read_text())

    assert data["info"]["format_version"] == "1.6"
    assert data["info"]["classifier"] == f"{classifier.path.parent.name}/model.keras"
    assert data["info"]["classifier_metadata"] == {"typical_classification_threshold": 0.6,
                                                   "md_categories": dict.fromkeys(CLASSES, "animal")}
    assert data["info"]["ecoclassify"]["base"] == str(folder)
    assert data["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert data["classification_categories"] == {"0": "deer", "1": "fox", "2": "owl"}
    images = {image["file"]: image for image in data["images"]}
    assert sorted(images) == sorted(frame["filepath"])
    failed = images["cam1/cut.jpg"]
    assert failed["detections"] is None and failed["failure"].startswith("truncated: ")
    for row in frame[frame["status"] == "ok"].itertuples():
        (detection,) = images[row.filepath]["detections"]
        assert detection["category"] == "1" and detection["bbox"] == [0.0, 0.0, 1.0, 1.0]
        # Every class is an animal: the model is sure there is one, whichever species.
        assert isinstance(detection["conf"], float) and detection["conf"] == 1.0
        ids = [pair[0] for pair in detection["classifications"]]
        assert ids == [str(CLASSES.index(row.top1_label)), str(CLASSES.index(row.top2_label))]
        scores = [pair[1] for pair in detection["classifications"]]
        assert scores == sorted(scores, reverse=True)
    assert all(isinstance(k, str) and int(k) >= 0 for k in data["classification_categories"])
    with pytest.raises(DataError, match="MegaDetector format"):
        read_predictions(tmp_path / "md.json")


def test_the_predict_command_writes_the_output_and_prints_a_summary(tmp_path, model_dir):
    folder = write_numbered(tmp_path / "card", 6)
    (folder / "clip.mp4").write_bytes(b"\0")
    output = tmp_path / "predictions.csv"
    result = CliRunner().invoke(main, ["predict", str(model_dir), str(folder), "-o", str(output), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert "6 images: 6 ok, 0 failed; 1 other files skipped (not_an_image 1)" in result.output
    assert "images/s" in result.output and f"wrote {output}" in result.output
    assert len(read_predictions(output)[0]) == 6

    again = CliRunner().invoke(main, ["predict", str(model_dir), str(folder), "-o", str(output)])
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    missing = CliRunner().invoke(main, ["predict", str(tmp_path / "no-model"), str(folder), "-o",
                                        str(tmp_path / "x.csv")])
    assert missing.exit_code == 1 and "run folder containing model.keras" in missing.output


def test_the_cli_offers_exactly_the_library_choices():
    from ecoclassify.cli import predict_commands
    from ecoclassify.prediction import options, sorting

    assert predict_commands.FORMATS == options.FORMATS and predict_commands.MODES == sorting.MODES
    assert predict_commands.ENGINES == options.ENGINES
    assert predict_commands.RUNTIMES == options.RUNTIMES


def _release(fifo: Path) -> None:
    """Lets a reader blocked on ``fifo`` go on (the file then fails as not_a_regular_file)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing to release
        pass


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    """Waits until ``process`` writes ``path``; fails at once if it exits first.

    No deadline: on a loaded machine TensorFlow alone can take a minute to start, so any
    deadline is a guess that fails a correct program. A process that blocked on its FIFO
    without ever writing ``path`` would make this wait forever; that is a bug for the test
    runner's own timeout (``pytest --timeout``), not a speed limit of this test.
    """
    while not path.exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)


# A FIFO named like a photo no longer blocks predict (it fails at once as not_a_regular_file), so
# a read that hangs, as on a dead network mount, is played by a decoder that first opens the
# FIFO of a file named stuck*: that open blocks until the test opens it for writing.
HANGING_CLI = [CLI[0], "-c",
               "import ecoclassify.prediction.runner as runner\n"
               "real_load_rgb = runner.load_rgb\n"
               "def load_rgb(path, **options):\n"
               "    if path.name.startswith('stuck'):\n"
               "        open(path, 'rb').close()\n"
               "    return real_load_rgb(path, **options)\n"
               "runner.load_rgb = load_rgb\n" + CLI[2]]


@pytest.mark.slow
def test_a_killed_process_resumes_to_exactly_the_uninterrupted_result(tmp_path, model_dir, classifier):
    # A read that hangs (see HANGING_CLI) stops the run mid-way deterministically, so the signals
    # never race the end.
    first, second, third = (write_numbered(tmp_path / name, 60, start=60 * i)
                            for i, name in enumerate(("first", "second", "third")))
    stuck = [tmp_path / "stuck1.jpg", tmp_path / "stuck2.jpg"]
    for fifo in stuck:
        os.mkfifo(fifo)
    output = tmp_path / "out" / "predictions.csv"
    parts = checkpoint_path(output)
    args = ["predict", str(model_dir), str(first), str(stuck[0]), str(second), str(stuck[1]), str(third),
            "-o", str(output), "--batch-size", "10", "--checkpoint-every", "20"]

    # 1. Ctrl-C while blocked on the first FIFO: exit 130 and a line saying how to resume.
    process = subprocess.Popen([*HANGING_CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(parts / "part-000003.jsonl", process)  # all of first/ (60 images) is saved
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
    finally:
        _release(stuck[0])
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted after 60 of 182 images" in stderr and "again with --resume" in stderr
    stuck[0].unlink()
    coloured(stuck[0], "owl")

    # 2. --resume, then SIGKILL (no chance to clean up) while blocked on the second FIFO.
    process = subprocess.Popen([*HANGING_CLI, *args, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(parts / "part-000006.jsonl", process)  # first/, stuck1 and most of second/
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        _release(stuck[1])
    assert process.returncode == -signal.SIGKILL and not output.exists()
    stuck[1].unlink()
    coloured(stuck[1], "deer")

    # 3. --resume finishes (in this process, to save a TensorFlow start-up), with the rows of a
    # run that was never interrupted.
    finished = CliRunner().invoke(main, [*args, "--resume"])
    assert finished.exit_code == 0, finished.output
    assert "182 images: 182 ok" in finished.output and "120 from the checkpoint" in finished.output
    reference = predict(classifier, [first, stuck[0], second, stuck[1], third], batch_size=10)
    pd.testing.assert_frame_equal(read_predictions(output)[0], reference)
    assert not parts.exists()


def test_a_checkpoint_written_before_runtimes_existed_resumes_with_keras(tmp_path, classifier):
    folder = write_numbered(tmp_path / "card", 12)
    output = tmp_path / "predictions.csv"
    reference = predict(classifier, folder, batch_size=4)
    with pytest.raises(PredictionInterrupted):
        predict(classifier, folder, output=output, batch_size=4, checkpoint_every=4, progress=StopAfter(8))
    meta_path = checkpoint_path(output) / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["fingerprint"]["runtime"]  # as ecoclassify wrote it before --runtime
    meta_path.write_text(json.dumps(meta))
    resumed = predict(classifier, folder, output=output, batch_size=4, resume=True)
    assert resumed.attrs["summary"].reused == 8
    pd.testing.assert_frame_equal(resumed, reference)
