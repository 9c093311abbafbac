"""Sorting images into label folders: never overwriting, always undoable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ecoclassify.cli.app import main
from ecoclassify.errors import ConfigError, DataError, RunError
from ecoclassify.cli.predict_commands import predict_command, sort_command
from ecoclassify.prediction.labelling import predict
from ecoclassify.prediction.sorting import SortInterrupted, folder_name, sort, undo_sort
from tests.prediction._predict_support import CLI, COLOURS, coloured, tiny_model_dir

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


def test_a_killed_move_is_undone_from_its_journal_judging_each_file_on_disk(tmp_path, card, predictions,
                                                                           folder_snapshot):
    before = folder_snapshot(card)
    dest = tmp_path / "sorted"
    # kill -9 after three files: no `finally` runs, the manifest still says "planned" everywhere.
    script = ("import os, signal, sys\nfrom ecoclassify.prediction.sorting import sort\ndone = []\n"
              "def kill(advance, total):\n    done.append(advance)\n"
              "    if len(done) == 3:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
              "sort(sys.argv[1], sys.argv[2], mode='move', progress=kill)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(predictions), str(dest)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    manifest = next(dest.glob("sort-manifest-*.csv"))
    assert set(pd.read_csv(manifest)["status"]) == {"planned"}
    first = pd.read_csv(manifest).iloc[0]
    os.rename(first["destination"], first["source"])  # the user already put one back by hand

    undone = undo_sort(manifest)
    assert undone["undo"].tolist() == ["not_sorted", "restored", "restored"] + ["not_sorted"] * 4
    assert folder_snapshot(card) == before
    assert not list(dest.glob("*.journal"))


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


# Hand-written predictions (no model needed): the sort reads only root, filepath, status, label, score.


def write_predictions(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    for column, default in (("status", "ok"), ("score", 0.9)):
        if column not in frame:
            frame[column] = default
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/a.jpg (deer), photos/b.jpg (fox), photos/sub/c.jpg (deer) and their predictions.csv."""
    root = tmp_path / "photos"
    rows = []
    for name, label in (("a.jpg", "deer"), ("b.jpg", "fox"), ("sub/c.jpg", "deer")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(f"the photo {name}".encode())
        rows.append({"root": str(root), "filepath": name, "label": label})
    return write_predictions(tmp_path / "photos.csv", rows)


def edit_manifest(manifest: str | Path, row: int, **values: str) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column, value in values.items():
        frame.loc[row, column] = value
    frame.to_csv(manifest, index=False)


@pytest.mark.parametrize("where", ["outside", "dotdot", "made_folder"])
def test_undo_refuses_a_manifest_that_leads_outside_dest_and_touches_nothing(tmp_path, photos, where):
    dest = tmp_path / "sorted"
    plan = sort(photos, dest, mode="copy")
    precious = tmp_path / "precious.txt"
    precious.write_text("not the sort's")
    edit = {"outside": {"destination": str(precious)},
            "dotdot": {"destination": str(dest / "deer" / ".." / ".." / "precious.txt")},
            "made_folder": {"made_folder": str(tmp_path)}}[where]
    edit_manifest(plan.attrs["manifest"], 0, **edit)
    before = files_under(dest)

    with pytest.raises(DataError, match="undo touches nothing"):
        undo_sort(plan.attrs["manifest"])
    assert precious.read_text() == "not the sort's" and files_under(dest) == before


@pytest.mark.parametrize("bad_dest", ["/", "relative/folder"])
def test_undo_refuses_a_manifest_whose_dest_is_the_root_or_not_absolute(tmp_path, photos, bad_dest):
    plan = sort(photos, tmp_path / "sorted", mode="copy")
    frame = pd.read_csv(plan.attrs["manifest"], dtype=str, keep_default_na=False).assign(dest=bad_dest)
    frame.to_csv(plan.attrs["manifest"], index=False)
    with pytest.raises(DataError, match="DEST must be an absolute folder other than the file system's root"):
        undo_sort(plan.attrs["manifest"])
    assert len(files_under(tmp_path / "sorted")) == 4  # three copies and the manifest


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_undo_keeps_a_file_edited_since_the_sort(tmp_path, photos, mode):
    dest = tmp_path / "sorted"
    plan = sort(photos, dest, mode=mode)
    edited = dest / "fox" / "b.jpg"
    edited.write_bytes(edited.read_bytes().replace(b"photo", b"PHOTO"))  # same size, other content

    undone = undo_sort(plan.attrs["manifest"]).set_index("destination")
    assert undone.loc[str(edited), "undo"] == "kept: changed since sort"
    assert edited.read_bytes() == b"the PHOTO b.jpg"
    assert not (dest / "deer").exists()  # the unchanged ones were undone
    assert (tmp_path / "photos" / "b.jpg").exists() == (mode == "copy")  # a changed move is not moved back


def test_undo_leaves_a_file_another_process_wrote_at_a_planned_name(tmp_path, photos):
    dest = tmp_path / "sorted"

    def another_sort_takes_fox_b(advance: int, total: int) -> None:
        (dest / "fox").mkdir(exist_ok=True)
        if not (dest / "fox" / "b.jpg").exists():
            (dest / "fox" / "b.jpg").write_bytes(b"another process's file")

    plan = sort(photos, dest, mode="copy", progress=another_sort_takes_fox_b).set_index("destination")
    assert plan.loc[str(dest / "fox" / "b.jpg"), "status"] == "error"
    assert "FileExistsError" in plan.loc[str(dest / "fox" / "b.jpg"), "detail"]

    undone = undo_sort(plan.attrs["manifest"]).set_index("destination")
    assert undone.loc[str(dest / "fox" / "b.jpg"), "undo"] == "not_sorted"
    assert (dest / "fox" / "b.jpg").read_bytes() == b"another process's file"
    assert not (dest / "deer").exists()


def test_undo_keeps_the_copies_of_an_older_manifest_without_hashes(tmp_path, photos):
    plan = sort(photos, tmp_path / "sorted", mode="copy")
    manifest = plan.attrs["manifest"]
    pd.read_csv(manifest).drop(columns=["size", "sha256", "made_folder"], errors="ignore").to_csv(manifest, index=False)
    undone = undo_sort(manifest)
    assert set(undone["undo"]) == {"kept: no size/hash recorded (older manifest)"}
    assert len(files_under(tmp_path / "sorted")) == 4


def test_undo_removes_only_the_empty_folders_the_sort_made(tmp_path, photos):
    dest = tmp_path / "sorted"
    (dest / "deer" / "sub").mkdir(parents=True)  # the user's own empty folder
    plan = sort(photos, dest, mode="copy")
    assert (dest / "deer" / "sub" / "c.jpg").is_file()
    undo_sort(plan.attrs["manifest"])
    assert (dest / "deer" / "sub").is_dir() and not list((dest / "deer" / "sub").iterdir())
    assert not (dest / "fox").exists()


def test_the_undo_command_refuses_a_tampered_manifest_and_says_why(tmp_path, photos):
    dest = tmp_path / "sorted"
    sorted_ = subprocess.run([*CLI, "sort", str(photos), str(dest)], capture_output=True, text=True)
    assert sorted_.returncode == 0, sorted_.stderr
    manifest = next(dest.glob("sort-manifest-*.csv"))
    outside = tmp_path / "photos" / "a.jpg"  # an original, outside DEST
    edit_manifest(manifest, 1, destination=str(outside))

    undo = subprocess.run([*CLI, "sort", "--undo", str(manifest)], capture_output=True, text=True)
    assert undo.returncode == 1
    assert "the destination is outside DEST" in undo.stderr and str(outside) in undo.stderr
    assert outside.read_bytes() == b"the photo a.jpg"
    assert (dest / "deer" / "a.jpg").is_file()  # nothing at all was undone


@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_sorting_twice_into_the_same_dest_gives_the_same_tree(tmp_path, photos, mode):
    dest = tmp_path / "sorted"
    first = sort(photos, dest, mode=mode, manifest=tmp_path / "first.csv")
    tree = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))

    second = sort(photos, dest, mode=mode, manifest=tmp_path / "second.csv")
    assert set(second["status"]) == {"already_sorted"}
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == tree

    assert set(undo_sort(tmp_path / "second.csv")["undo"]) == {"not_sorted"}  # not the second sort's files
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == tree
    assert set(undo_sort(first.attrs["manifest"])["undo"]) == {"removed"}
    assert not dest.exists() or not list(dest.iterdir())


