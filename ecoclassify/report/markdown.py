"""The report as Markdown: the same numbers as the HTML page, for a terminal or a code forge."""

from __future__ import annotations

from typing import Any

from ecoclassify.report.context import SUMMARY, config_summary, format_value, report_notes
from ecoclassify.report.thresholds import BOUND_TEXT


def render_markdown(context: Any) -> str:
    """A short Markdown version of the report (a :class:`~ecoclassify.report.html.ReportContext`), images
    linked from the same folder, for a terminal or a code forge."""
    m, test = context.metrics, context.metrics["test"]
    lines = [f"# {m['title']}", "", f"{test['n_images']} images, {len(test['classes'])} classes; "
             f"created {m['created']}. Full report: report.html; all numbers: metrics.json.", ""]
    lines += [f"> {note}" for note in report_notes(m, test)] + [""]
    lines += ["## Summary", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {format_value(key, test.get(key))} |" for key, name, _ in SUMMARY
              if test.get(key) is not None]
    lines += ["", "## Auto-labelling thresholds (one threshold for all classes)", "",
              f"Lower bound: {BOUND_TEXT}. A target whose bound falls below it is not supported by the data.", "",
              "| target precision | supported | threshold | auto-labelled | share | precision | lower bound | recall |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [markdown_threshold_row(format_value('target_precision', r['target_precision']), r)
              for r in test["thresholds"]["overall"]]
    lines += ["", "## Auto-labelling thresholds per class", "",
              "| class | target precision | supported | threshold | auto-labelled | share | precision | lower bound "
              "| recall |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, per_target in test["thresholds"]["per_class"].items():
        lines += [markdown_threshold_row(f"{name} | {format_value('target_precision', r['target_precision'])}", r)
                  for r in per_target]
    lines += ["", "All thresholds: thresholds.csv.", "", "## Per class", "",
              "| class | images | predicted | precision | recall | F1 | AP |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in test["per_class"]:
        lines.append(f"| {r['class']} | {r['support']} | {r['n_predicted']} | {format_value('p', r['precision'])} | "
                     f"{format_value('r', r['recall'])} | {format_value('f', r['f1'])} | "
                     f"{format_value('ap', r['average_precision'])} |")
    for column, rows in test["groups"].items():
        lines += ["", f"## By {column}", "", f"| {column} | images | accuracy | macro-F1 | mAP |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['group']} | {r['n_images']} | {format_value('a', r['accuracy'])} | "
                  f"{format_value('f', r['macro_f1'])} | {format_value('m', r['mAP'])} |" for r in rows]
    summary = config_summary(context.config)
    if summary:
        lines += ["", "## Model and training", ""] + [f"- {key}: {value}" for key, value in summary]
    lines += ["", "## Plots", ""]
    files = m.get("files", {})
    for role in context.images:
        if f"plot_{role}" in files:
            lines += [f"![{role.replace('_', ' ')}]({files[f'plot_{role}']})", ""]
    return "\n".join(lines) + "\n"


def markdown_threshold_row(first: str, r: dict[str, Any]) -> str:
    """One Markdown table row of a threshold row (``first`` holds the leading cells, e.g. the target).

    A target not supported says so in the *supported* cell, with the note saying why.
    """
    if not r["supported"]:
        verdict = "**no**: " + r["note"]
        if not r["reachable"]:
            return f"| {first} | {verdict} |||||||"
    else:
        verdict = "yes"
    return (f"| {first} | {verdict} | {format_value('threshold', r['threshold'])} | {r['n_auto_labelled']} | "
            f"{format_value('share', r['share_auto_labelled'])} | {format_value('p', r['precision'])} | "
            f"{format_value('p', r['precision_lower_bound'])} | {format_value('r', r['recall'])} |")
