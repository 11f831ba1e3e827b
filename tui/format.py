"""Number, size, duration and age formatting shared by the dashboard's widgets.

Every function returns a short string and never raises: a reading that is missing or not finite
shows as "–", so a half-started run renders without special cases.

One formatter per kind of quantity, so the same thing reads the same on every panel and in the
CLI: bytes through ``size`` (``size_pair`` for used/total), counts through ``count``; both live in
``podium.engine.units`` so the engine's log lines use them too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from podium.engine.units import BINARY_UNITS, DASH, count, size

__all__ = [
    "DASH",
    "count",
    "size",
]  # re-exported: the one formatter per quantity lives in the engine


clock: Callable[[], float] = time.time
"""The wall clock that ages and start dates are measured against (snapshot tests fix it)."""


def num(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, SI suffix above 10k (12.3k, 4.5M), scientific below 1e-3."""
    if value is None or not math.isfinite(value):
        return DASH if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 1e4:
        for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{value / div:.{max(digits, 2)}g}{suffix}"
    if a >= 10**digits:
        return f"{value:,.0f}"
    if a < 1e-3:
        return f"{value:.{max(digits - 2, 0)}e}"
    return f"{value:.{digits}g}"


def loss(value: float | None) -> str:
    """A loss with four significant digits (losses are compared by eye at that precision)."""
    return num(value, 4)


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.0f}%"


def mfu(value: float | None) -> str:
    """Model FLOPs utilisation (a fraction) as a percent with three significant digits
    ("38.2%", "0.41%"), or the dash where the run reports none (no known peak: a CPU)."""
    if value is None or not math.isfinite(value):
        return DASH
    return f"{num(100.0 * value, 3)}%"


def lr(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value:.2e}"


def size_pair(used: float | None, total: float | None) -> str:
    """Used of total bytes, both in the total's unit and to two digits (for narrow gauges):
    ``70/80 GiB``, ``0.5/80 GiB``, ``2.0/16 GiB``."""
    if total is None or not math.isfinite(total) or total < 0:
        return f"{size(used)}/{DASH}"
    if used is None or not math.isfinite(used):
        return f"{DASH}/{size(total)}"
    div, unit = next((d, u) for d, u in BINARY_UNITS if total >= d or d == 1)
    if div == 1:
        return f"{int(used)}/{int(total)} B"

    def short(value: float) -> str:
        return f"{value:.1f}" if round(value, 1) < 10 else f"{value:.0f}"

    return f"{short(used / div)}/{short(total / div)} {unit}"


def duration(seconds: float | None) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2d04h``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return DASH
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def short_duration(seconds: float) -> str:
    """A compact axis label: ``30s``, ``5m``, ``1h30``, ``2d``."""
    s = round(seconds)
    if abs(s) < 60:
        return f"{s}s"
    if abs(s) < 3600:
        m, rest = divmod(s, 60)
        return f"{m}m" if rest == 0 else f"{m}m{rest:02d}"
    if abs(s) < 86400:
        h, rest = divmod(s, 3600)
        return f"{h}h" if rest < 60 else f"{h}h{rest // 60:02d}"
    return f"{s / 86400:.3g}d"


def age(wall: float | None, now: float | None = None) -> str:
    """How long ago ``wall`` (a Unix time) was: ``12s``, ``5m``, ``3h``, ``2d``."""
    if wall is None or not math.isfinite(wall):
        return DASH
    dt = max(0.0, (clock() if now is None else now) - wall)
    if dt < 60:
        return f"{int(dt)}s"
    if dt < 3600:
        return f"{int(dt // 60)}m"
    if dt < 86400 * 2:
        return f"{int(dt // 3600)}h"
    return f"{int(dt // 86400)}d"


def started(wall: float | None, now: float | None = None) -> str:
    """A start time: ``14:03`` today, ``Mar 04 14:03`` otherwise."""
    if wall is None or not math.isfinite(wall):
        return DASH
    t = time.localtime(wall)
    today = time.localtime(clock() if now is None else now)
    if t[:3] == today[:3]:
        return time.strftime("%H:%M", t)
    return time.strftime("%b %d %H:%M", t)


def bar(fraction: float | None, width: int) -> str:
    """A block-character progress bar ``width`` cells wide (eighths of a cell resolution)."""
    if width <= 0:
        return ""
    if fraction is None or not math.isfinite(fraction):
        return "░" * width
    f = min(max(fraction, 0.0), 1.0)
    eighths = round(f * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    rest = width - full - (1 if partial else 0)
    return "█" * full + partial + "░" * rest