def test_a_real_name_clash_still_gets_a_new_name_and_sorting_again_reuses_it(tmp_path, photos):
    dest = tmp_path / "sorted"
    squatter = dest / "deer" / "a.jpg"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's a.jpg")
    first = CliRunner().invoke(main, ["sort", str(photos), str(dest)])
    assert first.exit_code == 0, first.output
    assert f"renamed: 1 (the name was taken by another file), e.g. {dest / 'deer' / 'a-2.jpg'}" in first.output
    assert (dest / "deer" / "a-2.jpg").read_bytes() == b"the photo a.jpg"

    again = CliRunner().invoke(main, ["sort", str(photos), str(dest)])
    assert again.exit_code == 0, again.output
    assert "copy: 0 of 3 files" in again.output and "already sorted: 3" in again.output
    assert sorted(p.name for p in (dest / "deer").iterdir()) == ["a-2.jpg", "a.jpg", "sub"]


def test_a_filepath_leading_outside_its_root_is_refused(tmp_path, photos):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"outside the root")
    rows = [{"root": str(tmp_path / "photos"), "filepath": "../secret.jpg", "label": "deer"},
            {"root": str(tmp_path / "photos"), "filepath": str(secret), "label": "deer"},
            {"root": str(tmp_path / "photos"), "filepath": "a.jpg", "label": "deer"}]
    plan = sort(write_predictions(tmp_path / "edited.csv", rows), tmp_path / "sorted", mode="move")
    assert plan["status"].tolist() == ["error", "error", "done"]
    assert plan["detail"].str.contains("leads outside its root").tolist() == [True, True, False]
    assert secret.read_bytes() == b"outside the root"
    assert b"outside the root" not in files_under(tmp_path / "sorted").values()


