"""The report folder: files, metrics.json schema, a self-contained HTML page, and how it renders."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ecoclassify.config import Config
from ecoclassify.report.writer import write_report
from ecoclassify.report.context import format_value

CLASSES = ["badger", "deer", "fox", "hare", "owl", "wild boar"]
N = 90


def synthetic_predictions(seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A 6-class set a decent model might give: the true class boosted, scores spread out."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, len(CLASSES), N)
    logits = rng.normal(0, 1, (N, len(CLASSES)))
    logits[np.arange(N), y_true] += 2.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"filepath": [f"/cards/site/IMG_{i:04d}.JPG" for i in range(N)],
                          "label": [CLASSES[i] for i in y_true],
                          "site": rng.choice(["forest edge", "meadow", "stream"], N)})
    return y_true, proba, frame


def a_config(tmp_path: Path) -> Config:
    return Config.from_dict({
        "experiment": {"name": "report-test", "output_dir": str(tmp_path)},
        "data": {"source": "folders", "root": str(tmp_path), "image_size": 32},
        "model": {"backbone": "custom_cnn", "weights": "none"},
        "training": {"mode": "scratch", "epochs": 3},
    })


HISTORY = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.6, 1.1, 0.8], "accuracy": [0.4, 0.6, 0.7],
                        "macro_f1": [0.3, 0.5, 0.7], "val_loss": [1.5, 1.2, 1.0],
                        "val_accuracy": [0.45, 0.55, 0.65], "val_macro_f1": [0.35, 0.5, 0.6]})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    y_true, proba, frame = synthetic_predictions()
    excluded = pd.DataFrame({"filepath": ["/cards/site/IMG_9999.JPG"], "label": ["fox"], "error": ["truncated"],
                             "detail": ["image file is truncated (12 bytes not processed)"]})
    facts = {"classes": CLASSES, "epochs": 3, "monitor": "val_macro_f1", "best_monitor_value": 0.6,
             "split_counts": {"train": 300, "val": 60, "test": N}}
    splits = {"train": frame.sample(60, random_state=1), "val": frame.head(20), "test": frame}
    return write_report(folder / "report", y_true, proba, CLASSES, frame, history=HISTORY, config=a_config(folder),
                        splits=splits, facts=facts, excluded=excluded)


class PageParser(HTMLParser):
    """Visible text, image sources and every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.references: list[str] = []
        self.tags: set[str] = set()
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag in ("style", "script"):
            self._hidden += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href"):
            if name in attrs and not str(attrs[name]).startswith(("data:", "#")):
                self.references.append(attrs[name])

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def numeric_leaves(value, key="", path=""):
    """``(path, key, number)`` for every number in a nested metrics block."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numeric_leaves(v, str(k), f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numeric_leaves(v, key, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, key, value


def test_the_report_folder_holds_every_table_plot_and_page(report):
    names = {p.name for p in report.out_dir.iterdir()}
    assert {"metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix_normalized.csv",
            "thresholds.csv", "per_group.csv", "predictions_test.csv", "excluded.csv", "report.html", "report.md",
            "confusion_matrix.png", "pr_curves.png", "reliability_diagram.png", "thresholds.png",
            "training_curves.png"} <= names
    assert not any(name.endswith(".tmp") for name in names)  # atomic writes leave nothing behind


def test_metrics_json_keeps_the_run_facts_and_documents_its_sections(report):
    saved = json.loads((report.out_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report.metrics))
    assert {"schema_version", "kind", "created", "versions", "title", "notes", "classes", "epochs", "monitor",
            "best_monitor_value", "split_counts", "test", "unreadable", "files"} <= set(saved)
    assert saved["split_counts"] == {"train": 300, "val": 60, "test": N}
    assert saved["unreadable"] == {"n_images": 1, "by_reason": {"truncated": 1}}
    test = saved["test"]
    assert {"n_images", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mAP", "map_excluded_classes",
            "cohen_kappa", "log_loss", "top_3_accuracy", "top_5_accuracy", "ece", "per_class", "confusion_matrix",
            "calibration", "thresholds", "groups"} <= set(test)
    assert test["top_3_accuracy"] is not None and test["top_5_accuracy"] is not None  # 6 classes
    assert [row["group"] for row in test["groups"]["site"]] == ["forest edge", "meadow", "stream"]
    assert test["thresholds"]["targets"] == [0.95, 0.99]  # the config's report.target_precisions
    json.dumps(saved, allow_nan=False)


def test_the_summary_for_a_runs_own_metrics_json_is_flat_and_keeps_the_headline_keys(report):
    summary = report.summary
    assert {"n_images", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mAP",
            "map_excluded_classes"} <= set(summary)
    assert all(not isinstance(value, dict) for value in summary.values())
    assert "per_class" not in summary and "thresholds" not in summary


def test_the_csv_tables_agree_with_metrics_json(report):
    test = report.metrics["test"]
    per_class = pd.read_csv(report.out_dir / "per_class.csv")
    assert per_class["class"].tolist() == CLASSES
    assert per_class["f1"].tolist() == pytest.approx([row["f1"] for row in test["per_class"]])
    counts = pd.read_csv(report.out_dir / "confusion_matrix.csv", index_col=0)
    assert counts.to_numpy().tolist() == test["confusion_matrix"]["counts"] and counts.to_numpy().sum() == N
    predictions = pd.read_csv(report.out_dir / "predictions_test.csv")
    assert list(predictions.columns[:5]) == ["filepath", "true_label", "predicted_label", "score", "correct"]
    probabilities = predictions[[f"p_{name}" for name in CLASSES]].to_numpy()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(N))
    assert predictions["score"].to_numpy() == pytest.approx(probabilities.max(axis=1))
    assert predictions["correct"].mean() == pytest.approx(test["accuracy"])
    thresholds = pd.read_csv(report.out_dir / "thresholds.csv")
    assert set(thresholds["scope"]) == {"overall", "class", "per_class_combined"}


def test_every_image_of_the_page_is_an_embedded_decodable_png_and_nothing_is_fetched(report):
    page = parse(report.html_path)
    assert len(page.images) == len(report.images) >= 5
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        assert image.format == "PNG"
        image.load()
        assert image.width > 300 and image.height > 200
    assert page.references == []
    assert not {"script", "link", "iframe"} & page.tags


def test_the_page_shows_every_number_of_metrics_json(report):
    text = " ".join(parse(report.html_path).text)
    missing = []
    for path, key, value in numeric_leaves(report.metrics["test"]):
        if key == "normalized" and value == 0:
            continue  # empty confusion-matrix cells are left blank on purpose
        if format_value(key, value) not in text:
            missing.append(f"{path} = {value!r} (shown as {format_value(key, value)!r})")
    assert missing == []
    for name in CLASSES + ["forest edge", "IMG_9999.JPG", "truncated", "custom_cnn"]:
        assert name in text
    # The summary numbers a reader looks for first, literally.
    assert f"{report.metrics['test']['accuracy']:.3f}" in text and f"{report.metrics['test']['mAP']:.3f}" in text


def test_the_markdown_report_has_the_headline_numbers_and_links_the_plots(report):
    text = (report.out_dir / "report.md").read_text()
    test = report.metrics["test"]
    assert f"| Accuracy | {test['accuracy']:.3f} |" in text and f"| mAP | {test['mAP']:.3f} |" in text
    assert "![confusion matrix](confusion_matrix.png)" in text and "| wild boar |" in text


def test_an_unreachable_target_is_said_plainly_on_the_page(tmp_path):
    # The most confident prediction is wrong, so no threshold gives precision 0.99.
    y_true = np.array([0, 1, 0, 1])
    proba = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    frame = pd.DataFrame({"filepath": [f"{i}.jpg" for i in range(4)], "label": ["deer", "fox", "deer", "fox"]})
    result = write_report(tmp_path, y_true, proba, ["deer", "fox"], frame, target_precisions=[0.99])
    overall = result.metrics["test"]["thresholds"]["overall"][0]
    assert overall["reachable"] is False
    text = " ".join(parse(result.html_path).text)
    assert "not reachable: even the 1 most confident prediction(s) are right only 0.0% of the time" in text
    assert "Only 4 images were evaluated" in text


def test_a_report_without_history_has_no_training_curves_and_replaces_an_older_ones(tmp_path):
    y_true, proba, frame = synthetic_predictions(1)
    write_report(tmp_path, y_true, proba, CLASSES, frame, history=HISTORY)
    assert (tmp_path / "training_curves.png").exists()
    again = write_report(tmp_path, y_true, proba, CLASSES, frame, group_columns=[])
    assert not (tmp_path / "training_curves.png").exists() and not (tmp_path / "per_group.csv").exists()
    assert "training_curves" not in again.images and again.metrics["test"]["groups"] == {}


def test_mismatched_inputs_are_refused_before_anything_is_written(tmp_path):
    y_true, proba, frame = synthetic_predictions()
    with pytest.raises(ValueError, match="frame has 10 rows"):
        write_report(tmp_path / "out", y_true, proba, CLASSES, frame.head(10))
    assert not (tmp_path / "out").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; "
                    ".ci/run installs it)")
def test_the_page_renders_in_headless_chromium_as_a_real_report(report, tmp_path):
    shot = tmp_path / "report.png"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=1200,2000", report.html_path.resolve().as_uri()]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), completed.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1200)
    # A blank or failed page is one flat colour; a rendered report has text, tables and plots.
    assert pixels.std() > 20, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # anti-aliased text and plot colours
    dark = pixels.sum(axis=2) < 450  # text, plot lines, the header band
    assert dark.mean() > 0.02
    # The header band is drawn in the report's green (#2f6f5e): the inline CSS applied.
    header = pixels[5:60, 5:1190].reshape(-1, 3)
    assert (np.abs(header - np.array([47, 111, 94])).sum(axis=1) < 12).mean() > 0.8
    # Below the header, the summary cards' big numbers are drawn in the same green.
    body = pixels[300:900].reshape(-1, 3)
    assert (np.abs(body - np.array([47, 111, 94])).sum(axis=1) < 40).mean() > 0.002
