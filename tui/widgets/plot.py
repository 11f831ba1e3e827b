"""A braille line plot: several coloured series on shared axes, with tick labels.

Each terminal cell holds a 2x4 grid of braille dots, so a 60x12-cell plot draws 120x48 points:
enough to see a loss curve's shape at 80x24. The drawing is a pure function (``draw_plot``) from
series to rows of ``(text, role, colour)`` runs, which the ``LinePlot`` widget turns into Rich
Strips once per data change and caches per size (``render_line`` only indexes the cache).

Colour is one per series. With NO_COLOR, Textual turns colours to grey, so a series that has a
``glyph`` is drawn with that character instead of braille dots (one per cell its line crosses):
every head of the all-heads plot keeps its own shape, and the legend shows the same characters.
In colour, sparse series (validation) are drawn with bigger dots (``markers``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from podium.tui import format as fmt

Run = tuple[str, str, str | None]
"""A run of text on one row: (text, role, colour). Roles: "axis", "tick", "plot", "note"."""

# Braille dot bits by (row 0..3, column 0..1) inside a cell (Unicode braille patterns, U+2800).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
_BRAILLE = 0x2800


@dataclass(frozen=True)
class PlotSeries:
    """One line on a plot. ``xs`` and ``ys`` have the same length; non-finite ys break the line."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str
    markers: bool = False
    """Draw each point as a 2x2 dot block too: for sparse series such as validation losses."""
    glyph: str | None = None
    """The character that draws this series without colour (``mono``); None: braille dots."""


