"""What a predict run did, for the terminal and the json outputs' metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PredictionSummary:
    """What happened, for the final report (``frame.attrs["summary"]``).

    Attributes:
        total: Rows in the output: image files found, read or not.
        ok: Files classified.
        failed: Files that could not be read; ``failed_by_reason`` counts them per reason.
        skipped: Entries passed over (hidden, not images, unsafe links, duplicates);
            ``skipped_by_reason`` counts them per reason.
        labels: Files per label, ``unknown`` included.
        sequences: Number of sequences, when sequences were formed.
        processed: Files decoded by this call; ``reused`` came from the checkpoint.
        changed: Files the checkpoint held that were read again because their size or
            modification time changed since (a card swapped for photos with the same names).
        seconds: Wall time of the decoding and classification.
        output: The file written, if any.
    """

    total: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    sequences: int | None = None
    processed: int = 0
    reused: int = 0
    changed: int = 0
    seconds: float = 0.0
    output: str | None = None

    @property
    def images_per_second(self) -> float:
        """Files decoded and classified per second by this call."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, ``images_per_second`` included."""
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}


def format_summary(summary: PredictionSummary) -> str:
    """A few lines for the terminal."""

    def counts(mapping: dict[str, int]) -> str:
        return ", ".join(f"{key} {value}" for key, value in mapping.items())

    line = f"{summary.total} images: {summary.ok} ok, {summary.failed} failed"
    if summary.failed:
        line += f" ({counts(summary.failed_by_reason)})"
    line += f"; {summary.skipped} other files skipped"
    if summary.skipped:
        line += f" ({counts(summary.skipped_by_reason)})"
    lines = [line]
    if summary.labels:
        lines.append(f"labels: {counts(summary.labels)}")
    if summary.sequences is not None:
        lines.append(f"sequences: {summary.sequences}")
    speed = f"{summary.images_per_second:.1f} images/s ({summary.processed} read in {summary.seconds:.1f} s"
    speed += f", {summary.reused} from the checkpoint)" if summary.reused else ")"
    lines.append(speed)
    if summary.changed:
        lines.append(f"{summary.changed} files had changed since the checkpoint (size or modification time) "
                     "and were read again")
    if summary.output:
        lines.append(f"wrote {summary.output}")
    return "\n".join(lines)
