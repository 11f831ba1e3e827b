"""The one way podium writes a number of bytes and a count, for the CLI and the dashboard alike.

Bytes use binary units with IEC names (1 MiB = 2**20 bytes): GPU memory is binary (an "80 GB"
card is 80 GiB, as nvidia-smi and ``podium gpus`` report it), and one base for checkpoints and
RAM too means no column or log line mixes them. Counts use SI suffixes with "B" for billions
(``4.2M params``, ``7.0B``). A reading that is missing or not finite shows as "–".
"""

from __future__ import annotations

import math

DASH = "–"

BINARY_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"), (1, "B"))


def _scaled(value: float) -> str:
    """Three significant digits at most: ``4.2``, ``23.5``, ``300``."""
    return f"{value:.1f}" if round(value, 1) < 100 else f"{value:.0f}"


def size(n_bytes: float | None) -> str:
    """A number of bytes: ``512 B``, ``4.2 MiB``, ``23.5 GiB``, ``300 MiB`` (binary units)."""
    if n_bytes is None or not math.isfinite(n_bytes) or n_bytes < 0:
        return DASH
    for div, unit in BINARY_UNITS:
        if n_bytes >= div:
            return f"{int(n_bytes)} B" if div == 1 else f"{_scaled(n_bytes / div)} {unit}"
    return "0 B"


_SI_COUNTS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def count(n: float | None, unit: str = "") -> str:
    """A count with an SI suffix: ``950``, ``12.3k``, ``4.2M params``, ``7.0B params``."""
    if n is None or not math.isfinite(n):
        text = DASH
    elif abs(n) < 1e3:
        text = f"{n:,.0f}"
    else:
        div, suffix = next((d, s) for d, s in _SI_COUNTS if abs(n) >= d)
        text = ("-" if n < 0 else "") + _scaled(abs(n) / div) + suffix
    return f"{text} {unit}" if unit else text
