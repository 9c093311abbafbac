"""``ecoclassify validate``: check a config and its data without training."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from ecoclassify.config import Config, load_config
from ecoclassify.data.prepare import PreparedData, prepare_data
from ecoclassify.data.sources import REFUSED_REASONS
from ecoclassify.run import check_output_dir


def validate(config: Union[Config, str, Path], progress: Optional[Callable[[int, int], None]] = None) -> PreparedData:
    """Validate the config, then read, scan and split its data exactly as training would.

    Args:
        config: A validated :class:`Config` or the path of a YAML config.
        progress: Called as ``progress(advance, total)`` while files are scanned.

    Returns:
        The prepared data: per-class counts per split, exclusions with reasons, duplicates,
        leaks, warnings, and ``errors`` (empty when training could start).

    Raises:
        ConfigError: The config is invalid, or ``experiment.output_dir`` cannot hold run folders.
        DataError: The data source itself cannot be read.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    check_output_dir(config.experiment.output_dir)  # training would fail there only after the scan
    return prepare_data(config, progress=progress)


def format_validation(prepared: PreparedData) -> str:
    """A plain-text report of :func:`validate`'s result, for the terminal."""
    lines = [f"data root: {prepared.root}", ""]
    counts = prepared.counts()
    if not counts.empty:
        lines += ["images per class and split:", counts.to_string(), ""]
    lines.append(f"usable images: {len(prepared.samples)}; classes: {len(prepared.classes)}")
    refused = prepared.excluded["error"].isin(REFUSED_REASONS)
    for title, rows in (("images left out unopened", prepared.excluded[refused]),
                        ("unreadable images", prepared.excluded[~refused])):
        if len(rows):
            lines.append(f"{title} ({len(rows)}):")
            for row in rows.itertuples(index=False):
                lines.append(f"  {row.filepath}: {row.error} - {row.detail}")
    if prepared.skipped:
        lines.append(f"files skipped ({len(prepared.skipped)}), e.g.: "
                     + "; ".join(f"{p} ({r})" for p, r in prepared.skipped[:5]))
    if len(prepared.duplicates):
        lines.append(f"byte-identical images ({len(prepared.duplicates)}):")
        for sha1, group in prepared.duplicates.groupby("sha1", sort=False):
            lines.append("  " + " = ".join(group["filepath"]))
    for warning in prepared.warnings:
        lines.append(f"warning: {warning}")
    for error in prepared.errors:
        lines.append(f"error: {error}")
    lines.append("")
    lines.append("OK: training can start." if prepared.ok else "NOT OK: training would fail (see errors above).")
    return "\n".join(lines)
