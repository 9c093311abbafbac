"""Rendering the report as one self-contained HTML page (no network, no script).

Every number in ``metrics.json["test"]`` appears on the page, formatted by :func:`format_value`,
so the page can be cited without opening the JSON. Images are embedded as base64 PNG ``data:``
URIs; the stylesheet is inline; there is no script and no external reference at all.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, Sequence

from ecoclassify.report.context import SUMMARY, ReportContext, config_summary, format_value, report_notes
from ecoclassify.report.thresholds import BOUND_TEXT, images_needed

CARDS = ("accuracy", "balanced_accuracy", "macro_f1", "mAP", "cohen_kappa", "top_3_accuracy", "ece", "log_loss")

CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f6f7f4;--card:#fff;--accent:#2f6f5e;--soft:#e3efe9;
--bad:#b44d3a;--warn:#fff6e0;--warnline:#e8c36a}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:var(--accent);color:#fff;padding:28px 0 22px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header p{margin:0;opacity:.88;font-size:14px}
.wrap{max-width:1120px;margin:0 auto;padding:0 28px}
nav{background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
nav a{display:inline-block;padding:10px 12px 9px;color:var(--muted);text-decoration:none;font-size:13px;
border-bottom:2px solid transparent}
nav a:hover{color:var(--accent);border-bottom-color:var(--accent)}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;margin:22px 0;padding:22px 26px}
h2{margin:0 0 4px;font-size:20px;font-weight:650}
h3{margin:22px 0 8px;font-size:16px;font-weight:650}
p.lead{margin:0 0 14px;color:var(--muted);max-width:820px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px;margin-top:14px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px;background:#fbfcfa}
.card .v{font-size:28px;font-weight:650;color:var(--accent);font-variant-numeric:tabular-nums}
.card .k{font-size:13px;font-weight:600}
.card .d{font-size:12px;color:var(--muted);line-height:1.35;margin-top:2px}
table{border-collapse:collapse;width:100%;margin:8px 0 4px;font-size:13.5px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600;
background:#fafbf9}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbf9}
td.bar{background-image:linear-gradient(90deg,#8dbfae var(--v),var(--soft) var(--v));background-size:100% 4px;
background-repeat:no-repeat;background-position:bottom}
td.na,span.na{color:var(--bad);font-style:italic}
.muted{color:var(--muted)}
.scroll{overflow-x:auto}
table.cm td,table.cm th{text-align:center;padding:4px 6px;min-width:42px}
table.cm th.row{text-align:right}
figure{margin:14px 0 4px;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{font-size:12.5px;color:var(--muted);margin-top:6px}
.note{background:var(--warn);border:1px solid var(--warnline);border-radius:8px;padding:10px 14px;margin:10px 0;
font-size:14px}
.note ul{margin:4px 0 0 18px;padding:0}
details{margin:10px 0}
summary{cursor:pointer;color:var(--accent);font-weight:600;font-size:14px}
pre{background:#f3f4f1;border:1px solid var(--line);border-radius:6px;padding:12px;overflow-x:auto;font-size:12.5px}
dl.glossary dt{font-weight:650;margin-top:8px}
dl.glossary dd{margin:0 0 0 0;color:var(--muted)}
footer{color:var(--muted);font-size:12.5px;text-align:center;padding:10px 0 34px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(key: str, value: Any, bar: bool = False) -> str:
    text = _e(format_value(key, value))
    if value is None:
        return f'<td class="n muted">{text}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if bar and value is not None and 0 <= value <= 1:
            return f'<td class="n bar" style="--v:{value * 100:.1f}%">{text}</td>'
        return f'<td class="n">{text}</td>'
    return f"<td>{text}</td>"


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f'<th class="n">{_e(h)}</th>' if numeric else f"<th>{_e(h)}</th>" for h, numeric in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if any(h for h, _ in headers) else ""
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<div class="scroll"><table class="{cls}">{thead}<tbody>{body}</tbody></table></div>'


def _figure(images: dict[str, bytes], role: str, caption: str, alt: str) -> str:
    if role not in images:
        return ""
    data = base64.b64encode(images[role]).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_html(context: ReportContext) -> str:
    """The whole report as one HTML page."""
    m, test = context.metrics, context.metrics["test"]
    sections = [
        ("summary", "Summary", _summary(m, test)),
        ("thresholds", "Auto-labelling", _thresholds(test, context.images)),
        ("classes", "Per class", _per_class(test, context.images)),
        ("confusion", "Confusion matrix", _confusion(test, context.images)),
        ("calibration", "Calibration", _calibration(test, context.images)),
    ]
    if test["groups"] or test.get("groups_skipped"):
        sections.append(("groups", "Per group", _groups(test, context.images, context.config)))
    sections.append(("data", "Data", _data(m, context)))
    sections.append(("model", "Model and training", _model(m, context)))
    sections.append(("glossary", "How to read this report", _glossary(m)))
    nav = "".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{_e(name)}</h2>{content}</section>'
                   for anchor, name, content in sections)
    what = {"training": "Test split of the training run", "crossval": "Pooled out-of-fold predictions of a "
            "cross-validation"}.get(m["kind"], "Evaluation on a labelled set")
    subtitle = (f"{what} · {test['n_images']} images · {len(test['classes'])} classes · "
                f"created {m['created'].replace('T', ' ')}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(m['title'])}</title><style>{CSS}</style></head><body>"
        f'<header><div class="wrap"><h1>{_e(m["title"])}</h1><p>{_e(subtitle)}</p></div></header>'
        f'<nav><div class="wrap">{nav}</div></nav><main class="wrap">{body}</main>'
        f'<footer>ecoclassify report · schema {m["schema_version"]} · all numbers are also in metrics.json</footer>'
        "</body></html>\n"
    )


def _note_box(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<div class="note"><strong>Worth knowing</strong><ul>' + "".join(f"<li>{_e(n)}</li>" for n in notes) + \
        "</ul></div>"


def _summary(m: dict[str, Any], test: dict[str, Any]) -> str:
    labels = {key: (name, text) for key, name, text in SUMMARY}
    cards = []
    for key in CARDS:
        value = test.get(key)
        if value is None:
            continue
        name, text = labels[key]
        cards.append(f'<div class="card"><div class="v">{_e(format_value(key, value))}</div>'
                     f'<div class="k">{_e(name)}</div><div class="d">{_e(text)}</div></div>')
    rows = [[f"<td>{_e(name)}</td>", _cell(key, test.get(key), bar=key != "log_loss"),
             f'<td class="muted">{_e(text)}</td>']
            for key, name, text in SUMMARY if test.get(key) is not None or "top_" not in key]
    return (f'<p class="lead">How well the model labels the {test["n_images"]} images of this set.</p>'
            + _note_box(report_notes(m, test)) + '<div class="cards">' + "".join(cards) + "</div>"
            + "<h3>All summary metrics</h3>"
            + _table([("metric", False), ("value", True), ("meaning", False)], rows))


def _supported_cell(row: dict[str, Any]) -> str:
    if row["supported"]:
        return "<td>yes</td>"
    return f'<td class="na">{_e(row["note"] or "nothing auto-labelled")}</td>'


def _threshold_cells(row: dict[str, Any]) -> list[str]:
    if not row.get("reachable", True):
        return [_cell("n_images", row["n_images"]), f'<td class="na" colspan="7">{_e(row["note"])}</td>']
    return [_cell("n_images", row["n_images"]), _supported_cell(row), _cell("threshold", row.get("threshold")),
            _cell("n_auto_labelled", row["n_auto_labelled"]),
            _cell("share_auto_labelled", row["share_auto_labelled"], bar=True), _cell("precision", row["precision"]),
            _cell("precision_lower_bound", row["precision_lower_bound"]), _cell("recall", row["recall"])]


def _thresholds(test: dict[str, Any], images: dict[str, bytes]) -> str:
    th = test["thresholds"]
    headers = [("images considered", True), ("supported by the data", False), ("score threshold", True),
               ("images auto-labelled", True), ("share of all images", True), ("precision", True),
               ("95 % lower bound", True), ("recall", True)]
    overall = [[_cell("target_precision", r["target_precision"])] + _threshold_cells(r) for r in th["overall"]]
    parts = [
        '<p class="lead">To cut the work of checking images by hand, accept the model\'s label whenever its score '
        "reaches a threshold and check the rest. For each target precision, the lowest threshold that reaches it "
        "on this set (so the most images are labelled automatically), how many images that labels, and the recall "
        "there. The lower bound is how low the precision could really be, given how few images it rests on "
        f"({_e(BOUND_TEXT)}). A target whose lower bound falls below it is <strong>not supported by the data"
        "</strong>: the threshold met it on these images by luck as much as by merit, so do not rely on it. "
        f"Without a single error, supporting 0.95 takes {images_needed(0.95)} auto-labelled images and 0.99 takes "
        f"{images_needed(0.99)}.</p>",
        "<h3>One threshold for all classes</h3>",
        _table([("target precision", True)] + headers, overall),
        _figure(images, "thresholds", "Precision of the auto-labels and share of images labelled automatically, "
                "by score threshold. Dashed lines: the thresholds in the table.", "threshold curve"),
        "<h3>A threshold per class</h3>",
        '<p class="lead">An image predicted as a class is auto-labelled when its score reaches that class\'s '
        "threshold. Recall is the share of the class's images labelled automatically and correctly.</p>",
    ]
    for position, target in enumerate(th["targets"]):
        rows = [[f"<td>{_e(name)}</td>"] + _threshold_cells(per_target[position])
                for name, per_target in th["per_class"].items()]
        parts.append(f"<h3>Target precision {_e(format_value('target_precision', target))}</h3>")
        parts.append(_table([("class", False)] + headers, rows))
    combined = []
    for r in th["per_class_combined"]:
        unreachable = ", ".join(r["classes_unreachable"]) or "none"
        weak = ", ".join(r["classes_not_supported"]) or "none"
        combined.append([_cell("target_precision", r["target_precision"]), _cell("n_images", r["n_images"]),
                         _supported_cell(r), _cell("n_auto_labelled", r["n_auto_labelled"]),
                         _cell("share_auto_labelled", r["share_auto_labelled"], bar=True),
                         _cell("precision", r["precision"]), _cell("precision_lower_bound", r["precision_lower_bound"]),
                         _cell("recall", r["recall"]), f"<td>{_e(unreachable)}</td>", f"<td>{_e(weak)}</td>"])
    parts.append("<h3>All per-class thresholds applied together</h3>")
    parts.append(_table([("target precision", True), ("images considered", True), ("supported by the data", False),
                         ("images auto-labelled", True), ("share of all images", True), ("precision", True),
                         ("95 % lower bound", True), ("recall", True), ("never auto-labelled (target unreachable)", False),
                         ("own threshold not supported by the data", False)], combined))
    return "".join(parts)


def _per_class(test: dict[str, Any], images: dict[str, bytes]) -> str:
    rows = []
    for r in test["per_class"]:
        name = r["class"] + ("" if r["predictable"] else " (not a model class)")
        rows.append([f"<td>{_e(name)}</td>", _cell("support", r["support"]), _cell("n_predicted", r["n_predicted"]),
                     _cell("precision", r["precision"], True), _cell("recall", r["recall"], True),
                     _cell("f1", r["f1"], True), _cell("average_precision", r["average_precision"], True)])
    return ('<p class="lead">Precision: of the images given this label, the share that are right. Recall: of the '
            "images of this class, the share found. Average precision summarises the precision-recall curve.</p>"
            + _table([("class", False), ("images", True), ("predicted", True), ("precision", True), ("recall", True),
                      ("F1", True), ("average precision", True)], rows)
            + _figure(images, "pr_curves", "Precision-recall curve of each class against all others; the area "
                      "under each is its average precision.", "precision-recall curves"))


def _matrix_table(labels: list[str], matrix: list[list[Any]], key: str, shade: list[list[Any]]) -> str:
    head = "<th></th>" + "".join(f"<th>{_e(name)}</th>" for name in labels)
    body = []
    for name, row, shares in zip(labels, matrix, shade):
        cells = []
        for value, share in zip(row, shares):
            alpha = 0.0 if share is None else 0.08 + 0.8 * share
            colour = "#fff" if share is not None and share > 0.55 else "inherit"
            style = f"background:rgba(47,111,94,{alpha:.2f});color:{colour}" if value else ""
            text = format_value(key, value) if value else ('<span class="muted">0</span>' if key == "counts" else "")
            cells.append(f'<td style="{style}">{text if not value else _e(text)}</td>')
        body.append(f'<tr><th class="row">{_e(name)}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="cm"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _confusion(test: dict[str, Any], images: dict[str, bytes]) -> str:
    cm = test["confusion_matrix"]
    return ('<p class="lead">Rows are the true labels, columns the labels the model gave. The diagonal holds the '
            "correct labels; a dark cell off the diagonal is a pair of classes the model confuses.</p>"
            + _figure(images, "confusion_matrix", "Colour: share of each true class; numbers: image counts.",
                      "confusion matrix")
            + "<h3>Counts (rows: true label, columns: predicted label)</h3>"
            + _matrix_table(cm["labels"], cm["counts"], "counts", cm["normalized"])
            + "<details><summary>Row shares (each row sums to 100 %)</summary>"
            + _matrix_table(cm["labels"], cm["normalized"], "normalized", cm["normalized"]) + "</details>")


def _calibration(test: dict[str, Any], images: dict[str, bytes]) -> str:
    cal = test["calibration"]
    rows = [[f"<td>{_e(format_value('lower', b['lower']))} – {_e(format_value('upper', b['upper']))}</td>",
             _cell("n_images", b["n_images"]), _cell("confidence", b["confidence"]), _cell("accuracy", b["accuracy"])]
            for b in cal["bins"]]
    return (f'<p class="lead">A calibrated model that gives a score of 0.8 is right 80 % of the time. Expected '
            f"calibration error: {_e(format_value('ece', cal['ece']))} over {cal['n_bins']} equal-width bins of "
            "the top score. Where a bar ends below its red mark the model is over-confident (its scores promise "
            "more than it delivers, so thresholds must be higher); above it, under-confident.</p>"
            + _figure(images, "reliability", "Reliability diagram: accuracy of the images in each confidence bin.",
                      "reliability diagram")
            + f"<details><summary>The {cal['n_bins']} bins</summary>"
            + _table([("confidence bin", False), ("images", True), ("mean confidence", True), ("accuracy", True)], rows)
            + "</details>")


def _groups(test: dict[str, Any], images: dict[str, bytes], config: Any = None) -> str:
    parts = ['<p class="lead">The main metrics for each site or camera: how well the model transfers from one '
             "place to another.</p>"]
    for column, rows in test["groups"].items():
        table_rows = [[f"<td>{_e(r['group'])}</td>", _cell("n_images", r["n_images"]),
                       _cell("n_classes", r["n_classes"]), _cell("accuracy", r["accuracy"], True),
                       _cell("balanced_accuracy", r["balanced_accuracy"], True), _cell("macro_f1", r["macro_f1"], True),
                       _cell("mAP", r["mAP"], True)] for r in rows]
        parts.append(f"<h3>By {_e(column)}</h3>")
        parts.append(_table([(column, False), ("images", True), ("classes", True), ("accuracy", True),
                             ("balanced accuracy", True), ("macro-F1", True), ("mAP", True)], table_rows))
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(column))[:60]
        parts.append(_figure(images, f"groups_{slug}", f"Accuracy and macro-F1 per {column}.", f"metrics per {column}"))
    group_by = getattr(getattr(getattr(config, "data", None), "split", None), "group_by", None)
    for column, reason in test.get("groups_skipped", {}).items():
        name = f"group (the split's group_by: {group_by})" if column == "group" and group_by else column
        parts.append(f'<p class="muted">No table by {_e(name)}: {_e(reason)}.</p>')
    return "".join(parts)


def _data(m: dict[str, Any], context: ReportContext) -> str:
    parts = []
    table = context.split_table
    if not table.empty:
        headers = [("class", False)] + [(str(c), True) for c in table.columns]
        rows = [[f"<td>{_e(index)}</td>"] + [_cell("count", int(v)) for v in row] for index, row in table.iterrows()]
        parts += ["<h3>Images per class and split</h3>", _table(headers, rows)]
    facts = [(k, v) for k, v in m.items() if k in ("model", "data", "unknown_labels", "skipped_files")]
    if facts:
        rows = [[f"<td>{_e(k.replace('_', ' '))}</td>", f"<td>{_e(_plain(v))}</td>"] for k, v in facts]
        parts += ["<h3>Source</h3>", _table([("", False), ("", False)], rows)]
    excluded = context.excluded
    if len(excluded):
        shown = excluded.head(100)
        rows = [[f"<td>{_e(r.filepath)}</td>", f"<td>{_e(getattr(r, 'label', ''))}</td>",
                 f"<td>{_e(r.error)}</td>", f"<td>{_e(r.detail)}</td>"] for r in shown.itertuples(index=False)]
        more = f" (first 100 of {len(excluded)}; all in excluded.csv)" if len(excluded) > 100 else ""
        parts += [f"<h3>Unreadable images, left out{_e(more)}</h3>",
                  _table([("file", False), ("label", False), ("reason", False), ("detail", False)], rows)]
    files = m.get("files", {})
    parts.append('<h3>Files of this report</h3><p class="muted">' + _e(", ".join(sorted(set(files.values()))))
                 + "</p>")
    return "".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{str(k).replace('_', ' ')}: {_plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _model(m: dict[str, Any], context: ReportContext) -> str:
    parts = []
    facts = [(label, m[key]) for key, label in (("epochs", "epochs trained"), ("monitor", "monitored metric"),
                                                ("best_monitor_value", "best monitored value")) if key in m]
    rows = [[f"<td>{_e(label)}</td>", f"<td>{_e(format_value(label, value))}</td>"] for label, value in facts]
    rows += [[f"<td>{_e(k)}</td>", f"<td>{_e(v)}</td>"] for k, v in config_summary(context.config)]
    if "classes" in m:
        rows.append(["<td>classes</td>", f"<td>{_e(', '.join(map(str, m['classes'])))}</td>"])
    if m.get("versions"):
        rows.append(["<td>report made with</td>",
                     f"<td>{_e(', '.join(f'{k} {v}' for k, v in m['versions'].items()))}</td>"])
    if rows:
        parts.append(_table([("setting", False), ("value", False)], rows))
    parts.append(_figure(context.images, "training_curves", "Loss, accuracy and macro-F1 per epoch; the dashed line "
                         "marks the epoch whose model was kept.", "training curves"))
    if context.config is not None:
        parts.append("<details><summary>Full resolved config (config.yaml)</summary><pre>"
                     + _e(context.config.to_yaml()) + "</pre></details>")
    return "".join(parts) or '<p class="muted">No training information available.</p>'


def _glossary(m: dict[str, Any]) -> str:
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(text[0].upper() + text[1:])}.</dd>" for _, name, text in SUMMARY)
    extra = (
        "<dt>Precision, recall</dt><dd>Precision: of the images given a label, the share that are right. "
        "Recall: of the images of a class, the share given its label.</dd>"
        "<dt>Auto-labelling threshold</dt><dd>Images whose top score reaches it keep the model's label without "
        "being checked. The threshold is chosen on this set; on new sites precision can be lower, so check a "
        "sample of auto-labelled images there.</dd>"
        f"<dt>95 % lower bound</dt><dd>{_e(BOUND_TEXT[0].upper() + BOUND_TEXT[1:])} of the precision: with 95 % "
        "confidence the true precision of the auto-labels is at least this high. With few auto-labelled images it is "
        "far below the measured precision; a target above it is not supported by the data.</dd>")
    return f'<dl class="glossary">{items}{extra}</dl>'
