"""Metrics and auto-labelling thresholds on small arrays with hand-computed answers, and against scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ecoclassify.report.metrics import (
    calibration,
    choose_group_columns,
    confusion_matrices,
    evaluate_predictions,
    group_metrics,
    headline_metrics,
    mean_average_precision,
    per_class_metrics,
    summary_metrics,
)
from ecoclassify.report.thresholds import (
    auto_label_thresholds,
    clopper_pearson_lower_bound,
    images_needed,
    threshold_for_precision,
    threshold_summary_lines,
    wilson_lower_bound,
)

CLASSES = ["deer", "fox", "owl"]
# Six images, two per class; rows 1, 3 and 5 are wrong (predicted fox, owl, deer).
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBA = np.array([
    [0.8, 0.1, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.2, 0.7],
    [0.1, 0.1, 0.8],
    [0.5, 0.2, 0.3],
])


def test_summary_metrics_match_values_worked_out_by_hand():
    result = summary_metrics(Y_TRUE, PROBA, CLASSES)
    assert result["n_images"] == 6
    assert result["accuracy"] == pytest.approx(3 / 6)
    # Each class: 1 hit, 1 false alarm, 1 miss -> precision = recall = F1 = 0.5.
    for key in ("balanced_accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall",
                "weighted_precision", "weighted_recall"):
        assert result[key] == pytest.approx(0.5), key
    # Observed agreement 0.5, chance agreement 3 * (1/3 * 1/3) = 1/3.
    assert result["cohen_kappa"] == pytest.approx((0.5 - 1 / 3) / (1 - 1 / 3))
    true_class_proba = [0.8, 0.3, 0.7, 0.2, 0.8, 0.3]
    assert result["log_loss"] == pytest.approx(-np.mean(np.log(true_class_proba)))
    assert result["log_loss_n_images"] == 6
    assert result["top_3_accuracy"] is None and result["top_5_accuracy"] is None  # 3 classes: 1 by definition


def test_summary_metrics_agree_with_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 7, 200)
    proba = rng.dirichlet(np.ones(7), 200).astype(np.float32)  # float32 rows sum to 1 only roughly
    classes = [f"c{i}" for i in range(7)]
    result = summary_metrics(y_true, proba, classes)
    y_pred = proba.argmax(axis=1)
    labels = list(range(7))
    exact = proba.astype(np.float64) / proba.astype(np.float64).sum(axis=1, keepdims=True)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert result["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert result["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    assert result["log_loss"] == pytest.approx(skm.log_loss(y_true, exact, labels=labels))
    assert result["top_3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y_true, exact, k=3))
    assert result["top_5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y_true, exact, k=5))
    for name, row in zip(classes, per_class_metrics(y_true, proba, classes)):
        index = classes.index(name)
        assert row["average_precision"] == pytest.approx(skm.average_precision_score(y_true == index, exact[:, index]))


def test_top_k_accuracy_is_reported_only_for_k_below_the_class_count():
    y_true = np.array([0, 1, 2, 3])
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    result = summary_metrics(y_true, proba, ["a", "b", "c", "d"])
    # True class ranks: 4th, 2nd, 2nd, 4th -> two of four within the top 3.
    assert result["top_3_accuracy"] == pytest.approx(0.5) and result["top_5_accuracy"] is None


def test_map_leaves_out_and_names_a_class_with_no_image():
    y_true = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.05, 0.05], [0.4, 0.1, 0.5], [0.6, 0.3, 0.1], [0.1, 0.85, 0.05]])
    mean_ap, missing = mean_average_precision(y_true, proba, CLASSES)
    # deer ranked: 0.9 (deer), 0.6 (fox), 0.4 (deer), 0.1 -> AP = (1/1 + 2/3) / 2; fox ranked perfectly -> 1.
    assert missing == ["owl"]
    assert mean_ap == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    result = summary_metrics(y_true, proba, CLASSES)
    assert result["mAP"] == pytest.approx(mean_ap) and result["map_excluded_classes"] == ["owl"]
    owl = per_class_metrics(y_true, proba, CLASSES)[2]
    assert owl["support"] == 0 and owl["average_precision"] is None and owl["recall"] is None


def test_a_class_the_model_cannot_predict_counts_as_errors_but_not_in_map_or_log_loss():
    y_true = np.array([0, 1, 2, 2])  # index 2 is "other": labels the model does not know
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.4, 0.6, 0.0]])
    classes = ["deer", "fox", "other"]
    result = summary_metrics(y_true, proba, classes, not_predicted=["other"])
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["map_excluded_classes"] == ["other"] and result["mAP"] == pytest.approx(1.0)
    assert result["log_loss_n_images"] == 2
    assert result["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    other = per_class_metrics(y_true, proba, classes, not_predicted=["other"])[2]
    assert other["predictable"] is False and other["recall"] == 0.0 and other["average_precision"] is None


def test_per_class_precision_is_none_for_a_class_never_predicted():
    rows = per_class_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]), ["deer", "fox"])
    assert rows[1] == {"class": "fox", "support": 2, "n_predicted": 0, "precision": None, "recall": 0.0,
                       "f1": 0.0, "average_precision": pytest.approx(1.0), "predictable": True}
    assert rows[0]["precision"] == pytest.approx(1 / 3) and rows[0]["recall"] == 1.0


def test_confusion_matrix_has_counts_and_row_shares_with_empty_rows_undefined():
    counts, normalised = confusion_matrices(np.array([0, 0, 0, 1]), np.array(
        [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]]), 3)
    assert counts.tolist() == [[2, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert normalised[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    assert np.isnan(normalised[2]).all()
    block = evaluate_predictions(np.array([0, 0, 0, 1]), np.array(
        [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]]) + 0.01, ["a", "b", "c"])
    assert block["confusion_matrix"]["normalized"][2] == [None, None, None]


def test_expected_calibration_error_uses_fifteen_equal_bins():
    # Confidence 0.9: right 1 of 2 -> gap 0.4; confidence 0.6: right 2 of 2 -> gap 0.4.
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    result = calibration(np.array([0, 1, 0, 1]), proba)
    assert result["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert result["n_bins"] == 15 and len(result["bins"]) == 15
    filled = {i: b for i, b in enumerate(result["bins"]) if b["n_images"]}
    assert set(filled) == {8, 13}  # (8/15, 9/15] holds 0.6 and (13/15, 14/15] holds 0.9
    assert filled[13]["accuracy"] == 0.5 and filled[13]["confidence"] == pytest.approx(0.9)
    edges = calibration(np.array([0, 0]), np.array([[1.0, 0.0], [0.5, 0.5]]))["bins"]
    assert edges[14]["n_images"] == 1 and edges[7]["n_images"] == 1  # 1.0 in the last bin, 0.5 in (7/15, 8/15]


def test_a_perfectly_calibrated_set_has_zero_ece():
    proba = np.array([[1.0, 0.0]] * 4)
    assert calibration(np.array([0, 0, 0, 0]), proba)["ece"] == 0.0


# Scores sorted from most to least confident; precision at each cut: 1, 1, 1, 0.75, 0.8, 0.667.
SCORES = np.array([0.99, 0.95, 0.90, 0.80, 0.70, 0.60])
CORRECT = np.array([True, True, True, False, True, False])


def test_the_threshold_is_the_lowest_score_that_still_reaches_the_target():
    row = threshold_for_precision(SCORES, CORRECT, 0.95, n_total=6, n_positives=6)
    assert row["reachable"] and row["threshold"] == 0.90
    assert row["n_auto_labelled"] == 3 and row["share_auto_labelled"] == 0.5
    assert row["precision"] == 1.0 and row["recall"] == 0.5
    # Three images right of three are far too few to promise 0.95: reached, but not supported.
    assert row["supported"] is False and row["note"].startswith("not supported by the data: 3 images")
    # Precision dips to 0.75 at 0.80 and recovers to 0.80 at 0.70: the lower threshold labels more.
    row = threshold_for_precision(SCORES, CORRECT, 0.78, n_total=6, n_positives=6)
    assert row["threshold"] == 0.70 and row["n_auto_labelled"] == 5
    assert row["precision"] == pytest.approx(0.8) and row["recall"] == pytest.approx(4 / 6)


def test_a_target_that_no_threshold_reaches_is_reported_as_unreachable_in_words():
    row = threshold_for_precision(np.array([0.9, 0.8, 0.7]), np.array([False, True, True]), 0.95, 3, 3)
    assert row["reachable"] is False and row["threshold"] is None and row["n_auto_labelled"] == 0
    assert row["max_precision"] == pytest.approx(2 / 3)
    assert row["note"].startswith("not reachable") and "66.7%" in row["note"]


def test_tied_scores_are_never_split_by_a_threshold():
    # Only the first of the two 0.9 images is right, but no threshold separates them.
    row = threshold_for_precision(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]), 0.9, 3, 3)
    assert row["reachable"] is False and row["max_precision"] == pytest.approx(2 / 3)


def test_a_class_never_predicted_cannot_be_auto_labelled():
    row = threshold_for_precision(np.array([]), np.array([], dtype=bool), 0.95, 10, 4)
    assert row["reachable"] is False and "no image is predicted" in row["note"]


def test_wilson_lower_bound_matches_the_textbook_formula():
    z = 1.959964
    assert wilson_lower_bound(10, 10) == pytest.approx(1 / (1 + z * z / 10))
    assert wilson_lower_bound(0, 0) is None
    assert wilson_lower_bound(50, 100) == pytest.approx(0.4038, abs=1e-4)



def test_the_lower_bound_is_the_one_sided_95_percent_clopper_pearson_bound():
    from scipy.stats import binomtest

    for hits, n in [(11, 11), (57, 60), (1, 1), (290, 300)]:
        exact = binomtest(hits, n, alternative="greater").proportion_ci(0.95, method="exact").low
        assert clopper_pearson_lower_bound(hits, n) == pytest.approx(exact, abs=1e-9)
    # With no error the bound is 0.05 ** (1 / n): 11 of 11 right only promises 0.762.
    assert clopper_pearson_lower_bound(11, 11) == pytest.approx(0.05 ** (1 / 11))
    assert clopper_pearson_lower_bound(0, 5) == 0.0 and clopper_pearson_lower_bound(0, 0) is None


def test_the_images_needed_for_a_target_are_the_fewest_whose_bound_reaches_it():
    assert images_needed(0.95) == 59 and images_needed(0.99) == 299
    assert clopper_pearson_lower_bound(58, 58) < 0.95 <= clopper_pearson_lower_bound(59, 59)
    assert clopper_pearson_lower_bound(298, 298) < 0.99 <= clopper_pearson_lower_bound(299, 299)
    assert images_needed(0.95, errors=1) == 93 and images_needed(0.99, errors=1) == 473
    assert images_needed(1.0) is None


def test_a_target_met_on_a_few_images_is_flagged_as_not_supported_by_the_data():
    # 11 of 11 right reach 0.99 on these images, but their lower bound is 0.762.
    row = threshold_for_precision(np.linspace(0.999, 0.99, 11), np.ones(11, dtype=bool), 0.99, 11, 11)
    assert row["reachable"] is True and row["precision"] == 1.0 and row["n_auto_labelled"] == 11
    assert row["supported"] is False and row["n_images"] == 11 and row["bound_method"] == "clopper-pearson"
    assert row["precision_lower_bound"] == pytest.approx(0.7616, abs=1e-4)
    assert row["note"].startswith("not supported by the data: 11 images, lower bound 0.762 < target 0.99")
    assert "at least 299 images" in row["note"]


def test_a_target_met_on_enough_images_is_supported():
    scores = np.linspace(0.999, 0.5, 400)
    correct = np.arange(400) < 300  # the 300 most confident are right, the rest wrong
    row = threshold_for_precision(scores, correct, 0.99, 400, 400)
    assert row["n_auto_labelled"] == 300 and row["supported"] is True and row["note"] == ""
    assert row["precision_lower_bound"] >= 0.99 and row["n_images"] == 400


def test_the_threshold_is_the_lowest_the_data_support_rather_than_one_met_by_luck():
    # 303 images reach 0.99 on the measured precision (300 of 303), but that bound is below
    # 0.99; the 300 most confident, all right, support it: their threshold is the one given.
    scores = np.linspace(0.999, 0.5, 400)
    correct = (np.arange(400) < 300) | (np.arange(400) == 302)
    row = threshold_for_precision(scores, correct, 0.99, 400, 400)
    assert row["supported"] is True and row["n_auto_labelled"] == 300 and row["threshold"] == scores[299]
    lines = threshold_summary_lines(auto_label_thresholds(np.zeros(400, dtype=int), np.column_stack(
        [np.where(correct, scores, 1 - scores), np.where(correct, 1 - scores, scores)]), ["deer", "fox"], [0.99]))
    assert lines[0].startswith("precision 0.99: threshold ") and "not supported" not in lines[0]


def test_per_class_thresholds_on_a_single_image_are_flagged_and_named_in_the_combined_row():
    # One image predicted as fox (right): fox "reaches" 0.95 on one image, which supports nothing.
    y_true = np.array([0] * 70 + [1])
    proba = np.array([[0.9, 0.1]] * 70 + [[0.2, 0.8]])
    result = auto_label_thresholds(y_true, proba, ["deer", "fox"], targets=[0.95])
    deer, fox = result["per_class"]["deer"][0], result["per_class"]["fox"][0]
    assert deer["supported"] is True and deer["n_images"] == 70
    assert fox["reachable"] is True and fox["supported"] is False and fox["n_images"] == 1
    assert fox["precision_lower_bound"] == pytest.approx(0.05)
    combined = result["per_class_combined"][0]
    assert combined["classes_not_supported"] == ["fox"] and combined["supported"] is True
    lines = threshold_summary_lines(result)
    assert "per-class thresholds for precision 0.95: supported for deer; not supported by the data for fox " \
           "(1 image, lower bound 0.050)" in lines

def test_per_class_thresholds_count_recall_against_the_class_and_share_against_all_images():
    y_true = np.array([0, 0, 0, 1, 1, 1])
    proba = np.array([[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9], [0.4, 0.6]])
    result = auto_label_thresholds(y_true, proba, ["deer", "fox"], targets=[0.99, 0.6])
    assert result["targets"] == [0.6, 0.99]
    deer_99 = result["per_class"]["deer"][1]
    # Predicted deer: 0.95 (right), 0.9 (right), 0.8 (wrong) -> 0.99 needs threshold 0.9.
    assert deer_99["threshold"] == 0.9 and deer_99["recall"] == pytest.approx(2 / 3)
    assert deer_99["share_auto_labelled"] == pytest.approx(2 / 6)
    fox_99 = result["per_class"]["fox"][1]
    # Predicted fox: 0.9 (right), 0.7 (wrong), 0.6 (right) -> 0.99 needs 0.9.
    assert fox_99["threshold"] == 0.9 and fox_99["n_auto_labelled"] == 1
    combined = result["per_class_combined"][1]
    assert combined["n_auto_labelled"] == 3 and combined["precision"] == 1.0 and combined["recall"] == 0.5
    assert combined["classes_unreachable"] == []
    overall_99 = result["overall"][1]
    # All six by score: 0.95 R, 0.9 R, 0.9 R (tie), 0.8 W, 0.7 W, 0.6 R.
    assert overall_99["threshold"] == 0.9 and overall_99["n_auto_labelled"] == 3


def test_kappa_is_none_not_nan_when_only_one_label_occurs_and_the_block_is_strict_json():
    block = evaluate_predictions(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]]), ["deer", "fox"])
    assert block["cohen_kappa"] is None
    json.dumps(block, allow_nan=False)


def test_headline_metrics_keep_their_keys_for_existing_readers_of_metrics_json():
    assert set(headline_metrics(Y_TRUE, PROBA, CLASSES)) == {
        "n_images", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mAP", "map_excluded_classes"}
    block = evaluate_predictions(Y_TRUE, PROBA, CLASSES)
    assert set(headline_metrics(Y_TRUE, PROBA, CLASSES)) <= set(block)


def test_group_metrics_are_computed_per_site():
    rows = group_metrics(Y_TRUE, PROBA, CLASSES, ["a", "a", "a", "b", "b", ""])
    assert [r["group"] for r in rows] == ["(none)", "a", "b"]
    a = rows[1]
    assert a["n_images"] == 3 and a["accuracy"] == pytest.approx(2 / 3) and a["n_classes"] == 2
    assert rows[2]["accuracy"] == pytest.approx(0.5)


def test_group_columns_skip_repeats_tiny_groups_and_columns_with_too_many_values():
    frame = pd.DataFrame({"site": ["a", "b"] * 30, "location": ["a", "b"] * 30,
                          "camera": [f"cam{i}" for i in range(60)], "group": [f"burst{i // 3}" for i in range(60)]})
    columns, skipped = choose_group_columns(frame)
    assert columns == ["site"]  # location repeats site
    assert "camera" in skipped and "60 distinct values" in skipped["camera"]
    assert "3.0 images per group on average" in skipped["group"]
    assert choose_group_columns(frame, ["group"])[0] == ["group"]  # asked for by name: no minimum
    columns, skipped = choose_group_columns(frame, ["trap"])
    assert columns == [] and "not a column" in skipped["trap"]


def test_bad_shapes_are_refused_with_the_shape_received():
    with pytest.raises(ValueError, match=r"Received: \(6, 2\)"):
        summary_metrics(Y_TRUE, PROBA[:, :2], CLASSES)
