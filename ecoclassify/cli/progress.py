"""The command line's progress bar for library functions that report ``progress(advance, total)``."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import click


class ProgressBar:
    """A click progress bar with a rate, opened on the first ``progress(advance, total)`` call.

    Library functions learn their total only after listing their inputs, so the bar cannot be
    created up front; used as a context manager it is closed however the work ends.

    Args:
        label: Shown before the bar.
        unit: Shown in the rate, e.g. ``img`` gives "12.3 img/s"; None shows no rate.
    """

    def __init__(self, label: str, unit: Optional[str] = "img") -> None:
        self.label = label
        self.unit = unit
        self.bar: Any = None
        self.done = 0
        self.started = time.perf_counter()

    def __call__(self, advance: int, total: int) -> None:
        if self.bar is None:
            if total <= 0:
                return
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True,
                                         show_eta=True, item_show_func=lambda text: text)
            self.bar.__enter__()
            self.started = time.perf_counter()
        self.done += advance
        elapsed = time.perf_counter() - self.started
        rate = f"{self.done / elapsed:.1f} {self.unit}/s" if self.unit and elapsed > 0 and self.done else None
        self.bar.update(advance, rate)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
