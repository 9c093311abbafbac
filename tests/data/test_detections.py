"""Reading detector boxes: MegaDetector batch output, COCO Camera Traps bboxes, Camtrap DP observations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecoclassify.data.detections import DUPLICATE, kept_boxes, normalise_file, read_detections
from ecoclassify.errors import DataError


def write_md(path: Path, images: list, **extra) -> Path:
    path.write_text(json.dumps({"info": {"format_version": "1.4", "detector": "md_v5a.0.0.pt"},
                                "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
                                "images": images, **extra}))
    return path


def box(bbox, conf=0.9, category="1"):
    return {"category": category, "conf": conf, "bbox": bbox}


def test_boxes_reaching_outside_the_frame_are_clipped_and_boxes_of_no_size_are_skipped_and_counted(tmp_path):
    md = write_md(tmp_path / "md.json", [{"file": "a.jpg", "detections": [
        box([-0.1, 0.5, 0.3, 0.7]),        # left and bottom outside: clipped
        box([0.2, 0.2, 0.0, 0.3]),         # no width: skipped
        box([0.2, 0.2, 0.3, -0.1]),        # negative height: skipped
        box([1.2, 0.2, 0.3, 0.3]),         # wholly outside: skipped
        box([0.1, 0.1, 0.2, 0.2]),         # fine
    ]}])
    detections = read_detections(md)
    boxes = detections.images["a.jpg"].boxes
    assert [(round(b.x, 6), round(b.y, 6), round(b.w, 6), round(b.h, 6)) for b in boxes] == [
        (0.0, 0.5, 0.2, 0.5), (0.1, 0.1, 0.2, 0.2)]
    assert [b.index for b in boxes] == [0, 4]
    assert detections.problems == {"boxes clipped to the frame": 1, "boxes skipped: zero or negative size": 2,
                                   "boxes skipped: outside the frame": 1}
    assert "1 boxes clipped to the frame" in detections.summary()


def test_nan_confidences_are_skipped_and_counted(tmp_path):
    md = tmp_path / "md.json"
    md.write_text('{"images": [{"file": "a.jpg", "detections": [{"category": "1", "conf": NaN, "bbox": [0.1, 0.1, '
                  '0.2, 0.2]}, {"category": "1", "conf": 0.5, "bbox": [0.1, 0.1, 0.2, 0.2]}]}]}')
    detections = read_detections(md)
    assert [b.conf for b in detections.images["a.jpg"].boxes] == [0.5]
    assert detections.problems["boxes skipped: NaN confidence"] == 1


def test_backslashes_become_slashes_and_unsafe_paths_are_refused_not_used(tmp_path):
    md = write_md(tmp_path / "md.json", [
        {"file": "cam1\\IMG_0001.JPG", "detections": []},
        {"file": "/etc/passwd", "detections": []},
        {"file": "C:\\cards\\IMG_0002.JPG", "detections": []},
        {"file": "cam1/../../outside.jpg", "detections": []},
        {"file": "./cam2/IMG_0003.JPG", "detections": []},
    ])
    detections = read_detections(md)
    assert sorted(detections.images) == ["cam1/IMG_0001.JPG", "cam2/IMG_0003.JPG"]
    assert [file for file, _ in detections.refused] == ["/etc/passwd", "C:\\cards\\IMG_0002.JPG",
                                                         "cam1/../../outside.jpg"]
    assert "absolute path" in detections.refused[0][1] and "'..'" in detections.refused[2][1]
    assert normalise_file("a\0b.jpg") == (None, "file contains a NUL byte")


def test_json_that_is_not_megadetector_output_is_an_error_naming_the_missing_key(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"predictions": []}))
    with pytest.raises(DataError, match=r"not MegaDetector batch output: it needs a list 'images'.*Received: keys "
                                        r"\['predictions'\]"):
        read_detections(other)
    no_bbox = write_md(tmp_path / "md.json", [{"file": "a.jpg", "detections": [{"category": "1", "conf": 0.5}]}])
    with pytest.raises(DataError, match=r"detections\[0\] \(a.jpg\) lacks the key\(s\) bbox"):
        read_detections(no_bbox)
    no_file = write_md(tmp_path / "md2.json", [{"detections": []}])
    with pytest.raises(DataError, match=r"images\[0\] lacks the key 'file'"):
        read_detections(no_file)


def test_json_nested_too_deeply_is_a_data_error_not_a_crash(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        read_detections(deep)


def test_a_file_listed_twice_is_refused_whole_and_reported(tmp_path):
    md = write_md(tmp_path / "md.json", [{"file": "a.jpg", "detections": [box([0.1, 0.1, 0.2, 0.2])]},
                                         {"file": "a.jpg", "detections": []},
                                         {"file": "b.jpg", "detections": []}])
    detections = read_detections(md)
    assert list(detections.images) == ["b.jpg"]
    assert detections.duplicates() == {"a.jpg"} and ("a.jpg", DUPLICATE) in detections.refused


def test_detector_failures_are_kept_and_boxes_are_filtered_by_confidence_and_category(tmp_path):
    md = write_md(tmp_path / "md.json", [
        {"file": "a.jpg", "failure": "Failure image access", "detections": None},
        {"file": "b.jpg", "detections": [box([0.1, 0.1, 0.2, 0.2], 0.3), box([0.5, 0.5, 0.2, 0.2], 0.8),
                                         box([0.3, 0.3, 0.1, 0.1], 0.1), box([0.0, 0.0, 0.4, 0.4], 0.95, "2")]},
    ])
    detections = read_detections(md)
    assert detections.images["a.jpg"].failure == "Failure image access"
    b = detections.images["b.jpg"]
    assert [x.conf for x in kept_boxes(b, 0.2, ["animal"])] == [0.8, 0.3]
    assert [x.conf for x in kept_boxes(b, 0.2, ["animal"], "best")] == [0.8]
    assert [x.category for x in kept_boxes(b, 0.2, None)] == ["person", "animal", "animal"]


def test_coco_boxes_in_pixels_are_normalised_by_the_image_size_or_the_files_header(tmp_path):
    Image.fromarray(np.zeros((50, 200, 3), np.uint8)).save(tmp_path / "nosize.jpg")
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "cam\\sized.jpg", "width": 400, "height": 300},
                   {"id": 2, "file_name": "nosize.jpg"}],
        "categories": [{"id": 1, "name": "Red Fox"}, {"id": 2, "name": "human"}],
        "annotations": [{"id": "a", "image_id": 1, "category_id": 1, "bbox": [100, 75, 200, 150]},
                        {"id": "b", "image_id": 1, "category_id": 2, "bbox": [0, 0, 40, 30]},
                        {"id": "c", "image_id": 2, "category_id": 1, "bbox": [50, 10, 100, 20]}],
    }))
    detections = read_detections(coco, root=tmp_path)
    assert detections.format == "coco"
    sized = detections.images["cam/sized.jpg"].boxes
    assert [(b.x, b.y, b.w, b.h, b.label, b.category, b.conf) for b in sized] == [
        (0.25, 0.25, 0.5, 0.5, "Red Fox", "animal", 1.0), (0.0, 0.0, 0.1, 0.1, "human", "person", 1.0)]
    (read,) = detections.images["nosize.jpg"].boxes
    assert (read.x, read.y, read.w, read.h) == pytest.approx((0.25, 0.2, 0.5, 0.4))


def test_camtrap_dp_media_level_observations_give_boxes_joined_to_media_files():
    package = Path(__file__).resolve().parents[2] / ".." / "shared" / "standards" / "camtrap-dp-1.0.2" / "example"
    if not package.is_dir():
        pytest.skip("needs ../shared (the Camtrap DP example package)")
    detections = read_detections(package / "datapackage.json")
    assert detections.format == "camtrapdp" and detections.images
    boxes = [b for image in detections.images.values() for b in image.boxes]
    assert boxes and all(0 <= b.x <= 1 and 0 < b.w <= 1 for b in boxes)
    assert all(b.category in {"animal", "human", "vehicle", "unknown", "unclassified"} for b in boxes)


def test_camtrap_dp_boxes_from_a_small_package(tmp_path):
    (tmp_path / "media.csv").write_text("mediaID,deploymentID,timestamp,filePath,filePublic,fileName\n"
                                        "m1,d1,2024-01-01T00:00:00Z,cam1/IMG_1.JPG,true,IMG_1.JPG\n"
                                        "m2,d1,2024-01-01T00:00:00Z,https://x/y,true,IMG_2.JPG\n")
    (tmp_path / "observations.csv").write_text(
        "observationID,deploymentID,mediaID,observationLevel,observationType,scientificName,bboxX,bboxY,bboxWidth,"
        "bboxHeight,classificationProbability\n"
        "o1,d1,m1,media,animal,Vulpes vulpes,0.1,0.2,0.3,0.4,0.7\n"
        "o2,d1,m2,media,blank,,,,,,\n"
        "o3,d1,,event,animal,Vulpes vulpes,,,,,\n")
    detections = read_detections(tmp_path)
    (fox,) = detections.images["cam1/IMG_1.JPG"].boxes
    assert (fox.x, fox.y, fox.w, fox.h, fox.conf) == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.7))
    assert (fox.label, fox.category) == ("Vulpes vulpes", "animal")
    assert detections.images["IMG_2.JPG"].boxes == []


def test_camtrap_dp_boxes_a_person_classified_replace_the_machines_and_carry_its_label(tmp_path):
    (tmp_path / "media.csv").write_text("mediaID,deploymentID,timestamp,filePath,filePublic,fileName\n"
                                        "m1,d1,2024-01-01T00:00:00Z,cam1/IMG_1.JPG,true,IMG_1.JPG\n"
                                        "m2,d1,2024-01-01T00:00:00Z,cam1/IMG_2.JPG,true,IMG_2.JPG\n")
    (tmp_path / "observations.csv").write_text(
        "observationID,deploymentID,mediaID,observationLevel,observationType,scientificName,bboxX,bboxY,bboxWidth,"
        "bboxHeight,classificationMethod,classificationProbability\n"
        "o1,d1,m1,media,animal,Meles meles,0.1,0.2,0.3,0.4,machine,0.6\n"
        "o2,d1,m1,media,animal,Vulpes vulpes,0.12,0.2,0.3,0.4,human,0.15\n"
        "o3,d1,m1,media,human,,0.5,0.5,0.2,0.2,human,\n"
        "o4,d1,m2,media,animal,Meles meles,0.1,0.1,0.5,0.5,machine,0.4\n")
    detections = read_detections(tmp_path)
    fox, person = detections.images["cam1/IMG_1.JPG"].boxes  # the machine's badger of IMG_1 is replaced
    assert (fox.label, fox.conf, fox.x) == ("Vulpes vulpes", 1.0, pytest.approx(0.12))
    assert (person.label, person.category) == ("human", "human")
    (badger,) = detections.images["cam1/IMG_2.JPG"].boxes  # nobody checked IMG_2: the machine's box stays
    assert (badger.label, badger.conf) == ("Meles meles", pytest.approx(0.4))
