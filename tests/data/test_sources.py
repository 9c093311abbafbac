"""Data sources: folders, CSV, COCO Camera Traps and the demo set become one table of samples."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ecoclassify.config import Config, DataConfig
from ecoclassify.data.demo import DEMO_CLASSES, DEMO_SITES, default_demo_root, ensure_demo_dataset
from ecoclassify.data.sources import load_source
from ecoclassify.errors import DataError


def data_config(base_dir: Path, **data) -> DataConfig:
    """A validated ``data`` section; relative paths resolve against ``base_dir``."""
    config = Config.from_dict(
        {"data": {"image_size": 32, **data}, "model": {"backbone": "custom_cnn", "weights": "none"}},
        base_dir=base_dir,
    )
    return config.data


def load_error(data: DataConfig) -> str:
    with pytest.raises(DataError) as info:
        load_source(data)
    return str(info.value)


def relative(samples, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in samples["filepath"]]


# --- folders ------------------------------------------------------------------------------------


def test_class_subfolders_become_labels_with_absolute_sorted_paths(tmp_path, write_class_folders):
    write_class_folders(tmp_path / "images", {"fox": 2, "deer": 3})
    result = load_source(data_config(tmp_path, root="images"))
    samples = result.samples
    assert list(samples.columns) == ["filepath", "label"]
    assert relative(samples, tmp_path / "images") == [
        "deer/img_000.jpg", "deer/img_001.jpg", "deer/img_002.jpg", "fox/img_000.jpg", "fox/img_001.jpg",
    ]
    assert samples["label"].tolist() == ["deer"] * 3 + ["fox"] * 2
    assert all(Path(p).is_absolute() for p in samples["filepath"])
    assert result.root == tmp_path / "images"


def test_images_in_nested_folders_take_the_label_of_their_class_folder(tmp_path, make_image):
    make_image(tmp_path / "deer" / "2024" / "cam1" / "a.jpg")
    make_image(tmp_path / "deer" / "b.JPG")
    make_image(tmp_path / "fox" / "night" / "c.png")
    samples = load_source(data_config(tmp_path, root=".")).samples
    assert dict(zip(relative(samples, tmp_path), samples["label"])) == {
        "deer/2024/cam1/a.jpg": "deer", "deer/b.JPG": "deer", "fox/night/c.png": "fox",
    }


def test_hidden_files_folders_and_system_clutter_are_ignored(tmp_path, make_image):
    make_image(tmp_path / "deer" / "a.jpg")
    make_image(tmp_path / "deer" / "._a.jpg")  # macOS resource fork
    make_image(tmp_path / "deer" / ".cache" / "b.jpg")
    (tmp_path / "deer" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "deer" / "Thumbs.db").write_bytes(b"\0")
    make_image(tmp_path / ".trash" / "c.jpg")  # a hidden folder is not a class
    make_image(tmp_path / "fox" / "d.jpg")
    result = load_source(data_config(tmp_path, root="."))
    assert relative(result.samples, tmp_path) == ["deer/a.jpg", "fox/d.jpg"]
    assert set(result.samples["label"]) == {"deer", "fox"}
    skipped = {Path(p).relative_to(tmp_path).as_posix(): reason for p, reason in result.skipped}
    assert skipped == {"deer/._a.jpg": "hidden", "deer/.cache": "hidden", "deer/.DS_Store": "hidden",
                       "deer/Thumbs.db": "hidden"}


def test_non_image_files_in_class_folders_are_skipped_with_a_reason(tmp_path, make_image):
    make_image(tmp_path / "deer" / "a.jpg")
    (tmp_path / "deer" / "notes.txt").write_text("seen at dawn")
    result = load_source(data_config(tmp_path, root="."))
    assert relative(result.samples, tmp_path) == ["deer/a.jpg"]
    assert [(Path(p).name, reason) for p, reason in result.skipped] == [("notes.txt", "not_an_image")]


def test_loose_files_in_the_root_and_empty_class_folders_are_warned_about(tmp_path, make_image):
    make_image(tmp_path / "deer" / "a.jpg")
    make_image(tmp_path / "stray.jpg")
    (tmp_path / "wolf").mkdir()
    result = load_source(data_config(tmp_path, root="."))
    assert relative(result.samples, tmp_path) == ["deer/a.jpg"]
    assert any("1 file(s) directly in" in w and "class subfolders" in w for w in result.warnings)
    assert any(f"class folder {tmp_path / 'wolf'} holds no images" == w for w in result.warnings)


def test_a_predefined_folder_layout_gives_each_image_its_split(tmp_path, write_class_folders):
    write_class_folders(tmp_path / "train", {"deer": 3, "fox": 2})
    write_class_folders(tmp_path / "validation", {"deer": 1, "fox": 1})
    write_class_folders(tmp_path / "test", {"deer": 1})
    samples = load_source(data_config(tmp_path, root=".", split={"method": "predefined"})).samples
    assert list(samples.columns) == ["filepath", "label", "split"]
    by_split = samples.groupby(["split", "label"]).size().to_dict()
    assert by_split == {("train", "deer"): 3, ("train", "fox"): 2, ("val", "deer"): 1, ("val", "fox"): 1,
                        ("test", "deer"): 1}


def test_a_predefined_folder_layout_without_train_lists_the_folders_found(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 1, "fox": 1})
    message = load_error(data_config(tmp_path, root=".", split={"method": "predefined"}))
    assert "needs" in message and "/train/<class>/" in message
    assert message.endswith("Found folders: deer, fox")


def test_a_missing_root_is_a_data_error_naming_data_root(tmp_path):
    message = load_error(data_config(tmp_path, root="no/such/folder"))
    assert message == f"data.root must be an existing folder. Received: '{tmp_path / 'no' / 'such' / 'folder'}'"


def test_a_root_without_class_subfolders_says_what_layout_is_expected(tmp_path, make_image):
    make_image(tmp_path / "a.jpg")
    assert load_error(data_config(tmp_path, root=".")).endswith("expected " + f"{tmp_path}/<class>/<images>")


def test_the_file_listing_order_does_not_change_the_samples(tmp_path, make_image):
    names = ["b.jpg", "a.jpg", "c.jpg"]
    for name in names:
        make_image(tmp_path / "one" / "deer" / name)
    for name in reversed(names):
        make_image(tmp_path / "two" / "deer" / name)
    first = load_source(data_config(tmp_path, root="one")).samples
    second = load_source(data_config(tmp_path, root="two")).samples
    assert relative(first, tmp_path / "one") == relative(second, tmp_path / "two") == [
        "deer/a.jpg", "deer/b.jpg", "deer/c.jpg"]


# --- csv ----------------------------------------------------------------------------------------


def test_csv_paths_are_relative_to_data_root_when_it_is_set(tmp_path, write_csv):
    write_csv(tmp_path / "meta" / "labels.csv", ["filepath", "label"], [["deer/a.jpg", "deer"], ["fox/b.jpg", "fox"]])
    data = data_config(tmp_path, source="csv", root="photos", labels="meta/labels.csv")
    samples = load_source(data).samples
    assert samples["filepath"].tolist() == [str(tmp_path / "photos" / "deer" / "a.jpg"),
                                            str(tmp_path / "photos" / "fox" / "b.jpg")]


def test_csv_paths_are_relative_to_the_csv_folder_without_data_root(tmp_path, write_csv):
    absolute = tmp_path / "elsewhere" / "c.jpg"
    write_csv(tmp_path / "meta" / "labels.csv", ["filepath", "label"], [["deer/a.jpg", "deer"], [absolute, "fox"]])
    data = data_config(tmp_path, source="csv", labels="meta/labels.csv", allow_outside_root=True)
    samples = load_source(data).samples
    assert samples["filepath"].tolist() == [str(tmp_path / "elsewhere" / "c.jpg"),
                                            str(tmp_path / "meta" / "deer" / "a.jpg")]


def test_a_csv_without_the_required_columns_lists_the_columns_found(tmp_path, write_csv):
    write_csv(tmp_path / "labels.csv", ["path", "species", "site"], [["a.jpg", "deer", "s1"]])
    message = load_error(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert "needs the columns filepath and label; missing: filepath, label" in message
    assert message.endswith("Found columns: path, species, site")


def test_a_missing_labels_file_is_a_data_error_naming_data_labels(tmp_path):
    message = load_error(data_config(tmp_path, source="csv", labels="nope.csv"))
    assert message == f"data.labels must be an existing file. Received: '{tmp_path / 'nope.csv'}'"


def test_csv_rows_with_an_empty_label_are_dropped_with_a_warning_naming_their_lines(tmp_path, write_csv):
    rows = [["a.jpg", "deer"], ["b.jpg", ""], ["c.jpg", "  "], ["d.jpg", "fox"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], rows)
    result = load_source(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert relative(result.samples, tmp_path) == ["a.jpg", "d.jpg"]
    assert any("2 row(s)" in w and "(lines 3, 4)" in w for w in result.warnings)


def test_the_same_image_with_two_labels_is_refused_listing_the_image_and_its_labels(tmp_path, write_csv):
    rows = [["a.jpg", "deer"], ["b.jpg", "fox"], ["./a.jpg", "fox"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], rows)
    message = load_error(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert message.startswith("1 image(s) in")
    assert f"{tmp_path / 'a.jpg'}: deer, fox" in message


def test_identical_repeated_csv_rows_are_merged_with_a_warning(tmp_path, write_csv):
    rows = [["a.jpg", "deer"], ["a.jpg", "deer"], ["b.jpg", "fox"], ["a.jpg", "deer"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], rows)
    result = load_source(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert relative(result.samples, tmp_path) == ["a.jpg", "b.jpg"]
    assert any("2 repeated row(s) for the same image and label" in w for w in result.warnings)


def test_extra_csv_columns_are_kept_and_header_whitespace_is_ignored(tmp_path):
    (tmp_path / "labels.csv").write_text(
        " filepath , label , site , camera\n a.jpg , deer , north , cam7\nb.jpg,fox,south,cam2\n"
    )
    samples = load_source(data_config(tmp_path, source="csv", labels="labels.csv")).samples
    assert list(samples.columns) == ["filepath", "label", "site", "camera"]
    assert samples["label"].tolist() == ["deer", "fox"]
    assert samples["camera"].str.strip().tolist() == ["cam7", "cam2"]
    assert samples["filepath"].tolist()[0] == str(tmp_path / "a.jpg")


def test_the_split_column_is_normalised(tmp_path, write_csv):
    rows = [["a.jpg", "deer", "Train"], ["b.jpg", "deer", " validation"], ["c.jpg", "deer", "TEST"],
            ["d.jpg", "fox", "training"], ["e.jpg", "fox", "valid"], ["f.jpg", "fox", "testing"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label", "split"], rows)
    config = data_config(tmp_path, source="csv", labels="labels.csv", split={"method": "predefined"})
    samples = load_source(config).samples
    assert samples["split"].tolist() == ["train", "val", "test", "train", "val", "test"]


def test_an_unused_split_column_is_ignored_when_the_split_is_computed(tmp_path, write_csv):
    rows = [["a.jpg", "deer", ""], ["b.jpg", "deer", "holdout"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label", "split"], rows)
    samples = load_source(data_config(tmp_path, source="csv", labels="labels.csv")).samples
    assert "split" not in samples.columns and len(samples) == 2


def test_bad_split_values_are_refused_listing_them(tmp_path, write_csv):
    rows = [["a.jpg", "deer", "train"], ["b.jpg", "deer", "holdout"], ["c.jpg", "fox", "dev"]]
    write_csv(tmp_path / "labels.csv", ["filepath", "label", "split"], rows)
    message = load_error(data_config(tmp_path, source="csv", labels="labels.csv", split={"method": "predefined"}))
    assert "must hold train, val or test" in message
    assert message.endswith("Received: ['dev', 'holdout']")


def test_an_unreadable_csv_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "labels.csv").write_text("")
    message = load_error(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert message.startswith(f"cannot read the labels CSV {tmp_path / 'labels.csv'}")


# --- coco ---------------------------------------------------------------------------------------


def write_coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    categories = categories if categories is not None else [{"id": 1, "name": "deer"}, {"id": 2, "name": "fox"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco_image(image_id: str, file_name: str, **extra) -> dict:
    return {"id": image_id, "file_name": file_name, "width": 32, "height": 32, **extra}


def test_coco_location_and_seq_id_become_site_and_sequence(tmp_path):
    images = [
        coco_image("i1", "cam/a.jpg", location="north", seq_id="s1", datetime="2024-06-01 06:00:00"),
        coco_image("i2", "cam/b.jpg", location=7, seq_id="s2", datetime="2024-06-01 07:00:00"),
    ]
    write_coco(tmp_path / "cct.json", images, [{"id": 1, "image_id": "i1", "category_id": 1},
                                               {"id": 2, "image_id": "i2", "category_id": 2}])
    samples = load_source(data_config(tmp_path, source="coco", labels="cct.json")).samples
    assert samples.to_dict("records") == [
        {"filepath": str(tmp_path / "cam" / "a.jpg"), "label": "deer", "site": "north",
         "datetime": "2024-06-01 06:00:00", "sequence": "s1"},
        {"filepath": str(tmp_path / "cam" / "b.jpg"), "label": "fox", "site": "7",
         "datetime": "2024-06-01 07:00:00", "sequence": "s2"},
    ]


def test_coco_paths_are_relative_to_data_root_when_it_is_set(tmp_path):
    write_coco(tmp_path / "cct.json", [coco_image(1, "a.jpg")], [{"id": 1, "image_id": 1, "category_id": 1}])
    samples = load_source(data_config(tmp_path, source="coco", labels="cct.json", root="photos")).samples
    assert samples["filepath"].tolist() == [str(tmp_path / "photos" / "a.jpg")]
    assert list(samples.columns) == ["filepath", "label"]  # no location/seq_id/datetime: no empty columns


def test_a_coco_image_with_two_species_is_refused_listing_it(tmp_path):
    images = [coco_image(1, "a.jpg"), coco_image(2, "b.jpg")]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 2},
                   {"id": 3, "image_id": 2, "category_id": 2}]
    write_coco(tmp_path / "cct.json", images, annotations)
    message = load_error(data_config(tmp_path, source="coco", labels="cct.json"))
    assert message.startswith("1 image(s) in") and "more than one label" in message
    assert f"{tmp_path / 'a.jpg'}: deer, fox" in message
    assert "b.jpg" not in message


def test_two_boxes_of_the_same_species_are_one_labelled_image(tmp_path):
    annotations = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
                   {"id": 2, "image_id": 1, "category_id": 2, "bbox": [9, 9, 5, 5]}]
    write_coco(tmp_path / "cct.json", [coco_image(1, "a.jpg")], annotations)
    result = load_source(data_config(tmp_path, source="coco", labels="cct.json"))
    assert result.samples[["filepath", "label"]].values.tolist() == [[str(tmp_path / "a.jpg"), "fox"]]
    assert not any("repeated" in w for w in result.warnings)


def test_unannotated_coco_images_are_ignored_with_a_warning(tmp_path):
    images = [coco_image(1, "a.jpg"), coco_image(2, "b.jpg"), coco_image(3, "c.jpg")]
    write_coco(tmp_path / "cct.json", images, [{"id": 1, "image_id": 1, "category_id": 1}])
    result = load_source(data_config(tmp_path, source="coco", labels="cct.json"))
    assert relative(result.samples, tmp_path) == ["a.jpg"]
    assert f"2 image(s) in {tmp_path / 'cct.json'} have no annotation and are ignored" in result.warnings


def test_malformed_coco_json_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "cct.json").write_text('{"images": [ {"id": 1,')
    message = load_error(data_config(tmp_path, source="coco", labels="cct.json"))
    assert message.startswith(f"cannot read the COCO Camera Traps file {tmp_path / 'cct.json'}")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"images": [], "categories": []}, "it needs a list 'annotations'"),
        ([1, 2, 3], "it needs a list 'images'"),
        ({"images": [{"id": 1}], "annotations": [{"image_id": 1}], "categories": []}, "lacks the field"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 9}],
          "categories": [{"id": 1, "name": "deer"}]}, "category ids not in 'categories': [9]"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 5, "category_id": 1}],
          "categories": [{"id": 1, "name": "deer"}]}, "image ids not in 'images': [5]"),
    ],
    ids=["no_annotations", "not_an_object", "missing_field", "unknown_category", "unknown_image"],
)
def test_json_that_is_not_coco_camera_traps_is_a_data_error_saying_what_is_wrong(tmp_path, payload, expected):
    (tmp_path / "cct.json").write_text(json.dumps(payload))
    assert expected in load_error(data_config(tmp_path, source="coco", labels="cct.json"))


# --- label filters ------------------------------------------------------------------------------


def test_include_labels_keeps_only_those_labels(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 2, "fox": 1, "empty": 3})
    result = load_source(data_config(tmp_path, root=".", include_labels=["deer", "fox"]))
    assert sorted(set(result.samples["label"])) == ["deer", "fox"] and len(result.samples) == 3
    assert "3 image(s) left out by the label filter" in result.warnings


def test_exclude_labels_drops_those_labels(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 2, "fox": 1, "empty": 3})
    result = load_source(data_config(tmp_path, root=".", exclude_labels=["empty"]))
    assert result.samples["label"].tolist() == ["deer", "deer", "fox"]


def test_include_labels_naming_an_absent_label_lists_the_labels_found(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 1, "fox": 1})
    message = load_error(data_config(tmp_path, root=".", include_labels=["deer", "wolf"]))
    assert message == "data.include_labels names labels that are not in the data: wolf. Labels found: deer, fox"


def test_exclude_labels_naming_an_absent_label_only_warns(tmp_path, write_class_folders):
    write_class_folders(tmp_path, {"deer": 1, "fox": 1})
    result = load_source(data_config(tmp_path, root=".", exclude_labels=["wolf"]))
    assert len(result.samples) == 2
    assert "data.exclude_labels names labels not in the data: wolf" in result.warnings


# --- demo ---------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo") / "set", images_per_class=6, image_size=32)


def test_the_demo_set_is_generated_byte_for_byte_the_same_every_time(demo_root, tmp_path):
    again = ensure_demo_dataset(tmp_path / "again", images_per_class=6, image_size=32)
    first, second = snapshot(demo_root), snapshot(again)
    assert len(first) == len(DEMO_CLASSES) * 6 + 2  # images, labels.csv, the completion marker
    assert first == second


def test_the_demo_labels_csv_has_site_datetime_and_sequence(demo_root):
    with open(demo_root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["filepath", "label", "site", "datetime", "sequence"]
    assert sorted({r["label"] for r in rows}) == sorted(DEMO_CLASSES)
    assert all(sum(r["label"] == label for r in rows) == 6 for label in DEMO_CLASSES)
    assert {r["site"] for r in rows} <= set(DEMO_SITES)
    assert all((demo_root / r["filepath"]).is_file() for r in rows)
    # Bursts of three frames share a sequence.
    per_sequence = {}
    for r in rows:
        per_sequence[r["sequence"]] = per_sequence.get(r["sequence"], 0) + 1
    assert set(per_sequence.values()) == {3}


def test_demo_images_carry_an_exif_date_time_original_matching_the_csv(demo_root):
    with open(demo_root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows[:8]:
        with Image.open(demo_root / row["filepath"]) as image:
            assert image.size == (32, 32)
            taken = image.getexif().get_ifd(0x8769).get(0x9003)
        assert taken == row["datetime"].replace("-", ":")


def test_a_complete_demo_set_is_reused_not_regenerated(demo_root):
    marker = demo_root / "deer" / "user_note.txt"
    marker.write_text("keep me")
    try:
        assert ensure_demo_dataset(demo_root, images_per_class=6, image_size=32) == demo_root
        assert marker.read_text() == "keep me"
    finally:
        marker.unlink()


def test_an_incomplete_demo_set_is_replaced(tmp_path):
    root = tmp_path / "set"
    (root / "deer").mkdir(parents=True)
    (root / "deer" / "half_written.jpg").write_bytes(b"\xff\xd8")
    ensure_demo_dataset(root, images_per_class=6, image_size=32)
    assert not (root / "deer" / "half_written.jpg").exists()
    assert (root / "labels.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "set"]  # no temporary folder left behind


def test_the_demo_source_reads_the_generated_set_and_says_it_is_synthetic(demo_root, tmp_path):
    result = load_source(data_config(tmp_path, source="demo", root=str(demo_root), demo={"images_per_class": 6}))
    assert len(result.samples) == len(DEMO_CLASSES) * 6
    assert {"site", "datetime", "sequence"} <= set(result.samples.columns)
    assert result.warnings[0].startswith(f"using the synthetic demo data set in {demo_root}")


def test_the_demo_set_is_cached_under_ecoclassify_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCLASSIFY_CACHE", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "demo-v1-6x16px"
    assert default_demo_root(6, 16) == expected
    result = load_source(data_config(tmp_path, source="demo", demo={"images_per_class": 6, "image_size": 16}))
    assert result.root == expected
    assert (expected / "labels.csv").is_file()


# --- paths that must not be opened ----------------------------------------------------------------


def excluded_reasons(result) -> dict[str, str]:
    return dict(zip(result.excluded["filepath"], result.excluded["error"]))


def test_a_class_folder_linked_from_outside_the_root_is_not_a_class(tmp_path, write_class_folders):
    write_class_folders(tmp_path / "images", {"deer": 2, "fox": 2})
    write_class_folders(tmp_path / "elsewhere", {"owl": 2})
    (tmp_path / "images" / "owl").symlink_to(tmp_path / "elsewhere" / "owl", target_is_directory=True)
    (tmp_path / "images" / "renard").symlink_to(tmp_path / "images" / "fox", target_is_directory=True)
    result = load_source(data_config(tmp_path, root="images"))
    assert sorted(set(result.samples["label"])) == ["deer", "fox", "renard"]  # a link inside the root is fine
    assert (str(tmp_path / "images" / "owl"), "symlink_outside_root") in result.skipped


@pytest.fixture
def csv_leading_out(tmp_path, make_image, write_csv) -> Path:
    """``data/labels.csv`` listing one image inside ``data/`` and four ways out of it."""
    make_image(tmp_path / "data" / "inside.jpg")
    make_image(tmp_path / "outside.jpg")
    (tmp_path / "data" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    rows = [("inside.jpg", "deer"), ("../outside.jpg", "deer"), (str(tmp_path / "outside.jpg"), "fox"),
            ("link.jpg", "fox"), ("/dev/zero", "fox")]
    return write_csv(tmp_path / "data" / "labels.csv", ["filepath", "label"], rows)


def test_csv_paths_leading_outside_the_root_are_left_out_as_outside_root(tmp_path, csv_leading_out):
    result = load_source(data_config(tmp_path, source="csv", labels="data/labels.csv"))
    data = tmp_path / "data"
    assert result.samples["filepath"].tolist() == [str(data / "inside.jpg")]
    assert excluded_reasons(result) == {
        str(data / ".." / "outside.jpg"): "outside_root", str(tmp_path / "outside.jpg"): "outside_root",
        str(data / "link.jpg"): "outside_root", "/dev/zero": "outside_root",
    }
    assert "data.allow_outside_root: true" in result.excluded["detail"].iloc[0]
    assert any("4 image(s) left out unopened (4 outside_root)" in w for w in result.warnings)


def test_csv_paths_outside_data_root_are_refused_even_inside_the_csv_folder(tmp_path, make_image, write_csv):
    make_image(tmp_path / "photos" / "a.jpg")
    make_image(tmp_path / "b.jpg")
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], [("a.jpg", "deer"), ("../b.jpg", "fox")])
    result = load_source(data_config(tmp_path, source="csv", labels="labels.csv", root="photos"))
    assert relative(result.samples, tmp_path) == ["photos/a.jpg"]
    assert excluded_reasons(result) == {str(tmp_path / "photos" / ".." / "b.jpg"): "outside_root"}


def test_allow_outside_root_opts_in_to_paths_outside_the_root(tmp_path, csv_leading_out):
    result = load_source(data_config(tmp_path, source="csv", labels="data/labels.csv", allow_outside_root=True))
    assert len(result.samples) == 5 and result.excluded.empty


def test_coco_file_names_leading_outside_the_root_are_left_out(tmp_path, make_image):
    make_image(tmp_path / "cct" / "a.jpg")
    images = [coco_image(1, "a.jpg"), coco_image(2, "../../etc/passwd"), coco_image(3, "/etc/passwd")]
    annotations = [{"id": i, "image_id": i, "category_id": 1} for i in (1, 2, 3)]
    write_coco(tmp_path / "cct" / "cct.json", images, annotations)
    result = load_source(data_config(tmp_path, source="coco", labels="cct/cct.json"))
    assert relative(result.samples, tmp_path) == ["cct/a.jpg"]
    assert sorted(result.excluded["error"]) == ["outside_root", "outside_root"]


def test_a_nul_byte_in_a_csv_path_is_a_listed_bad_record_with_a_printable_path(tmp_path, make_image):
    make_image(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("filepath,label\na.jpg,deer\nb\0c.jpg,fox\n", encoding="utf-8")
    result = load_source(data_config(tmp_path, source="csv", labels="labels.csv"))
    assert relative(result.samples, tmp_path) == ["a.jpg"]
    assert excluded_reasons(result) == {str(tmp_path / "b\\x00c.jpg"): "invalid_path"}


def test_a_file_name_that_is_not_utf8_is_left_out_with_a_printable_path(tmp_path, write_class_folders):
    write_class_folders(tmp_path / "images", {"deer": 2, "fox": 2})
    odd = os.fsdecode(bytes(tmp_path / "images" / "deer") + b"/caf\xe9.jpg")  # not UTF-8: Latin-1 "café"
    shutil.copy(tmp_path / "images" / "deer" / "img_000.jpg", odd)
    result = load_source(data_config(tmp_path, root="images"))
    assert len(result.samples) == 4
    assert excluded_reasons(result) == {str(tmp_path / "images" / "deer") + "/caf\\xe9.jpg": "undecodable_name"}
    assert result.excluded.iloc[0]["label"] == "deer"


def test_coco_json_nested_too_deeply_is_a_data_error_not_a_recursion_error(tmp_path):
    (tmp_path / "cct.json").write_text("[" * 100_000 + "]" * 100_000)
    message = load_error(data_config(tmp_path, source="coco", labels="cct.json"))
    assert message.startswith(f"cannot read the COCO Camera Traps file {tmp_path / 'cct.json'}")
    assert "nested too deeply" in message


def test_a_coco_id_that_is_an_object_is_a_data_error_naming_the_entry(tmp_path):
    write_coco(tmp_path / "cct.json", [coco_image(1, "a.jpg")], [{"id": 1, "image_id": 1, "category_id": {"x": 1}}])
    message = load_error(data_config(tmp_path, source="coco", labels="cct.json"))
    assert "'annotations' entry 0 has a dict as category_id" in message
    assert 'Received: category_id={"x": 1}' in message


def test_a_csv_link_out_to_a_name_that_is_not_utf8_is_listed_with_a_printable_detail(tmp_path, make_image):
    make_image(tmp_path / "data" / "a.jpg")
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg")
    shutil.copy(tmp_path / "data" / "a.jpg", odd)
    (tmp_path / "data" / "link.jpg").symlink_to(odd)
    (tmp_path / "data" / "labels.csv").write_text("filepath,label\na.jpg,deer\nlink.jpg,fox\n", encoding="utf-8")
    result = load_source(data_config(tmp_path, source="csv", labels="data/labels.csv"))
    (detail,) = result.excluded["detail"]
    assert detail.startswith(f"it leads to {tmp_path}/caf\\xe9.jpg, outside {tmp_path / 'data'}")
    detail.encode("utf-8")  # writable to excluded.csv


@pytest.mark.parametrize("captured", ["2019-05-06 13:45:00", "2019:05:06 13:45:00", "2019-05-06T13:45:00",
                                      "2019-05-06T13:45:00.000", "2019-05-06T13:45:00+02:00"])
def test_coco_date_captured_in_the_forms_of_lila_sets_becomes_the_datetime(tmp_path, captured):
    images = [coco_image(1, "a.jpg", date_captured=captured), coco_image(2, "b.jpg", date_captured="-1")]
    write_coco(tmp_path / "cct.json", images, [{"id": 1, "image_id": 1, "category_id": 1},
                                               {"id": 2, "image_id": 2, "category_id": 1}])
    result = load_source(data_config(tmp_path, source="coco", labels="cct.json"))
    assert result.samples["datetime"].tolist() == ["2019-05-06 13:45:00", ""]
    assert not any("date(s) in" in warning for warning in result.warnings)


def test_a_coco_date_that_is_not_a_time_is_ignored_with_a_warning(tmp_path):
    images = [coco_image(1, "a.jpg", date_captured="06/05/2019 1:45 PM"), coco_image(2, "b.jpg")]
    write_coco(tmp_path / "cct.json", images, [{"id": 1, "image_id": 1, "category_id": 1},
                                               {"id": 2, "image_id": 2, "category_id": 1}])
    result = load_source(data_config(tmp_path, source="coco", labels="cct.json"))
    assert "datetime" not in result.samples.columns
    assert any(w.startswith("1 date(s) in") and "a.jpg: '06/05/2019 1:45 PM'" in w for w in result.warnings)


def test_coco_sequences_keep_their_id_frame_number_and_length(tmp_path):
    images = [coco_image(f"i{n}", f"cam/{n}.jpg", seq_id="seq-7", seq_num_frames=3, frame_num=n,
                         date_captured=f"2019-05-06 13:45:0{n}") for n in range(3)]
    write_coco(tmp_path / "cct.json", images, [{"id": n, "image_id": f"i{n}", "category_id": 2} for n in range(3)])
    samples = load_source(data_config(tmp_path, source="coco", labels="cct.json")).samples
    assert samples[["sequence", "frame_num", "seq_num_frames"]].values.tolist() == [["seq-7", str(n), "3"]
                                                                                    for n in range(3)]
    assert samples["datetime"].tolist() == [f"2019-05-06 13:45:0{n}" for n in range(3)]


def test_backslash_paths_from_windows_exports_find_the_images(tmp_path, make_image):
    make_image(tmp_path / "cam1" / "IMG_0001.JPG")
    write_coco(tmp_path / "cct.json", [coco_image(1, "cam1\\IMG_0001.JPG")],
               [{"id": 1, "image_id": 1, "category_id": 1}])
    samples = load_source(data_config(tmp_path, source="coco", labels="cct.json")).samples
    assert samples["filepath"].tolist() == [str(tmp_path / "cam1" / "IMG_0001.JPG")]
    assert Path(samples["filepath"][0]).is_file()


def test_coco_categories_without_images_are_a_warning_not_an_error(tmp_path):
    categories = [{"id": 1, "name": "deer"}, {"id": 2, "name": "fox"}, {"id": 3, "name": "wolverine"}]
    write_coco(tmp_path / "cct.json", [coco_image(1, "a.jpg")], [{"id": 1, "image_id": 1, "category_id": 1}],
               categories)
    result = load_source(data_config(tmp_path, source="coco", labels="cct.json"))
    assert relative(result.samples, tmp_path) == ["a.jpg"]
    assert f"2 categor(y/ies) in {tmp_path / 'cct.json'} have no images: fox, wolverine" in result.warnings


def test_the_multi_label_refusal_says_how_to_leave_those_images_out(tmp_path):
    write_coco(tmp_path / "cct.json", [coco_image(1, "a.jpg")], [{"id": 1, "image_id": 1, "category_id": 1},
                                                                 {"id": 2, "image_id": 1, "category_id": 2}])
    message = load_error(data_config(tmp_path, source="coco", labels="cct.json", multi_label="error"))
    assert message.endswith("Or set data.multi_label: drop to leave them out (listed in excluded.csv).")


def test_multi_label_must_be_error_or_drop(tmp_path):
    from ecoclassify.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.multi_label.*'error', 'drop'|data\.multi_label must be one of"):
        data_config(tmp_path, source="coco", labels="cct.json", multi_label="keep")


@pytest.mark.slow
def test_multi_label_drop_trains_without_those_images_and_lists_them_in_excluded_csv(tmp_path, make_image):
    import pandas as pd

    from ecoclassify.training.session import train

    images, annotations = [], []
    for n in range(16):
        label = 1 + n % 2
        make_image(tmp_path / "photos" / f"IMG_{n:04d}.JPG")
        images.append(coco_image(n, f"photos\\IMG_{n:04d}.JPG"))
        annotations.append({"id": len(annotations), "image_id": n, "category_id": label})
    annotations.append({"id": len(annotations), "image_id": 3, "category_id": 1})  # deer and fox in one frame
    write_coco(tmp_path / "cct.json", images, annotations)
    config = Config.from_dict({
        "experiment": {"name": "coco", "output_dir": str(tmp_path / "runs"), "seed": 1},
        "data": {"source": "coco", "labels": str(tmp_path / "cct.json"), "image_size": 32, "multi_label": "drop",
                 "min_images_per_class": 3, "split": {"val": 0.25, "test": 0.25}},
        "model": {"backbone": "custom_cnn", "weights": "none", "custom_cnn": {"filters": [4], "convs_per_block": 1},
                  "head": {"dense": [], "dropout": 0.0}},
        "augmentation": {"enabled": False},
        "training": {"batch_size": 8, "mode": "scratch", "epochs": 1, "early_stopping": {"enabled": False}},
    })
    run = train(config, verbose=0)
    excluded = pd.read_csv(run.run_dir / "excluded.csv", dtype=str, keep_default_na=False)
    assert excluded[["filepath", "error", "detail"]].values.tolist() == [
        [str(tmp_path / "photos" / "IMG_0003.JPG"), "multiple_labels", "labels: deer, fox"]]
    splits = pd.read_csv(run.run_dir / "splits.csv")
    assert len(splits) == 15 and not splits["filepath"].str.endswith("IMG_0003.JPG").any()
