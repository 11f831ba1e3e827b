"""A piano roll in the terminal: pitch up, time right, velocity as shade, bar lines.

Two resolutions, picked to fit the widget:

* the pitch range fits the height: one semitone per row, a cell shows the loudest note sounding
  in it as ░ ▒ ▓ █ (soft to loud), readable without colour;
* it does not: half blocks, two pitch bands per row (▀ the upper, ▄ the lower, both as ▀ with the
  lower band's colour behind it), velocity as brightness. Bands widen beyond a semitone only when
  even twice the height cannot hold the range.

Bar lines (│) are drawn from the file's downbeats where no note sounds. Works with any PrettyMIDI,
generated previews and real files alike; ``roll_lines`` is the pure part, the widget just sizes it.
"""

from __future__ import annotations

import math

import pretty_midi
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

SHADES = "░▒▓█"
NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LABEL_WIDTH = 4
"""Columns of the pitch label before the roll."""


def note_name(pitch: int) -> str:
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


def velocity_colour(velocity: int) -> str:
    """Brighter for louder: a warm ramp from dim amber (pp) to near white (ff)."""
    x = max(0, min(127, velocity)) / 127
    return f"rgb({int(110 + 145 * x)},{int(70 + 170 * x)},{int(20 + 200 * x * x)})"


def _grid(
    notes: list[pretty_midi.Note], lo: int, per_band: int, bands: int, cols: int, dt: float
) -> list[list[int]]:
    """Loudest velocity per (band, column); band 0 is the lowest pitches."""
    grid = [[0] * cols for _ in range(bands)]
    for n in notes:
        band = grid[(n.pitch - lo) // per_band]
        c0 = min(cols - 1, int(n.start / dt))
        c1 = max(c0, min(cols - 1, math.ceil(n.end / dt) - 1))
        for c in range(c0, c1 + 1):
            band[c] = max(band[c], n.velocity)
    return grid


def _bar_columns(midi: pretty_midi.PrettyMIDI, cols: int, dt: float) -> set[int]:
    try:
        return {min(cols - 1, int(t / dt)) for t in midi.get_downbeats()}
    except Exception:  # an odd time-signature map: no bar lines, the notes still show
        return set()


def roll_lines(midi: pretty_midi.PrettyMIDI | None, width: int, height: int) -> list[Text]:
    """The roll as at most ``height`` lines of ``width`` cells, a pitch label column included."""
    notes = [n for i in (midi.instruments if midi else []) if not i.is_drum for n in i.notes]
    if not notes or width < LABEL_WIDTH + 4 or height < 2:
        return [Text("no notes", style="dim")]
    cols = width - LABEL_WIDTH
    lo = min(n.pitch for n in notes)
    span = max(n.pitch for n in notes) - lo + 1
    end = max(n.end for n in notes)
    dt = end / cols if end > 0 else 1.0
    bars = _bar_columns(midi, cols, dt)
    if span <= height:
        return _shade_lines(_grid(notes, lo, 1, span, cols, dt), lo, bars)
    per_band = math.ceil(span / (2 * height))
    bands = math.ceil(span / per_band)
    return _half_block_lines(_grid(notes, lo, per_band, bands, cols, dt), lo, per_band, bars)


def _shade_lines(grid: list[list[int]], lo: int, bars: set[int]) -> list[Text]:
    lines = []
    for band in range(len(grid) - 1, -1, -1):  # highest pitch on top
        line = Text(f"{note_name(lo + band):>3} ", style="dim")
        for c, v in enumerate(grid[band]):
            if v:
                line.append(SHADES[min(3, v * 4 // 128)], style="bold" if v >= 96 else "")
            else:
                line.append("│" if c in bars else " ", style="dim" if c in bars else "")
        lines.append(line)
    return lines


def _half_block_lines(grid: list[list[int]], lo: int, per_band: int, bars: set[int]) -> list[Text]:
    cols = len(grid[0])
    empty = [0] * cols
    rows = math.ceil(len(grid) / 2)
    lines = []
    for r in range(rows - 1, -1, -1):
        low = grid[2 * r]
        high = grid[2 * r + 1] if 2 * r + 1 < len(grid) else empty
        line = Text(f"{note_name(lo + 2 * r * per_band):>3} ", style="dim")
        for c in range(cols):
            up, down = high[c], low[c]
            if up and down:
                style = Style.parse(f"{velocity_colour(up)} on {velocity_colour(down)}")
                line.append("▀", style=style)
            elif up:
                line.append("▀", style=velocity_colour(up))
            elif down:
                line.append("▄", style=velocity_colour(down))
            else:
                line.append("│" if c in bars else " ", style="dim" if c in bars else "")
        lines.append(line)
    return lines


class PianoRoll(Widget):
    """Shows one PrettyMIDI; redraws to fit its size."""

    DEFAULT_CSS = "PianoRoll { width: 1fr; height: 1fr; border: round $primary-darken-2; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.midi: pretty_midi.PrettyMIDI | None = None

    def show(self, midi: pretty_midi.PrettyMIDI | None) -> None:
        self.midi = midi
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        return Text("\n").join(roll_lines(self.midi, width, height))
