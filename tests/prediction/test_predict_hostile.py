"""``ecoclassify predict`` against a hostile file system: odd names, pipes, races, clobbered paths."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.prediction._predict_support import coloured, run_cli, tiny_model_dir
from tests.prediction.test_predict import StopAfter
from ecoclassify.errors import RunError
from ecoclassify.models.io import load_classifier
from ecoclassify.prediction.checkpoint import checkpoint_path
from ecoclassify.prediction.outputs import read_predictions
from ecoclassify.prediction.labelling import PredictionInterrupted, format_summary, predict

NOT_UTF8 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name: Python gives it as a surrogate-escaped str


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(model_dir):
    return load_classifier(model_dir)


# --- file names that are not UTF-8 ------------------------------------------------------------


needs_bytes_names = pytest.mark.skipif(sys.platform in ("win32", "darwin"),
                                       reason="only Linux-like file systems store names as arbitrary bytes")


@needs_bytes_names
def test_a_photo_whose_name_is_not_utf8_is_classified_resumed_and_found_again(tmp_path, model_dir, classifier):
    card = tmp_path / "card"
    for i in range(3):
        coloured(card / f"IMG_{i}.jpg", "fox", seed=i)
    coloured(card / NOT_UTF8, "deer")
    coloured(card / os.fsdecode(b"\xff\xfe.jpg"), "owl")
    output = tmp_path / "predictions.csv"
    with pytest.raises(PredictionInterrupted):
        predict(classifier, card, output=output, batch_size=1, checkpoint_every=1, progress=StopAfter(4))

    resumed = run_cli("predict", str(model_dir), str(card), "-o", str(output), "--batch-size", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "5 images: 5 ok" in resumed.stdout and "4 from the checkpoint" in resumed.stdout
    frame = read_predictions(output)[0]
    assert sorted(frame["filepath"]) == sorted(["IMG_0.jpg", "IMG_1.jpg", "IMG_2.jpg", NOT_UTF8,
                                                os.fsdecode(b"\xff\xfe.jpg")])
    assert (frame["status"] == "ok").all()
    for row in frame.itertuples():
        assert Path(row.root, row.filepath).is_file()  # sort finds the very file again
    assert b"caf\xe9.jpg" in output.read_bytes()  # the csv holds the name's bytes as the disk does
    filed = run_cli("sort", str(output), str(tmp_path / "sorted"))
    assert filed.returncode == 0, filed.stderr
    assert {path.name for path in (tmp_path / "sorted").rglob("*.jpg")} == set(frame["filepath"])

    json_output = tmp_path / "predictions.json"
    done = run_cli("predict", str(model_dir), str(card), "-o", str(json_output))
    assert done.returncode == 0, done.stderr
    json_output.read_bytes().decode("utf-8")  # json stays valid UTF-8: the bytes are \udcXX escapes
    assert NOT_UTF8 in read_predictions(json_output)[0]["filepath"].tolist()
    md = tmp_path / "md.json"
    done = run_cli("predict", str(model_dir), str(card), "-o", str(md), "--format", "md-json")
    assert done.returncode == 0, done.stderr
    assert NOT_UTF8 in {image["file"] for image in json.loads(md.read_bytes().decode("utf-8"))["images"]}


# --- pipes and devices named like photos --------------------------------------------------------


def test_a_fifo_named_like_a_photo_fails_at_once_instead_of_hanging(tmp_path, model_dir):
    card = tmp_path / "card"
    coloured(card / "a.jpg", "fox")
    os.mkfifo(card / "x.jpg")
    os.mkfifo(tmp_path / "y.jpg")
    (card / "list.txt").write_text("a.jpg\nx.jpg\n")
    output = tmp_path / "predictions.csv"
    # One listed by name, one given as INPUT: both used to block forever in open().
    done = run_cli("predict", str(model_dir), str(card / "list.txt"), str(tmp_path / "y.jpg"), "-o", str(output),
                   timeout=120)
    assert done.returncode == 0, done.stderr
    frame = read_predictions(output)[0].set_index("filepath")
    for name in ("x.jpg", "y.jpg"):
        assert frame.loc[name, "status"] == "failed" and frame.loc[name, "error"] == "not_a_regular_file"
        assert "named pipe" in frame.loc[name, "detail"]
    assert frame.loc["a.jpg", "status"] == "ok"
    # In a folder walk a pipe is passed over (not a file), as before.
    done = run_cli("predict", str(model_dir), str(card), "-o", str(tmp_path / "walk.csv"), timeout=120)
    assert done.returncode == 0 and "not_a_file 1" in done.stdout, done.stderr


def test_a_fifo_given_as_a_list_file_is_refused_instead_of_hanging(tmp_path, model_dir):
    os.mkfifo(tmp_path / "paths.txt")
    done = run_cli("predict", str(model_dir), str(tmp_path / "paths.txt"), "-o", str(tmp_path / "p.csv"), timeout=60)
    assert done.returncode == 1 and "must be a regular file" in done.stderr, done.stderr


# --- two runs on one output ---------------------------------------------------------------------


def test_a_second_predict_on_the_same_output_is_refused_while_the_first_runs(tmp_path, model_dir, classifier):
    from ecoclassify.prediction.lock import lock_path, output_lock

    coloured(tmp_path / "card" / "a.jpg", "fox")
    output = tmp_path / "predictions.csv"
    with output_lock(output):  # as a running predict holds it
        second = run_cli("predict", str(model_dir), str(tmp_path / "card"), "-o", str(output))
        with pytest.raises(RunError, match="another ecoclassify predict is writing"):
            predict(classifier, tmp_path / "card", output=output, overwrite=True)
    assert second.returncode == 1, second.stderr
    assert f"another ecoclassify predict is writing {output} (pid {os.getpid()})" in " ".join(second.stderr.split())
    assert not output.exists() and not checkpoint_path(output).exists()
    # Once the first is done, the lock file is gone and the next run goes ahead.
    assert not lock_path(output).exists()
    predict(classifier, tmp_path / "card", output=output)
    assert output.exists() and not lock_path(output).exists()


def test_a_user_file_named_like_the_lock_is_left_alone(tmp_path, classifier):
    coloured(tmp_path / "card" / "a.jpg", "fox")
    (tmp_path / "predictions.csv.lock").write_text("my notes\n")
    with pytest.raises(RunError, match="was not written by ecoclassify"):
        predict(classifier, tmp_path / "card", output=tmp_path / "predictions.csv")
    assert (tmp_path / "predictions.csv.lock").read_text() == "my notes\n"


# --- resuming after the files changed --------------------------------------------------------------


def test_resume_reads_again_a_photo_replaced_under_the_same_name(tmp_path, classifier):
    card = tmp_path / "card"
    for i in range(6):
        coloured(card / f"IMG_{i:04d}.JPG", "fox", seed=i)
    output = tmp_path / "predictions.csv"
    with pytest.raises(PredictionInterrupted):
        predict(classifier, card, output=output, batch_size=2, checkpoint_every=2, progress=StopAfter(4))
    # The card is swapped: a different photo under a name the checkpoint already holds.
    (card / "IMG_0001.JPG").unlink()
    coloured(card / "IMG_0001.JPG", "owl", size=(50, 60), seed=9)

    resumed = predict(classifier, card, output=output, batch_size=2, checkpoint_every=2, resume=True)
    fresh = predict(classifier, card, batch_size=2)
    row = resumed.set_index("filepath").loc["IMG_0001.JPG"]
    assert row["label"] == "owl" and (row["width"], row["height"]) == (60, 50)
    np.testing.assert_array_equal(resumed[[c for c in resumed if c.startswith("prob_")]].to_numpy(),
                                  fresh[[c for c in fresh if c.startswith("prob_")]].to_numpy())
    summary = resumed.attrs["summary"]
    assert summary.changed == 1 and summary.reused == 2  # the chunk of the changed file is redone whole
    assert "1 files had changed since the checkpoint" in format_summary(summary)


def test_a_checkpoint_without_file_identities_is_resumed_by_reading_its_files_again(tmp_path, classifier):
    card = tmp_path / "card"
    for i in range(4):
        coloured(card / f"IMG_{i}.jpg", "deer", seed=i)
    output = tmp_path / "predictions.csv"
    with pytest.raises(PredictionInterrupted):
        predict(classifier, card, output=output, batch_size=2, checkpoint_every=2, progress=StopAfter(2))
    for part in checkpoint_path(output).glob("part-*.jsonl"):  # as written before identities were recorded
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        part.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "identity"}) + "\n" for row in rows))
    resumed = predict(classifier, card, output=output, batch_size=2, resume=True)
    assert resumed.attrs["summary"].changed == 2 and resumed.attrs["summary"].reused == 0
    assert (resumed["status"] == "ok").all()


# --- outputs that would clobber something -------------------------------------------------------


def test_overwrite_never_deletes_a_user_folder_named_like_the_checkpoint(tmp_path, classifier):
    coloured(tmp_path / "card" / "a.jpg", "fox")
    output = tmp_path / "predictions.csv"
    output.write_text("an old result\n")
    mine = checkpoint_path(output)
    (mine / "field notes").mkdir(parents=True)
    (mine / "field notes" / "site3.txt").write_text("precious")
    with pytest.raises(RunError, match="not written by ecoclassify predict.*move it away"):
        predict(classifier, tmp_path / "card", output=output, overwrite=True)
    assert (mine / "field notes" / "site3.txt").read_text() == "precious"
    assert output.read_text() == "an old result\n"
    # A checkpoint this tool wrote is still discarded by --overwrite.
    shutil.rmtree(mine)
    with pytest.raises(PredictionInterrupted):
        predict(classifier, tmp_path / "card", output=tmp_path / "other.csv", progress=StopAfter(1))
    predict(classifier, tmp_path / "card", output=tmp_path / "other.csv", overwrite=True)
    assert not checkpoint_path(tmp_path / "other.csv").exists()


def test_an_output_that_is_one_of_the_input_photos_is_refused(tmp_path, model_dir, classifier):
    card = tmp_path / "card"
    photo = coloured(card / "IMG_0001.JPG", "fox")
    coloured(card / "IMG_0002.JPG", "owl")
    before = photo.read_bytes()
    done = run_cli("predict", str(model_dir), str(card), "-o", str(photo), "--overwrite")
    assert done.returncode == 1 and "output must not be a file this run reads" in done.stderr, done.stderr
    with pytest.raises(RunError, match="INPUT image file"):
        predict(classifier, [photo, card / "IMG_0002.JPG"], output=card / "IMG_0002.JPG", overwrite=True)
    (tmp_path / "list.txt").write_text("card/IMG_0001.JPG\n")
    with pytest.raises(RunError, match="INPUT list file"):
        predict(classifier, tmp_path / "list.txt", output=tmp_path / "list.txt", overwrite=True)
    with pytest.raises(RunError, match="the image .*IMG_0001.JPG"):
        predict(classifier, tmp_path / "list.txt", output=photo, overwrite=True)
    assert photo.read_bytes() == before and (tmp_path / "list.txt").read_text() == "card/IMG_0001.JPG\n"


# --- models that do not give probabilities ----------------------------------------------------------


def test_a_model_without_a_softmax_is_refused_instead_of_writing_logits_as_probabilities(tmp_path, model_dir):
    import keras

    full = keras.saving.load_model(model_dir / "model.keras")
    # The same network up to its last Dense layer, activation removed: it gives logits.
    last = full.layers[-1]
    logits = keras.layers.Dense(3, name="logits")(full.layers[-2].output)
    model = keras.Model(full.inputs, logits)
    model.get_layer("logits").set_weights(last.get_weights())
    folder = tmp_path / "no-softmax"
    folder.mkdir()
    model.save(folder / "model.keras")
    shutil.copy(model_dir / "labels.json", folder / "labels.json")
    for i in range(3):
        coloured(tmp_path / "card" / f"IMG_{i}.jpg", "owl", seed=i)
    output = tmp_path / "predictions.csv"

    done = run_cli("predict", str(folder), str(tmp_path / "card"), "-o", str(output))
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "the model's outputs are not probabilities (a softmax is missing?)" in message
    assert str(folder / "model.keras") in message
    assert not output.exists() and not checkpoint_path(output).exists()
