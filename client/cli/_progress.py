"""A minimal progress bar on stderr, redrawn in place; silent unless stderr is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from ._format import human_bytes

WIDTH = 24
REDRAW_EVERY = 0.1  # seconds: often enough to look alive, rarely enough to cost nothing


class ProgressBar:
    """``label [#########---------]  45%  4.5 MiB / 10.0 MiB``; without a total, just the count.

    ``update(done, total)`` may be called as often as wanted (it has the signature of
    the client's ``progress=`` callbacks); ``close()`` ends the line.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "bytes",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.clock = clock
        self.done = 0
        self.total: int | None = None
        self._drawn_at: float | None = None
        self._width = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total
        if not self.enabled:
            return
        now = self.clock()
        finished = total is not None and done >= total
        if self._drawn_at is not None and now - self._drawn_at < REDRAW_EVERY and not finished:
            return
        self._drawn_at = now
        self._draw(self.render())

    def render(self) -> str:
        amount = self._amount(self.done)
        if not self.total:
            return f"{self.label}  {amount}"
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        return f"{self.label} [{bar}] {fraction:4.0%}  {amount} / {self._amount(self.total)}"

    def close(self) -> None:
        """Draw the final state and end the line (only if anything was drawn)."""
        if self.enabled and self._drawn_at is not None:
            self._draw(self.render())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn_at = None

    def _amount(self, count: int) -> str:
        return human_bytes(count) if self.unit == "bytes" else f"{count} {self.unit}"

    def _draw(self, text: str) -> None:
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
