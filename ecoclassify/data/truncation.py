"""Pillow's ``LOAD_TRUNCATED_IMAGES`` is one flag for the whole process: strict and tolerant
decodes (``allow_truncated``) running in parallel threads take turns through one gate, so each
sees the flag it asked for, whatever another library set it to."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from PIL import ImageFile


class TruncationGate:
    """Many strict decodes at once, or one decode with LOAD_TRUNCATED_IMAGES switched on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._strict = 0  # decodes running with the flag off
        self._tolerant = False
        self._tolerant_waiting = 0
        self._previous = False

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        with self._cond:
            # Queued tolerant decodes go first, so a stream of strict ones cannot starve them.
            self._cond.wait_for(lambda: not (self._tolerant or self._tolerant_waiting))
            if not self._strict:
                # Other libraries switch the flag on for the whole process when imported (MegaDetector's
                # visualization_utils does): strict decodes must not inherit that.
                self._previous = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = False
            self._strict += 1
        try:
            yield
        finally:
            with self._cond:
                self._strict -= 1
                if not self._strict:
                    ImageFile.LOAD_TRUNCATED_IMAGES = self._previous
                self._cond.notify_all()

    @contextlib.contextmanager
    def tolerant(self) -> Iterator[None]:
        with self._cond:
            self._tolerant_waiting += 1
            self._cond.wait_for(lambda: not (self._tolerant or self._strict))
            self._tolerant_waiting -= 1
            self._tolerant = True
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
            with self._cond:
                self._tolerant = False
                self._cond.notify_all()


#: The one gate of the process: Pillow's flag is process-wide.
TRUNCATION_GATE = TruncationGate()
