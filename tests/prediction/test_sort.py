"""Sorting images into label folders: never overwriting, always undoable."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecoclassify.cli.app import main
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.cli.predict_commands import predict_command, sort_command
from ecoclassify.prediction.labelling import predict
from ecoclassify.prediction.sorting import SortInterrupted, folder_name, sort, undo_sort
from tests.prediction._predict_support import COLOURS, coloured, tiny_model_dir

main.add_command(predict_command)
main.add_command(sort_command)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture
def card(tmp_path) -> Path:
    """Two cameras with the same file names, one unreadable file and a video."""
    root = tmp_path / "card"
    for camera in ("cam1", "cam2"):
        for i, label in enumerate(COLOURS):
            coloured(root / camera / f"IMG_000{i}.JPG", label, seed=i + 10 * (camera == "cam2"))
    (root / "cam2" / "IMG_0009.JPG").write_bytes(b"")
    (root / "cam2" / "clip.mp4").write_bytes(b"\0\0\0\x18ftyp")
    return root


@pytest.fixture
def predictions(tmp_path, card, model_dir) -> Path:
    predict(model_dir, card, output=tmp_path / "predictions.csv", sequence_gap=5)
    return tmp_path / "predictions.csv"


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_move_then_undo_restores_the_card_exactly(tmp_path, card, predictions, folder_snapshot):
    before = folder_snapshot(card)
    dest = tmp_path / "sorted"
    plan = sort(predictions, dest, mode="move")

    assert (plan["status"] == "done").all()
    assert set(files_under(dest)) == {
        "deer/cam1/IMG_0000.JPG", "fox/cam1/IMG_0001.JPG", "owl/cam1/IMG_0002.JPG",
        "deer/cam2/IMG_0000.JPG", "fox/cam2/IMG_0001.JPG", "owl/cam2/IMG_0002.JPG",
        "failed/cam2/IMG_0009.JPG", Path(plan.attrs["manifest"]).name}
    assert set(files_under(card)) == {"cam2/clip.mp4"}  # only what predict skipped stays

    undone = undo_sort(plan.attrs["manifest"])
    assert set(undone["undo"]) == {"restored"}
    assert folder_snapshot(card) == before
    assert [p.name for p in dest.iterdir()] == [Path(plan.attrs["manifest"]).name]  # label folders removed


def test_copy_never_overwrites_an_existing_file(tmp_path, card, predictions):
    dest = tmp_path / "sorted"
    squatter = dest / "deer" / "cam1" / "IMG_0000.JPG"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's file")
    plan = sort(predictions, dest, mode="copy")

    assert squatter.read_bytes() == b"someone else's file"
    copy = dest / "deer" / "cam1" / "IMG_0000-2.JPG"
    assert copy.read_bytes() == (card / "cam1" / "IMG_0000.JPG").read_bytes()
    assert str(copy) in set(plan["destination"])
    assert os.stat(copy).st_mtime == pytest.approx(os.stat(card / "cam1" / "IMG_0000.JPG").st_mtime)
    assert (card / "cam1" / "IMG_0000.JPG").exists()  # a copy leaves the originals

    undo_sort(plan.attrs["manifest"])
    assert squatter.read_bytes() == b"someone else's file" and not copy.exists()
    assert (card / "cam1" / "IMG_0000.JPG").exists()


def test_flat_sorting_gives_colliding_names_a_suffix(tmp_path, predictions):
    sort(predictions, tmp_path / "sorted", mode="copy", flat=True)
    assert sorted(p.name for p in (tmp_path / "sorted" / "deer").iterdir()) == ["IMG_0000-2.JPG", "IMG_0000.JPG"]


def test_symlinks_point_at_the_originals_and_undo_removes_them(tmp_path, card, predictions):
    plan = sort(predictions, tmp_path / "sorted", mode="symlink")
    link = tmp_path / "sorted" / "owl" / "cam2" / "IMG_0002.JPG"
    assert link.is_symlink() and link.resolve() == (card / "cam2" / "IMG_0002.JPG").resolve()
    undo_sort(plan.attrs["manifest"])
    assert not link.is_symlink() and (card / "cam2" / "IMG_0002.JPG").is_file()


def test_low_scores_go_to_unknown_and_failures_to_failed(tmp_path, predictions):
    frame = pd.read_csv(predictions)
    cut = float(frame["score"].dropna().median())
    plan = sort(predictions, tmp_path / "sorted", mode="copy", min_score=cut, dry_run=True)
    by_source = plan.set_index(plan["source"].str.split("card/").str[1])
    scores = frame.set_index("filepath")["score"]
    for filepath, folder in by_source["folder"].items():
        if filepath == "cam2/IMG_0009.JPG":
            assert folder == "failed"
        else:
            assert (folder == "unknown") == (scores[filepath] < cut)


def test_sorting_by_sequence_uses_the_sequence_label(tmp_path, predictions):
    plan = sort(predictions, tmp_path / "sorted", by_sequence=True, dry_run=True)
    frame = pd.read_csv(predictions)
    ok = frame["status"] == "ok"
    assert sorted(plan["folder"][ok.to_numpy()]) == sorted(frame.loc[ok, "sequence_label"])


def test_a_dry_run_touches_nothing(tmp_path, predictions, folder_snapshot):
    before = folder_snapshot(tmp_path)
    plan = sort(predictions, tmp_path / "sorted", mode="move", dry_run=True)
    assert set(plan["status"]) == {"planned"} and plan.attrs["manifest"] is None
    assert folder_snapshot(tmp_path) == before


def test_undo_trusts_the_disk_not_the_manifest_after_a_killed_sort(tmp_path, card, predictions, folder_snapshot):
    before = folder_snapshot(card)
    plan = sort(predictions, tmp_path / "sorted", mode="move")
    manifest = Path(plan.attrs["manifest"])
    # As if the sort had been killed after writing its plan: statuses say "planned", and one
    # file was never moved.
    pd.read_csv(manifest).assign(status="planned").to_csv(manifest, index=False)
    first = plan.iloc[0]
    os.rename(first["destination"], first["source"])

    undone = undo_sort(manifest)
    assert undone["undo"].tolist()[0] == "not_sorted" and set(undone["undo"].tolist()[1:]) == {"restored"}
    assert folder_snapshot(card) == before


def test_an_interrupted_move_can_be_undone_from_its_manifest(tmp_path, card, predictions, folder_snapshot):
    before = folder_snapshot(card)

    def ctrl_c_after_three(advance: int, total: int, done=[]) -> None:  # noqa: B006 - a counter
        done.append(advance)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(SortInterrupted) as interrupted:
        sort(predictions, tmp_path / "sorted", mode="move", progress=ctrl_c_after_three)
    assert interrupted.value.exit_code == 130 and "Interrupted after 3 of 7 files" in str(interrupted.value)
    manifest = next((tmp_path / "sorted").glob("sort-manifest-*.csv"))
    assert "ecoclassify sort --undo" in str(interrupted.value)
    assert pd.read_csv(manifest)["status"].tolist().count("done") == 3

    undone = undo_sort(manifest)
    assert sorted(undone["undo"]) == ["not_sorted"] * 4 + ["restored"] * 3
    assert folder_snapshot(card) == before


def test_undo_keeps_a_copy_whose_original_is_gone(tmp_path, card, predictions):
    plan = sort(predictions, tmp_path / "sorted", mode="copy")
    (card / "cam1" / "IMG_0001.JPG").unlink()
    undone = undo_sort(plan.attrs["manifest"]).set_index("source")
    assert undone.loc[str(card / "cam1" / "IMG_0001.JPG"), "undo"] == "kept"
    assert (tmp_path / "sorted" / "fox" / "cam1" / "IMG_0001.JPG").is_file()


def test_a_missing_source_is_reported_not_fatal(tmp_path, card, predictions):
    (card / "cam1" / "IMG_0002.JPG").unlink()
    plan = sort(predictions, tmp_path / "sorted", mode="move").set_index("source")
    assert plan.loc[str(card / "cam1" / "IMG_0002.JPG"), "status"] == "missing"
    assert (plan["status"] == "done").sum() == 6


def test_bad_arguments_are_clear_errors(tmp_path, predictions):
    with pytest.raises(ConfigError, match="mode must be one of: copy, symlink, move. Received: mode='hardlink'"):
        sort(predictions, tmp_path / "s", mode="hardlink")
    with pytest.raises(ConfigError, match="min_score must be between 0 and 1"):
        sort(predictions, tmp_path / "s", min_score=2)
    with pytest.raises(DataError, match="predictions file does not exist"):
        sort(tmp_path / "nope.csv", tmp_path / "s")
    plain = tmp_path / "plain.csv"
    pd.read_csv(predictions).drop(columns=["sequence_id", "sequence_label", "sequence_score"]).to_csv(plain)
    with pytest.raises(DataError, match="run predict with --sequence-gap"):
        sort(plain, tmp_path / "s", by_sequence=True)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("exists")
    with pytest.raises(RunError, match="never overwritten"):
        sort(predictions, tmp_path / "s", manifest=manifest)


@pytest.mark.parametrize(("label", "folder"), [
    ("red fox", "red fox"), ("a/b", "a_b"), ("..", "_"), (".hidden", "hidden"), ('c:*?"<>|', "c" + "_" * 7),
])
def test_labels_become_safe_folder_names(label, folder):
    assert folder_name(label) == folder


def test_the_sort_command_sorts_and_undoes(tmp_path, card, predictions, folder_snapshot):
    before = folder_snapshot(card)
    dest = tmp_path / "sorted"
    dry = CliRunner().invoke(main, ["sort", str(predictions), str(dest), "--mode", "move", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run: would move 7 files" in dry.output and "failed 1" in dry.output and not dest.exists()

    result = CliRunner().invoke(main, ["sort", str(predictions), str(dest), "--mode", "move"])
    assert result.exit_code == 0, result.output
    assert "move: 7 of 7 files" in result.output and "ecoclassify sort --undo" in result.output
    manifest = next(dest.glob("sort-manifest-*.csv"))
    undo = CliRunner().invoke(main, ["sort", "--undo", str(manifest)])
    assert undo.exit_code == 0 and "restored 7" in undo.output
    assert folder_snapshot(card) == before

    usage = CliRunner().invoke(main, ["sort", str(predictions)])
    assert usage.exit_code == 2 and "give PREDICTIONS and DEST, or --undo MANIFEST" in usage.output
