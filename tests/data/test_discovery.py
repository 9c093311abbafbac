"""Finding image files in camera-trap folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecoclassify.data import discovery
from ecoclassify.data.discovery import (
    IMAGE_EXTENSIONS,
    discover_images,
    is_hidden,
    iter_images,
)
from ecoclassify.errors import DataError

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def touch(root: Path, *relatives: str) -> None:
    """Creates empty files; discovery looks at names only, never at content."""
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def relative_images(result) -> list[str]:
    return [p.relative_to(result.root).as_posix() for p in result.images]


def skipped(result) -> dict[str, str]:
    return {p.relative_to(result.root).as_posix(): reason for p, reason in result.skipped}


def test_extensions_match_in_any_letter_case(tmp_path):
    names = ["a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.tif", "f.TIFF", "g.bmp", "h.WebP"]
    touch(tmp_path, *names)
    assert relative_images(discover_images(tmp_path)) == sorted(names)
    assert ".jpeg" in IMAGE_EXTENSIONS


def test_videos_and_text_files_are_reported_as_not_images(tmp_path):
    touch(tmp_path, "IMG_0001.JPG", "VID_0002.MP4", "notes.txt", "jpg")
    result = discover_images(tmp_path)
    assert relative_images(result) == ["IMG_0001.JPG"]
    assert skipped(result) == {
        "VID_0002.MP4": "not_an_image",
        "notes.txt": "not_an_image",
        "jpg": "not_an_image",
    }


@pytest.mark.parametrize(
    ("name", "hidden"),
    [
        (".DS_Store", True),
        ("._IMG_0001.JPG", True),
        ("Thumbs.db", True),
        ("thumbs.db", True),
        ("desktop.ini", True),
        ("$RECYCLE.BIN", True),
        ("__MACOSX", True),
        ("IMG_0001.JPG", False),
        ("site.A", False),
    ],
)
def test_hidden_names_are_recognised(name, hidden):
    assert is_hidden(name) is hidden


def test_hidden_files_and_folders_are_ignored(tmp_path):
    touch(
        tmp_path,
        "cam1/IMG_0001.JPG",
        "cam1/._IMG_0001.JPG",
        "cam1/.DS_Store",
        "cam1/Thumbs.db",
        ".thumbnails/IMG_0001.JPG",
        "$RECYCLE.BIN/deleted.jpg",
    )
    result = discover_images(tmp_path)
    assert relative_images(result) == ["cam1/IMG_0001.JPG"]
    assert skipped(result) == {
        ".thumbnails": "hidden",
        "$RECYCLE.BIN": "hidden",
        "cam1/._IMG_0001.JPG": "hidden",
        "cam1/.DS_Store": "hidden",
        "cam1/Thumbs.db": "hidden",
    }


def test_names_with_spaces_and_non_ascii_characters_are_found(tmp_path):
    names = ["Gämsen im Schnee/IMG 0001.jpg", "café/photo é.png", "日本/狐.JPG"]
    touch(tmp_path, *names)
    assert relative_images(discover_images(tmp_path)) == sorted(names)


def test_results_are_sorted_whatever_the_creation_order(tmp_path):
    names = ["b/2.jpg", "a.jpg", "a/z.jpg", "a/b/1.jpg", "B.jpg", "a0.jpg", "a-b.jpg", "c.jpg"]
    touch(tmp_path, *names)
    expected = sorted(names)  # the relative POSIX path string order
    assert relative_images(discover_images(tmp_path)) == expected
    # The streaming walk produces the same order without a global sort.
    streamed = [p.relative_to(tmp_path).as_posix() for p in iter_images(tmp_path)]
    assert streamed == expected


def test_non_recursive_mode_lists_only_the_top_folder(tmp_path):
    touch(tmp_path, "top.jpg", "sub/deep.jpg")
    result = discover_images(tmp_path, recursive=False)
    assert relative_images(result) == ["top.jpg"]
    assert result.skipped == []


def test_images_are_returned_under_the_root_as_given(tmp_path):
    touch(tmp_path, "x/IMG_1.jpg")
    result = discover_images(str(tmp_path))
    assert result.root == tmp_path
    assert result.images == [tmp_path / "x" / "IMG_1.jpg"]


def test_a_missing_root_is_a_data_error_that_names_it(tmp_path):
    with pytest.raises(DataError, match="Received: root="):
        discover_images(tmp_path / "missing")
    touch(tmp_path, "file.jpg")
    with pytest.raises(DataError, match="not a file"):
        iter_images(tmp_path / "file.jpg")  # checked before the first image is requested


# --- symbolic links ------------------------------------------------------------------------


def test_a_symlink_loop_is_skipped_without_hanging(tmp_path):
    touch(tmp_path, "cam/IMG_1.jpg")
    (tmp_path / "cam" / "back_to_root").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self").symlink_to(tmp_path / "self")
    result = discover_images(tmp_path)
    assert relative_images(result) == ["cam/IMG_1.jpg"]
    assert skipped(result) == {"cam/back_to_root": "symlink_loop", "self": "symlink_loop"}


def test_a_second_link_to_the_same_folder_is_not_entered_twice(tmp_path):
    touch(tmp_path, "site/2023/IMG_1.jpg")
    (tmp_path / "site" / "latest").symlink_to(tmp_path / "site" / "2023")
    result = discover_images(tmp_path)
    assert relative_images(result) == ["site/2023/IMG_1.jpg"]
    assert skipped(result) == {"site/latest": "already_visited"}


def test_symlinks_out_of_the_root_are_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(outside, "secret.jpg")
    touch(root, "own.jpg")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "linked.jpg").symlink_to(outside / "secret.jpg")
    (root / "dotdot").symlink_to(Path("..") / "outside")
    result = discover_images(root)
    assert relative_images(result) == ["own.jpg"]
    assert set(skipped(result).values()) == {"symlink_outside_root"}
    assert len(result.skipped) == 3


def test_a_symlinked_image_inside_the_root_is_found(tmp_path):
    touch(tmp_path, "originals/IMG_1.jpg")
    (tmp_path / "best.jpg").symlink_to(tmp_path / "originals" / "IMG_1.jpg")
    assert relative_images(discover_images(tmp_path)) == ["best.jpg", "originals/IMG_1.jpg"]


def test_a_broken_symlink_is_reported(tmp_path):
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "never_existed.jpg")
    assert skipped(discover_images(tmp_path)) == {"gone.jpg": "broken_symlink"}


def test_a_root_that_is_itself_a_symlink_is_searched(tmp_path):
    touch(tmp_path, "real/IMG_1.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    result = discover_images(tmp_path / "alias")
    assert result.images == [tmp_path / "alias" / "IMG_1.jpg"]


# --- unreadable folders --------------------------------------------------------------------


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root can list folders without read permission")
def test_a_folder_without_permission_is_skipped_not_fatal(tmp_path):
    touch(tmp_path, "ok/IMG_1.jpg", "locked/IMG_2.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        result = discover_images(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert relative_images(result) == ["ok/IMG_1.jpg"]
    assert skipped(result) == {"locked": "permission_denied"}


def test_a_folder_that_cannot_be_listed_is_skipped_even_as_root(tmp_path, monkeypatch):
    touch(tmp_path, "ok/IMG_1.jpg", "locked/IMG_2.jpg")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", scandir)
    result = discover_images(tmp_path)
    assert relative_images(result) == ["ok/IMG_1.jpg"]
    assert skipped(result) == {"locked": "permission_denied"}
    assert result.skipped_by_reason() == {"permission_denied": 1}


def test_iter_images_reports_skips_through_a_callback(tmp_path):
    touch(tmp_path, "a.jpg", "b.txt")
    seen: list[tuple[Path, str]] = []
    assert list(iter_images(tmp_path, on_skip=lambda p, r: seen.append((p, r)))) == [
        tmp_path / "a.jpg"
    ]
    assert seen == [(tmp_path / "b.txt", "not_an_image")]
