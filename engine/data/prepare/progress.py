"""Progress of ``podium prepare``: a bar with files/s and ETA on a terminal, plain lines
otherwise (a log file, CI, a pipe), so a 176k-file run says how far it is either way."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 28
TTY_EVERY = 0.1
"""Seconds between redraws of the bar."""
LINE_EVERY = 5.0
"""Seconds between plain lines (and one at every tenth of the work)."""


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts files done out of ``total`` and draws them to ``stream``."""

    def __init__(self, total: int, stream: TextIO | None = None, *, tty: bool | None = None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self.skipped = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._last_tenth = -1

    def rate(self) -> float:
        """Files per second so far."""
        return self.done / max(time.monotonic() - self._start, 1e-9)

    def line(self) -> str:
        """The current state in words: ``120/400 files (30%), 2 skipped, 35.2 files/s, ETA 0:08``."""
        rate = self.rate()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.done}/{self.total} files ({pct:.0f}%), {self.skipped} skipped, "
            f"{rate:.1f} files/s, ETA {_clock(eta)}"
        )

    def advance(self, *, skipped: bool = False) -> None:
        self.done += 1
        self.skipped += int(skipped)
        now = time.monotonic()
        if self.tty:
            if now - self._last >= TTY_EVERY or self.done == self.total:
                filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.stream.write(f"\rpodium: prepare [{bar}] {self.line()}\x1b[K")
                self.stream.flush()
                self._last = now
            return
        tenth = int(10 * self.done / self.total) if self.total else 10
        if now - self._last >= LINE_EVERY or tenth != self._last_tenth:
            self.stream.write(f"podium: prepare: {self.line()}\n")
            self.stream.flush()
            self._last, self._last_tenth = now, tenth

    def close(self) -> None:
        """End the bar's line (the plain mode has nothing to end)."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
