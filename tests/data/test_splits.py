"""Splits: stratified, grouped and predefined; deterministic whatever order the files come in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecoclassify.config import Config, SplitConfig
from ecoclassify.data.sources import load_source
from ecoclassify.data.splits import SPLITS, assign_splits, check_class_sizes
from ecoclassify.errors import DataError


def table(counts: dict[str, int], **columns) -> pd.DataFrame:
    """Samples ``/data/<label>/<nnn>.jpg`` with ``counts[label]`` rows per label, plus extra columns."""
    rows = [{"filepath": f"/data/{label}/{i:03d}.jpg", "label": label} for label, n in counts.items() for i in range(n)]
    frame = pd.DataFrame(rows)
    for name, values in columns.items():
        frame[name] = values
    return frame


def split_of(result) -> dict[str, str]:
    return dict(zip(result.samples["filepath"], result.samples["split"]))


STRATIFIED = SplitConfig(method="stratified", val=0.15, test=0.15)


# --- stratified ---------------------------------------------------------------------------------


def test_stratified_keeps_every_class_in_train_and_val_and_test_in_proportion():
    counts = {"deer": 40, "fox": 20, "bird": 100}
    samples = assign_splits(table(counts), STRATIFIED, seed=1).samples
    per_class = pd.crosstab(samples["label"], samples["split"])
    for label, n in counts.items():
        assert per_class.loc[label, "train"] > 0
        for name in ("val", "test"):
            assert abs(per_class.loc[label, name] - 0.15 * n) <= 1, (label, name, per_class.loc[label].to_dict())
    assert set(samples["split"]) == set(SPLITS)


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.3, 0.3), (0.0, 0.2), (0.5, 0.4)])
def test_stratified_never_leaves_a_class_without_a_training_image(n, val, test):
    samples = assign_splits(table({"deer": n, "fox": 12}), SplitConfig(val=val, test=test), seed=0).samples
    deer = samples[samples["label"] == "deer"]
    assert (deer["split"] == "train").sum() >= 1
    assert len(deer) == n


def test_stratified_adds_split_and_group_columns_and_sorts_by_path():
    frame = table({"deer": 6, "fox": 6}).sample(frac=1, random_state=3)
    samples = assign_splits(frame, STRATIFIED, seed=0).samples
    assert samples["filepath"].tolist() == sorted(frame["filepath"])
    assert {"split", "group"} <= set(samples.columns)
    assert samples["split"].isin(SPLITS).all()


def test_the_same_seed_gives_the_same_split():
    frame = table({"deer": 30, "fox": 30})
    assert split_of(assign_splits(frame, STRATIFIED, 5)) == split_of(assign_splits(frame, STRATIFIED, 5))


@pytest.mark.parametrize("shuffle_seed", [0, 1, 2])
def test_shuffling_the_input_rows_gives_the_identical_split(shuffle_seed):
    frame = table({"deer": 30, "fox": 25, "bird": 9})
    shuffled = frame.sample(frac=1, random_state=shuffle_seed).reset_index(drop=True)
    assert not shuffled["filepath"].equals(frame["filepath"])
    assert split_of(assign_splits(shuffled, STRATIFIED, 7)) == split_of(assign_splits(frame, STRATIFIED, 7))


def test_different_seeds_give_different_splits():
    frame = table({"deer": 30, "fox": 30})
    splits = {tuple(sorted(split_of(assign_splits(frame, STRATIFIED, seed)).items())) for seed in range(4)}
    assert len(splits) == 4


def test_adding_a_class_does_not_reshuffle_the_other_classes():
    before = split_of(assign_splits(table({"deer": 20, "fox": 20}), STRATIFIED, 42))
    after = split_of(assign_splits(table({"deer": 20, "fox": 20, "bird": 20}), STRATIFIED, 42))
    assert {path: after[path] for path in before} == before


def test_files_created_in_a_different_order_get_the_identical_split(tmp_path, make_image):
    names = [f"{label}/{i:02d}.jpg" for label in ("deer", "fox") for i in range(10)]
    for name in names:
        make_image(tmp_path / "one" / name, size=8)
    for name in reversed(names):
        make_image(tmp_path / "two" / name, size=8)

    def relative_split(root: Path) -> dict[str, str]:
        config = Config.from_dict({"data": {"root": str(root)}})
        samples = assign_splits(load_source(config.data).samples, config.data.split, 42).samples
        return {Path(p).relative_to(root).as_posix(): s for p, s in zip(samples["filepath"], samples["split"])}

    assert relative_split(tmp_path / "one") == relative_split(tmp_path / "two")


# --- group --------------------------------------------------------------------------------------


def random_groups(seed: int) -> pd.DataFrame:
    """A random camera-trap-like table: 8-40 sites, each with 1-3 classes and 1-6 images of each."""
    rng = np.random.default_rng(seed)
    rows = []
    labels = ["bird", "deer", "fox", "empty"]
    for site in range(int(rng.integers(8, 41))):
        for label in rng.choice(labels, size=int(rng.integers(1, 4)), replace=False):
            for frame in range(int(rng.integers(1, 7))):
                rows.append({"filepath": f"/data/s{site}/{label}_{frame}.jpg", "label": str(label), "site": f"s{site}"})
    # Every class somewhere with plenty of sites, so a training image is always possible.
    for site in range(3):
        for label in labels:
            rows.append({"filepath": f"/data/base{site}/{label}.jpg", "label": label, "site": f"base{site}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(30))
def test_no_group_ever_straddles_two_splits(seed):
    frame = random_groups(seed)
    split = SplitConfig(method="group", group_by="site", val=0.2, test=0.2)
    samples = assign_splits(frame.sample(frac=1, random_state=seed), split, seed).samples
    assert len(samples) == len(frame)
    assert samples["split"].isin(SPLITS).all()
    assert (samples["group"] == samples["site"]).all()
    assert samples.groupby("site")["split"].nunique().max() == 1


def test_group_split_keeps_held_out_fractions_close_to_the_targets_with_many_small_groups():
    rows = [{"filepath": f"/d/{label}/{g}_{k}.jpg", "label": label, "sequence": f"{label}-{g}"}
            for label in ("deer", "fox") for g in range(60) for k in range(g % 3 + 1)]
    samples = assign_splits(pd.DataFrame(rows), SplitConfig(method="group", group_by="sequence"), 0).samples
    shares = pd.crosstab(samples["label"], samples["split"], normalize="index")
    assert ((shares["val"] - 0.15).abs() < 0.05).all() and ((shares["test"] - 0.15).abs() < 0.05).all()


def test_group_split_is_deterministic_and_order_independent():
    frame = random_groups(99)
    split = SplitConfig(method="group", group_by="site")
    shuffled = frame.sample(frac=1, random_state=1)
    assert split_of(assign_splits(frame, split, 3)) == split_of(assign_splits(shuffled, split, 3))


def test_images_without_a_group_value_each_form_their_own_group_with_a_warning():
    frame = table({"deer": 10, "fox": 10}, site=["", "a", "a", "b", "b", "", "c", "c", "d", "d"] * 2)
    result = assign_splits(frame, SplitConfig(method="group", group_by="site"), 0)
    assert "4 image(s) without a site value form a group each" in result.warnings
    lonely = result.samples[result.samples["site"] == ""]
    assert lonely["group"].nunique() == 4


def test_a_class_missing_from_val_and_test_is_named_in_a_warning():
    # deer spreads over 20 sites, fox sits at one site only: that site must stay in train.
    frame = table({"deer": 20, "fox": 5}, site=[f"d{i}" for i in range(20)] + ["f"] * 5)
    result = assign_splits(frame, SplitConfig(method="group", group_by="site"), 0)
    assert "class(es) missing from val: fox" in result.warnings
    assert "class(es) missing from test: fox" in result.warnings
    assert set(result.samples.loc[result.samples["label"] == "fox", "split"]) == {"train"}


def test_a_stratified_class_too_small_for_val_and_test_is_named_in_a_warning():
    result = assign_splits(table({"deer": 20, "fox": 2}), STRATIFIED, 0)
    assert result.warnings == ["class(es) missing from val: fox", "class(es) missing from test: fox"]


def test_an_empty_held_out_split_is_reported_as_empty():
    result = assign_splits(table({"deer": 2, "fox": 2}), STRATIFIED, 0)
    assert result.warnings == ["the val split is empty", "the test split is empty"]


def test_group_by_naming_a_missing_column_lists_the_columns():
    frame = table({"deer": 3, "fox": 3}, site=["a"] * 6, camera=["c"] * 6)
    with pytest.raises(DataError) as info:
        assign_splits(frame, SplitConfig(method="group", group_by="location"), 0)
    assert str(info.value) == (
        "data.split.group_by 'location' is not a column of the data. Columns found: label, site, camera"
    )


# --- predefined and class sizes -----------------------------------------------------------------


def test_predefined_keeps_the_given_split():
    given = ["train", "train", "val", "test"] * 2
    frame = table({"deer": 4, "fox": 4}, split=given)
    samples = assign_splits(frame, SplitConfig(method="predefined"), 0).samples
    assert samples["split"].tolist() == given


def test_predefined_without_a_split_column_lists_the_columns_found():
    with pytest.raises(DataError) as info:
        assign_splits(table({"deer": 3, "fox": 3}, site=["a"] * 6), SplitConfig(method="predefined"), 0)
    message = str(info.value)
    assert message.startswith("data.split.method 'predefined' needs a split column")
    assert message.endswith("Columns found: filepath, label, site")


def test_a_class_with_no_training_image_after_the_split_is_a_data_error_naming_it():
    frame = table({"deer": 4, "fox": 4}, split=["train"] * 4 + ["val", "val", "test", "test"])
    with pytest.raises(DataError, match="class\\(es\\) with no training image after the split: fox"):
        assign_splits(frame, SplitConfig(method="predefined"), 0)


def test_a_class_with_too_few_images_is_named_with_its_count():
    with pytest.raises(DataError) as info:
        check_class_sizes(table({"deer": 10, "fox": 2, "bird": 4, "owl": 5}), min_images_per_class=5)
    message = str(info.value)
    assert message.startswith(
        "2 class(es) have fewer than data.min_images_per_class=5 usable images: bird (4), fox (2)."
    )
    assert "deer" not in message and "owl" not in message


def test_a_single_class_is_refused():
    with pytest.raises(DataError, match=r"at least 2 classes. Found: \['deer'\]"):
        check_class_sizes(table({"deer": 10}), min_images_per_class=5)


def test_classes_at_the_minimum_size_are_accepted():
    check_class_sizes(table({"deer": 5, "fox": 5}), min_images_per_class=5)
