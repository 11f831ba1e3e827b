"""A labelled matrix (a confusion matrix, say) as a heatmap of terminal cells.

Each cell holds its value and a density glyph (`` ░▒▓█``, darker for higher) on a background
shaded from the panel's colour to the accent's, so the matrix reads in colour, in a
256-colour terminal and with ``NO_COLOR`` alike (numbers and glyphs need no colour). Rows are
labelled on the left, columns on top; a matrix too wide for the widget drops the numbers and
keeps one glyph cell per column, then cuts the columns it cannot show ("+N cols"). The widget
draws such a matrix (a 32-class confusion matrix in 80 columns) ``compact`` instead: one cell
a column, the rows numbered and the columns headed by those numbers, so every column shows;
``summary_line`` says in words what the cells hide (the most confused pairs).
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widget import Widget

from podium.engine.metrics import Matrix
from podium.tui import format as fmt

GLYPHS = " ░▒▓█"
LOW = (28, 32, 40)
"""The shade of the lowest value (close to a dark panel)."""
HIGH = (95, 175, 255)
"""The shade of the highest value (the plots' train blue)."""
ROW_LABEL_MAX = 14
COL_LABEL_MAX = 8


def value_format(matrix: Matrix):
    """How a matrix's values are written: whole numbers as they are (counts), fractions with
    two decimals, anything else with three significant digits; NaN as "–"."""
    finite = [v for r in matrix.values for v in r if math.isfinite(v)]
    if finite and all(v == int(v) for v in finite) and max(abs(v) for v in finite) < 1e6:
        return lambda v: f"{int(v)}" if math.isfinite(v) else fmt.DASH
    if finite and all(0.0 <= v <= 1.0 for v in finite):
        return lambda v: f"{v:.2f}" if math.isfinite(v) else fmt.DASH
    return lambda v: fmt.num(v, 3) if math.isfinite(v) else fmt.DASH


def _scale(matrix: Matrix) -> tuple[float, float]:
    finite = [v for r in matrix.values for v in r if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if lo >= 0.0 and hi <= 1.0:  # fractions: shade on the full 0..1 scale
        return 0.0, 1.0
    return min(lo, 0.0), hi  # counts from zero


def _level(value: float, lo: float, hi: float) -> float | None:
    if not math.isfinite(value):
        return None
    return 0.0 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)


def _shade(level: float) -> str:
    rgb = [round(a + (b - a) * level) for a, b in zip(LOW, HIGH, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def glyph(level: float | None) -> str:
    """Blank for the lowest value, then a quarter of the scale per glyph; "·" for NaN."""
    if level is None:
        return "·"
    return GLYPHS[min(math.ceil(level * (len(GLYPHS) - 1)), len(GLYPHS) - 1)]


def _cut(label: str, width: int) -> str:
    return label if len(label) <= width else label[: max(width - 1, 0)] + "…"


def _cell_style(level: float | None) -> str:
    return "" if level is None else f"{'black' if level > 0.55 else 'white'} on {_shade(level)}"


def fits(matrix: Matrix, width: int) -> bool:
    """Whether every column shows, at least as a glyph cell, in ``width`` cells."""
    label_w = min(max((len(r) for r in matrix.rows), default=0), ROW_LABEL_MAX)
    return label_w + 1 + len(matrix.cols) * 3 <= width


def compact_lines(matrix: Matrix) -> list[Text]:
    """The matrix one cell a column: rows as "<n> <label>", two header lines with each
    column's number (tens, then units), a glyph per cell. Needs ``4 + label + columns`` cells:
    a 32 x 32 matrix with labels of 7 fits in 48."""
    if not matrix.rows or not matrix.cols:
        return [Text("(empty matrix)", style="dim")]
    lo, hi = _scale(matrix)
    label_w = min(max(len(r) for r in matrix.rows), ROW_LABEL_MAX)
    pad = " " * (3 + label_w + 1)
    numbers = [f"{i:>2}" for i in range(len(matrix.cols))]
    lines = [
        Text(pad + "".join(n[0] for n in numbers), style="dim"),
        Text(pad + "".join(n[1] for n in numbers), style="dim"),
    ]
    for r, label in enumerate(matrix.rows):
        line = Text(f"{r:>2} ", style="dim")
        line.append(_cut(label, label_w).ljust(label_w) + " ", style="bold")
        for value in matrix.values[r]:
            level = _level(value, lo, hi)
            line.append(glyph(level), style=_cell_style(level))
        lines.append(line)
    return lines


def summary_line(matrix: Matrix, top: int = 4) -> Text | None:
    """The matrix in words, for one too big to read cell by cell (more than 12 rows): for a
    confusion matrix (rows and columns the same labels) the share on the diagonal and the
    most frequent confusions, true -> predicted; for another, the rows lowest in its last
    column (per-class F1, say). None for small matrices."""
    if len(matrix.rows) <= 12:
        return None
    write = value_format(matrix)
    if matrix.rows == matrix.cols:
        total = sum(v for r in matrix.values for v in r if math.isfinite(v))
        right = sum(v for i, r in enumerate(matrix.values) if math.isfinite(v := r[i]))
        pairs = sorted(
            (
                (-v, matrix.rows[i], matrix.cols[j], v)
                for i, r in enumerate(matrix.values)
                for j, v in enumerate(r)
                if i != j and math.isfinite(v) and v > 0
            ),
        )[:top]
        t = Text(f"diagonal {right / total:.0%} · " if total else "", style="bold")
        t.append("most confused: " if pairs else "no confusions")
        t.append(" · ".join(f"{a}→{b} {write(v)}" for _, a, b, v in pairs))
        return t
    last = matrix.cols[-1]
    rows = sorted(
        (r[-1], matrix.rows[i]) for i, r in enumerate(matrix.values) if math.isfinite(r[-1])
    )[:top]
    t = Text(f"lowest {last}: ", style="bold")
    t.append(" · ".join(f"{label} {write(v)}" for v, label in rows))
    return t


def heatmap_lines(matrix: Matrix, width: int) -> list[Text]:
    """The matrix drawn in at most ``width`` cells per line: a column-label line, then a line
    per row (its label, then a cell per column)."""
    if not matrix.rows or not matrix.cols:
        return [Text("(empty matrix)", style="dim")]
    lo, hi = _scale(matrix)
    write = value_format(matrix)
    label_w = min(max(len(r) for r in matrix.rows), ROW_LABEL_MAX)
    texts = [[write(v) for v in r] for r in matrix.values]
    number_w = max(len(t) for r in texts for t in r)
    col_w = min(max(len(c) for c in matrix.cols), COL_LABEL_MAX)
    # A cell: a glyph, a space and the number (or the label, if wider); one space between.
    cell_w = max(number_w + 2, col_w)
    numbers = label_w + 1 + len(matrix.cols) * (cell_w + 1) <= width
    if not numbers:
        cell_w = 2
    room = width - label_w - 1
    fit = room // (cell_w + 1)
    if fit < len(matrix.cols):  # leave room for the "+N cols" note
        fit = (room - len(f"+{len(matrix.cols)} cols")) // (cell_w + 1)
    shown = matrix.cols[: max(fit, 1)]
    more = len(matrix.cols) - len(shown)

    header = Text(" " * (label_w + 1))
    for c in shown:
        header.append(_cut(c, cell_w).rjust(cell_w) + " ", style="bold")
    if more:
        header.append(f"+{more} cols", style="dim")
    lines = [header]
    for r, label in enumerate(matrix.rows):
        line = Text(_cut(label, label_w).ljust(label_w) + " ", style="bold")
        for c in range(len(shown)):
            value = matrix.values[r][c]
            level = _level(value, lo, hi)
            style = _cell_style(level)
            g = glyph(level)
            cell = (g + " " + texts[r][c].rjust(cell_w - 2)) if numbers else g * 2
            line.append(cell, style=style)
            line.append(" ")
        lines.append(line)
    return lines


def legend_line(matrix: Matrix) -> Text:
    """The shading scale: its low end, the glyphs from low to high, its high end."""
    lo, hi = _scale(matrix)
    write = value_format(matrix)
    t = Text(f"scale {write(lo)} ", style="dim")
    for i, g in enumerate(GLYPHS):
        level = i / (len(GLYPHS) - 1)
        t.append(g * 2, style=f"{'black' if level > 0.55 else 'white'} on {_shade(level)}")
    t.append(f" {write(hi)}", style="dim")
    return t


class Heatmap(Widget):
    """Draws one ``Matrix`` (set with ``show``), fitted to the widget's width at render time:
    labelled cells with numbers when they fit, glyph cells when not, ``compact_lines`` when
    not even those show every column."""

    DEFAULT_CSS = """
    Heatmap { height: auto; text-wrap: nowrap; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.matrix: Matrix | None = None

    def show(self, matrix: Matrix | None) -> None:
        relayout = matrix is None or self.matrix is None or matrix.rows != self.matrix.rows
        self.matrix = matrix
        self.refresh(layout=relayout)

    def lines(self, width: int) -> list[Text]:
        """What is drawn in ``width`` cells, a line each."""
        if self.matrix is None:
            return [Text("no matrix yet", style="dim")]
        if fits(self.matrix, width):
            lines = heatmap_lines(self.matrix, width)
        else:
            lines = compact_lines(self.matrix)
        return [*lines, legend_line(self.matrix)]

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.lines(max(width, 1)))

    def get_content_width(self, container, viewport) -> int:
        return max((t.cell_len for t in self.lines(container.width)), default=1)

    def render(self) -> Text:
        return Text("\n").join(self.lines(max(self.content_size.width, 1)))

    def text(self) -> str:
        """The drawn matrix as plain text (for tests and the terminal check)."""
        return "\n".join(t.plain for t in self.lines(max(self.content_size.width, 80)))
