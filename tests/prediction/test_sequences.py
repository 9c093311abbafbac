"""Camera-trap sequences: bursts in one folder, chained by the time gap, labelled by mean probability."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ecoclassify.errors import ConfigError
from ecoclassify.prediction.labelling import predict
from ecoclassify.prediction.sequences import assign_sequences
from tests.prediction._predict_support import coloured, exif_time, tiny_model_dir

CLASSES = ["deer", "fox", "owl"]
T0 = dt.datetime(2024, 6, 1, 5, 30, 0)


def table(rows: list[tuple[str, str, int | None, tuple[float, float, float] | None]]) -> pd.DataFrame:
    """Predictions from ``(filepath, status, seconds after T0 or None, probabilities)``."""
    records = []
    for filepath, status, seconds, probs in rows:
        when = (T0 + dt.timedelta(seconds=seconds)).isoformat(sep=" ") if seconds is not None else None
        record = {"filepath": filepath, "root": "/card", "status": status, "datetime": when}
        record.update({f"prob_{c}": (p if probs else np.nan) for c, p in zip(CLASSES, probs or (0, 0, 0))})
        records.append(record)
    return pd.DataFrame(records)


def test_frames_chained_within_the_gap_form_one_sequence_per_folder():
    frame = table([
        ("camA/1.jpg", "ok", 0, (0.9, 0.1, 0.0)),
        ("camA/2.jpg", "ok", 2, (0.4, 0.6, 0.0)),   # alone it looks like a fox
        ("camA/3.jpg", "ok", 4, (0.8, 0.2, 0.0)),   # 4 s after the first, 2 s after the second
        ("camA/4.jpg", "ok", 60, (0.1, 0.1, 0.8)),  # a new trigger
        ("camA/5.jpg", "ok", None, (0.2, 0.7, 0.1)),  # no capture time: on its own
        ("camA/6.jpg", "failed", None, None),
        ("camB/1.jpg", "ok", 1, (0.1, 0.8, 0.1)),   # same moment, another camera
    ])
    out = assign_sequences(frame, CLASSES, gap_seconds=3)
    assert out["sequence_id"].tolist() == [1, 1, 1, 2, 3, pd.NA, 4]
    assert out["sequence_label"].tolist()[:5] == ["deer", "deer", "deer", "owl", "fox"]
    assert pd.isna(out["sequence_label"].iloc[5]) and out["sequence_label"].iloc[6] == "fox"
    assert out["sequence_score"].iloc[0] == pytest.approx(0.7)  # mean of 0.9, 0.4, 0.8


def test_a_gap_smaller_than_the_burst_interval_splits_it():
    frame = table([("cam/1.jpg", "ok", 0, (0.9, 0.1, 0)), ("cam/2.jpg", "ok", 2, (0.4, 0.6, 0)),
                   ("cam/3.jpg", "ok", 4, (0.8, 0.2, 0))])
    assert assign_sequences(frame, CLASSES, gap_seconds=1.5)["sequence_id"].tolist() == [1, 2, 3]


def test_files_listed_out_of_time_order_are_chained_by_time():
    frame = table([("cam/b.jpg", "ok", 10, (0.9, 0.1, 0)), ("cam/a.jpg", "ok", 0, (0.9, 0.1, 0)),
                   ("cam/c.jpg", "ok", 5, (0.9, 0.1, 0))])
    assert assign_sequences(frame, CLASSES, gap_seconds=5)["sequence_id"].tolist() == [1, 1, 1]


def test_an_unsure_sequence_is_unknown_below_the_threshold():
    frame = table([("cam/1.jpg", "ok", 0, (0.5, 0.4, 0.1)), ("cam/2.jpg", "ok", 1, (0.6, 0.3, 0.1))])
    out = assign_sequences(frame, CLASSES, gap_seconds=5, threshold=0.6)
    assert out["sequence_label"].tolist() == ["unknown", "unknown"]
    assert out["sequence_score"].tolist() == [0.55, 0.55]


@pytest.mark.parametrize("gap", [0, -1, "10", True])
def test_the_gap_must_be_a_positive_number(gap):
    with pytest.raises(ConfigError, match="sequence_gap must be a positive number of seconds. Received"):
        assign_sequences(table([]), CLASSES, gap_seconds=gap)


def test_predict_groups_images_by_their_exif_capture_times(tmp_path, tmp_path_factory):
    model = tiny_model_dir(tmp_path_factory)
    for i, seconds in enumerate([0, 3, 6, 300]):
        coloured(tmp_path / "card" / "cam1" / f"IMG_{i}.jpg", "fox", seed=i, exif=exif_time(T0 + dt.timedelta(0, seconds)))
    coloured(tmp_path / "card" / "cam2" / "IMG_0.jpg", "owl", exif=exif_time(T0))
    coloured(tmp_path / "card" / "cam2" / "no_time.jpg", "owl")
    (tmp_path / "card" / "cam2" / "broken.jpg").write_bytes(b"\xff\xd8\xff")

    frame = predict(model, tmp_path / "card", sequence_gap=5, output=tmp_path / "p.csv")
    by_file = frame.set_index("filepath")
    assert by_file.loc["cam1/IMG_0.jpg", "datetime"] == "2024-06-01 05:30:00"
    assert by_file["sequence_id"].tolist() == [1, 1, 1, 2, 3, pd.NA, 4]  # cam2: IMG_0, broken, no_time
    assert frame.attrs["summary"].sequences == 4
    members = frame[frame["sequence_id"] == 1]
    mean = members[[f"prob_{c}" for c in CLASSES]].mean()
    assert (members["sequence_label"] == mean.idxmax()[len("prob_"):]).all()
    assert list(frame.columns[-3:]) == ["sequence_id", "sequence_label", "sequence_score"]