def test_sort_never_writes_through_a_symlinked_label_folder(tmp_path, photos):
    dest, elsewhere = tmp_path / "sorted", tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir()
    (dest / "deer").symlink_to(elsewhere)
    plan = sort(photos, dest, mode="copy").set_index("source")
    assert plan["status"].tolist() == ["error", "done", "error"]  # a.jpg, b.jpg, sub/c.jpg
    assert f"{dest / 'deer'} is a symlink; sort never writes through a symlinked folder" in plan["detail"].iloc[0]
    assert not list(elsewhere.iterdir())
    assert CliRunner().invoke(main, ["sort", str(photos), str(dest), "--dry-run"]).output.count("is a symlink") == 1


def test_classes_called_failed_or_unknown_get_folders_apart_from_the_special_ones(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rows = []
    # (file, status, label, score, prob_unknown): the last "unknown" is --threshold's, not the class.
    for name, status, label, score, prob in (("1.jpg", "ok", "failed", 0.9, 0.05),
                                             ("2.jpg", "failed", None, None, None),
                                             ("3.jpg", "ok", "unknown", 0.8, 0.8),
                                             ("4.jpg", "ok", "unknown", 0.4, 0.3),
                                             ("5.jpg", "ok", "Unknown", 0.9, 0.0)):
        (root / name).write_bytes(name.encode())
        rows.append({"root": str(root), "filepath": name, "status": status, "label": label, "score": score,
                     "prob_unknown": prob})
    plan = sort(write_predictions(tmp_path / "p.csv", rows), tmp_path / "sorted", dry_run=True)
    assert plan["folder"].tolist() == ["class-failed", "failed", "class-unknown", "unknown", "class-Unknown"]
    with_min_score = sort(tmp_path / "p.csv", tmp_path / "sorted", min_score=0.85, dry_run=True)
    assert with_min_score["folder"].tolist()[2] == "unknown"


def test_a_move_never_moves_a_symlink_or_its_target_and_leaves_no_dangling_link(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"a")
    (root / "b.jpg").write_bytes(b"b")
    (root / "link.jpg").symlink_to("a.jpg")
    rows = [{"root": str(root), "filepath": name, "label": "deer"} for name in ("a.jpg", "b.jpg", "link.jpg")]
    plan = sort(write_predictions(tmp_path / "p.csv", rows), tmp_path / "sorted", mode="move")
    assert plan["status"].tolist() == ["error", "done", "error"]
    assert plan["detail"].iloc[0].startswith(f"the symlink {root / 'link.jpg'} points to it and would dangle")
    assert plan["detail"].iloc[2].startswith("is a symlink; not moved")
    every_link = [p for p in tmp_path.rglob("*") if p.is_symlink()]
    assert every_link == [root / "link.jpg"] and (root / "link.jpg").read_bytes() == b"a"