def nice_step(span: float, n: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``n`` intervals."""
    raw = span / max(n, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    # The candidate nearest to the raw step on a log scale, so the count stays close to ``n``.
    return min((m * mag for m in (1, 2, 2.5, 5, 10)), key=lambda c: abs(math.log(c / raw)))


def linear_ticks(
    lo: float, hi: float, n: int, *, min_step: float = 0.0
) -> tuple[list[float], float]:
    step = max(nice_step(hi - lo, n), min_step)
    if min_step >= 1 and step != int(step):
        step = float(round(step))  # whole steps: 2.5 becomes 2
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)], step


def log_ticks(lo: float, hi: float, n: int) -> list[float]:
    """Ticks in log10 space: powers of ten, with 2x and 5x between them when the range is short."""
    decades = list(range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1))
    if len(decades) > n:
        stride = math.ceil(len(decades) / n)
        return [float(d) for d in decades if d % stride == 0]
    ticks = [float(d) for d in decades]
    if len(ticks) < 3:
        extra = [
            math.log10(m) + d
            for d in range(math.floor(lo) - 1, math.ceil(hi) + 1)
            for m in (2, 5)
            if lo <= math.log10(m) + d <= hi
        ]
        ticks = sorted(ticks + extra)
    if len(ticks) < 2:
        values, _ = linear_ticks(10**lo, 10**hi, n)
        ticks = [math.log10(v) for v in values if v > 0 and lo <= math.log10(v) <= hi]
    return ticks


def tick_label(value: float, step: float) -> str:
    """A label precise enough to tell neighbouring ticks ``step`` apart, and no more."""
    if abs(value) >= 1e4:
        return fmt.num(value, 3)
    if step >= 1 and abs(value - round(value)) < 1e-9:
        return str(round(value))
    decimals = max(0, -math.floor(math.log10(step) + 1e-12)) if step > 0 else 2
    if step > 0 and round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5:
        decimals += 1
    return f"{value:.{min(decimals, 6)}f}"


def log_label(value: float) -> str:
    """A log-axis tick: ``0.01``, ``5``, ``10k``, ``1e-4`` (ticks are 1, 2 or 5 times 10^k)."""
    if 1e-3 <= value < 1e4:
        return f"{value:.3g}"
    if value >= 1e4:
        return fmt.num(value, 3)
    exp = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10**exp
    return f"{mantissa:.0f}e{exp}" if abs(mantissa - round(mantissa)) < 1e-6 else f"{value:.1e}"


def default_x_label(value: float, step: float) -> str:
    return tick_label(value, step)


def _finite(v: float) -> bool:
    return v == v and v not in (math.inf, -math.inf)


def draw_plot(
    series: Sequence[PlotSeries],
    width: int,
    height: int,
    *,
    log_y: bool = False,
    x_label: Callable[[float, float], str] = default_x_label,
    x_min_step: float = 0.0,
    empty: str = "no data yet",
    mono: bool = False,
) -> list[list[Run]]:
    """Draw ``series`` into ``height`` rows of ``width`` cells: y labels, braille area, x axis.

    Args:
        series: drawn in order; where two series share a cell, the later one's colour shows.
        mono: no colour to tell series apart: a series with a ``glyph`` marks each cell its
            line crosses with that character (later series win shared cells, as in colour).
        log_y: plot log10 of the values (non-positive values are left out).
        x_label: formats an x tick value given the tick step (steps, or elapsed seconds).
        x_min_step: the smallest x tick interval (1 for steps: no fractional steps).
        empty: the note shown when no series has a drawable point.
    """
    if width <= 0 or height <= 0:
        return []
    pts: list[tuple[PlotSeries, list[tuple[float, float | None]]]] = []
    ys_all: list[float] = []
    xs_all: list[float] = []
    for s in series:
        row: list[tuple[float, float | None]] = []
        for x, y in zip(s.xs, s.ys, strict=False):
            if not _finite(x):
                continue
            if log_y:
                y = math.log10(y) if _finite(y) and y > 0 else math.nan
            if _finite(y):
                row.append((x, y))
                ys_all.append(y)
                xs_all.append(x)
            else:
                row.append((x, None))
        pts.append((s, row))
    if not ys_all:
        return _note_rows(width, height, empty)

    lo, hi = min(ys_all), max(ys_all)
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.1 or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    else:
        lo, hi = lo - span * 0.04, hi + span * 0.04
    plot_h = height - 2
    n_y = max(2, min(6, plot_h // 3))
    if log_y:
        yticks = log_ticks(lo, hi, n_y)
        ylabels = [log_label(10**t) for t in yticks]
    else:
        yticks, ystep = linear_ticks(lo, hi, n_y)
        ylabels = [tick_label(t, ystep) for t in yticks]
    gutter = max((len(label) for label in ylabels), default=1) + 1
    plot_w = width - gutter
    if plot_w < 4 or plot_h < 2:
        return _note_rows(width, height, "too small")

    x0, x1 = min(xs_all), max(xs_all)
    if x1 <= x0:
        x1 = x0 + 1.0
    pw, ph = plot_w * 2, plot_h * 4
    bits = [0] * (plot_w * plot_h)
    colors: list[int] = [-1] * (plot_w * plot_h)
    marked = [False] * (plot_w * plot_h)  # last drawn by a glyph series: shows its glyph
    glyph_of = [s.glyph if mono else None for s, _ in pts]

    def px_of(x: float) -> int:
        return round((x - x0) / (x1 - x0) * (pw - 1))

    def py_of(y: float) -> int:
        return round((hi - y) / (hi - lo) * (ph - 1))

    def dot(px: int, py: int, ci: int) -> None:
        if 0 <= px < pw and 0 <= py < ph:
            cell = (py >> 2) * plot_w + (px >> 1)
            if glyph_of[ci] is None:
                bits[cell] |= _DOTS[py & 3][px & 1]
                marked[cell] = False
            else:
                marked[cell] = True
            colors[cell] = ci

    def line(ax: int, ay: int, bx: int, by: int, ci: int) -> None:
        dx, dy = abs(bx - ax), -abs(by - ay)
        sx, sy = (1 if ax < bx else -1), (1 if ay < by else -1)
        err = dx + dy
        while True:
            dot(ax, ay, ci)
            if ax == bx and ay == by:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                ax += sx
            if e2 <= dx:
                err += dx
                ay += sy

    palette = [s.color for s, _ in pts]
    for ci, (s, row) in enumerate(pts):
        prev: tuple[int, int] | None = None
        for x, y in row:
            if y is None:
                prev = None
                continue
            cur = (px_of(x), py_of(y))
            if prev is None:
                dot(*cur, ci)
            elif prev != cur:
                line(*prev, *cur, ci)
            if s.markers and glyph_of[ci] is None:
                for ddx in (0, 1):
                    for ddy in (-1, 0, 1):
                        dot(cur[0] + ddx, cur[1] + ddy, ci)
            prev = cur

    tick_rows: dict[int, str] = {}
    for t, label in zip(yticks, ylabels, strict=True):
        r = py_of(t) >> 2
        if 0 <= r < plot_h and r not in tick_rows:
            tick_rows[r] = label

    rows: list[list[Run]] = []
    for r in range(plot_h):
        label = tick_rows.get(r)
        runs: list[Run] = []
        if label is None:
            runs.append((" " * (gutter - 1) + "│", "axis", None))
        else:
            runs.append((label.rjust(gutter - 1), "tick", None))
            runs.append(("┤", "axis", None))
        base = r * plot_w
        text: list[str] = []
        cur_color = -2
        for c in range(plot_w):
            b = bits[base + c]
            mark = marked[base + c]
            ci = colors[base + c] if b or mark else -1
            if ci != cur_color and text:
                runs.append(("".join(text), "plot", palette[cur_color] if cur_color >= 0 else None))
                text = []
            cur_color = ci
            if mark:
                text.append(glyph_of[ci] or " ")
            else:
                text.append(chr(_BRAILLE + b) if b else " ")
        if text:
            runs.append(("".join(text), "plot", palette[cur_color] if cur_color >= 0 else None))
        rows.append(runs)

    # X axis: tick marks on the axis line, labels centred under them without overlapping.
    xticks, xstep = linear_ticks(x0, x1, max(3, plot_w // 12), min_step=x_min_step)
    axis = ["─"] * plot_w
    labels = [" "] * width
    last_end = -1
    for t in xticks:
        c = round((t - x0) / (x1 - x0) * (plot_w - 1))
        if not 0 <= c < plot_w:
            continue
        axis[c] = "┬"
        label = x_label(t, xstep)
        start = gutter + c - len(label) // 2
        start = max(start, 0)
        if start + len(label) > width:
            start = width - len(label)
        if start <= last_end + 1 or start < 0:
            continue
        labels[start : start + len(label)] = list(label)
        last_end = start + len(label) - 1
    rows.append([(" " * (gutter - 1) + "└" + "".join(axis), "axis", None)])
    rows.append([("".join(labels), "tick", None)])
    return rows


def _note_rows(width: int, height: int, note: str) -> list[list[Run]]:
    rows: list[list[Run]] = [[(" " * width, "note", None)] for _ in range(height)]
    text = note[:width].center(width)
    rows[height // 2] = [(text, "note", None)]
    return rows


def rows_text(rows: Sequence[Sequence[Run]]) -> str:
    """The plain text of drawn rows (tests and text captures)."""
    return "\n".join("".join(text for text, _, _ in row) for row in rows)


class LinePlot(Widget):
    """Draws ``PlotSeries`` with ``draw_plot``; redraws only when the data or the size changes."""

    DEFAULT_CSS = """
    LinePlot { height: 1fr; min-height: 4; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"lineplot--axis", "lineplot--tick", "lineplot--note"}

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._series: Sequence[PlotSeries] = ()
        self._log_y = False
        self._x_label: Callable[[float, float], str] = default_x_label
        self._empty = "no data yet"
        self._x_min_step = 0.0
        self._cache_key: tuple | None = None
        self._strips: list[Strip] = []
        self._version = 0
        self._style_version = 0
        self._blank = Strip.blank(0)

    def set_series(
        self,
        series: Sequence[PlotSeries],
        *,
        log_y: bool = False,
        x_label: Callable[[float, float], str] = default_x_label,
        x_min_step: float = 0.0,
        empty: str = "no data yet",
    ) -> None:
        self._series = series
        self._x_min_step = x_min_step
        self._log_y = log_y
        self._x_label = x_label
        self._empty = empty
        self._version += 1
        self.refresh()

    @property
    def series(self) -> Sequence[PlotSeries]:
        return self._series

    def text(self) -> str:
        """The plot as plain text at its current size."""
        w, h = self.content_size
        return rows_text(self._draw(w, h))

    def _draw(self, width: int, height: int) -> list[list[Run]]:
        return draw_plot(
            self._series,
            width,
            height,
            log_y=self._log_y,
            x_label=self._x_label,
            x_min_step=self._x_min_step,
            empty=self._empty,
            mono=self.app.no_color,
        )

    def _build(self, width: int, height: int) -> list[Strip]:
        base = self.rich_style
        roles = {
            "axis": base + self.get_component_rich_style("lineplot--axis"),
            "tick": base + self.get_component_rich_style("lineplot--tick"),
            "note": base + self.get_component_rich_style("lineplot--note"),
        }
        color_styles: dict[str | None, Style] = {None: base}
        strips = []
        for row in self._draw(width, height):
            segments = []
            for text, role, color in row:
                if role == "plot":
                    style = color_styles.get(color)
                    if style is None:
                        style = color_styles[color] = base + Style(color=color)
                else:
                    style = roles[role]
                segments.append(Segment(text, style))
            strips.append(Strip(segments).adjust_cell_length(width, base))
        return strips

    def notify_style_update(self) -> None:
        # Textual calls this when the CSS that reaches this widget changes (a theme, a class):
        # the cached strips carry the old colours. Cheaper than keying the cache on
        # ``rich_style``, which walks every ancestor's styles and was computed per line.
        super().notify_style_update()
        self._style_version += 1

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        key = (width, height, self._version, self._style_version, self.app.no_color)
        if key != self._cache_key:
            self._strips = self._build(width, height)
            self._blank = Strip.blank(width, self.rich_style)
            self._cache_key = key
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return self._blank
