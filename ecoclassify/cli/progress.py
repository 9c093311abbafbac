"""The command line's progress bar for library functions that report ``progress(advance, total)``."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional

import click


def quiet_requested() -> bool:
    """Whether the running command was started with ``ecoclassify --quiet`` (no bars, no progress
    messages); false outside a command."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("quiet"))


class ProgressBar:
    """A click progress bar with a rate, opened on the first ``progress(advance, total)`` call.

    Library functions learn their total only after listing their inputs, so the bar cannot be
    created up front; used as a context manager it is closed however the work ends. Under
    ``ecoclassify --quiet`` no bar is drawn.

    Args:
        label: Shown before the bar.
        unit: Shown in the rate, e.g. ``img`` gives "12.3 img/s"; None shows no rate.
    """

    def __init__(self, label: str, unit: Optional[str] = "img") -> None:
        self.label = label
        self.unit = unit
        self.bar: Any = None
        self.done = 0
        self.closed = False
        # Decided here, in the command's thread: progress is often reported from worker threads,
        # which do not see click's context.
        self.quiet = quiet_requested()
        self.started = time.perf_counter()
        self._lock = threading.Lock()  # worker threads report at once; only one may open the bar

    def __call__(self, advance: int, total: int) -> None:
        with self._lock:
            self._advance(advance, total)

    def _advance(self, advance: int, total: int) -> None:
        if self.closed:
            return
        if self.bar is None:
            if total <= 0 or self.quiet:
                return
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True,
                                         show_eta=True, item_show_func=lambda text: text)
            self.bar.__enter__()
            self.started = time.perf_counter()
        self.done += advance
        elapsed = time.perf_counter() - self.started
        rate = f"{self.done / elapsed:.1f} {self.unit}/s" if self.unit and elapsed > 0 and self.done else None
        self.bar.update(advance, rate)
        if self.done >= total and not self.closed:  # end the line now: another bar or message may follow
            self.closed = True
            self.bar.__exit__(None, None, None)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self.bar is not None and not self.closed:
                self.closed = True
                self.bar.__exit__(*exc)
