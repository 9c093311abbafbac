"""A process-wide budget of pixels being decoded at once, shared by every decoding thread.

Peak memory while decoding grows with the pixels decoded at the same time, not with the
number of files: see :class:`PixelBudget`. :func:`ecoclassify.data.images.load_rgb` holds
:data:`DECODE_BUDGET` while it decodes.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator

import numpy as np

from ecoclassify.errors import ConfigError

#: Pixels all threads together may hold decoded at once (see :class:`PixelBudget`).
DEFAULT_DECODE_PIXEL_BUDGET = 150_000_000


class PixelBudget:
    """Lets threads decode at most ``limit`` pixels at once, so peak memory does not grow with threads.

    A full decode costs several bytes per pixel, several times over (decoded buffer, RGB copy,
    rotation, resize): four near-cap 120-megapixel PNGs decoded by four threads needed over
    6 GB. Each decode reserves its pixel count (after JPEG draft scaling) and waits while the
    reservations of other threads would exceed the budget; an image larger than the whole budget
    still decodes, alone. Waiting threads are served first come, first served, so a large image
    is not starved by a stream of small ones.

    Attributes:
        limit: The budget in pixels.
        in_use: Pixels reserved right now.
        peak: Most pixels reserved at once since creation or :meth:`reset_peak`.
    """

    def __init__(self, limit: int) -> None:
        self._cond = threading.Condition()
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._queue: collections.deque[object] = collections.deque()  # waiting decodes, oldest first

    def set_limit(self, limit: int) -> None:
        """Change the budget; waiting threads re-check at once."""
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def reset_peak(self) -> None:
        """Start measuring ``peak`` afresh."""
        with self._cond:
            self.peak = self.in_use

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Reserve ``pixels`` for the duration of the block, waiting for room if needed."""
        with self._cond:
            need = min(pixels, self.limit)
            token = object()
            self._queue.append(token)
            try:
                self._cond.wait_for(lambda: self._queue[0] is token
                                    and (self.in_use == 0 or self.in_use + need <= self.limit))
            finally:  # also when the wait is interrupted (Ctrl-C): never block the queue behind us
                self._queue.remove(token)
                self._cond.notify_all()  # the next in the queue may fit as well
            self.in_use += need
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= need
                self._cond.notify_all()


DECODE_BUDGET = PixelBudget(DEFAULT_DECODE_PIXEL_BUDGET)


def set_decode_pixel_budget(pixels: int) -> None:
    """Change how many pixels all threads together may decode at once (default 150 million).

    Raises:
        ConfigError: ``pixels`` is not a positive integer.
    """
    if isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) or pixels < 1:
        raise ConfigError(f"the decode pixel budget must be a positive integer. Received: {pixels!r}")
    DECODE_BUDGET.set_limit(int(pixels))
