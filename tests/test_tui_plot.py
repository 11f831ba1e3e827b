"""The braille plot and the number formats it labels axes with (pure functions, no app)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from podium.tui import format as fmt
from podium.tui.widgets.plot import (
    PlotSeries,
    draw_plot,
    linear_ticks,
    log_ticks,
    rows_text,
)

BRAILLE = range(0x2801, 0x2900)


def dots(text: str) -> int:
    """How many braille dots are set in ``text``."""
    return sum(bin(ord(c) - 0x2800).count("1") for c in text if ord(c) in BRAILLE)


def test_a_falling_line_goes_from_top_left_to_bottom_right():
    xs = list(range(100))
    rows = draw_plot([PlotSeries("loss", xs, [100.0 - x for x in xs], "red")], 40, 12)
    assert len(rows) == 12
    assert all(sum(len(t) for t, _, _ in row) == 40 for row in rows)
    lines = rows_text(rows).splitlines()
    plot = lines[:-2]  # the last two rows are the x axis and its labels
    gutter = lines[-2].index("└") + 1
    first_row = next(i for i, line in enumerate(plot) if dots(line[gutter:]))
    last_row = max(i for i, line in enumerate(plot) if dots(line[gutter:]))
    assert first_row == 0 and last_row == len(plot) - 1
    top = plot[0][gutter:]
    bottom = plot[-1][gutter:]
    assert dots(top[:5]) and not dots(top[-5:])
    assert dots(bottom[-5:]) and not dots(bottom[:5])


def test_axes_carry_tick_labels_within_the_data_range():
    xs = list(range(1, 301))
    rows = draw_plot([PlotSeries("loss", xs, [2 + x / 100 for x in xs], "red")], 60, 14)
    text = rows_text(rows)
    lines = text.splitlines()
    assert "┤" in text and lines[-2].lstrip().startswith("└") and "┬" in lines[-2]
    labels = [int(v) for v in lines[-1].split()]
    assert labels == sorted(labels) and labels[0] >= 1 and labels[-1] <= 300 and len(labels) >= 3
    ylabels = [float(line.split("┤")[0]) for line in lines[:-2] if "┤" in line]
    assert ylabels == sorted(ylabels, reverse=True) and ylabels[-1] >= 2 and ylabels[0] <= 5


def test_log_scale_spreads_decades_and_drops_non_positive_values():
    xs = list(range(50))
    ys = [10 ** (-x / 10) for x in xs]  # 1 down to ~1e-5
    ys[10] = 0.0  # not drawable on a log axis: a gap, not a crash
    text = rows_text(draw_plot([PlotSeries("l", xs, ys, "red")], 50, 16, log_y=True))
    for label in ("1", "0.01", "1e-4"):
        assert label + "┤" in text.replace(" ", "")


def test_nan_breaks_the_line_and_markers_draw_bigger_dots():
    xs = list(range(40))
    ys = [1.0] * 40
    ys[20] = math.nan
    gap = rows_text(draw_plot([PlotSeries("a", xs, ys, "red")], 40, 8))
    whole = rows_text(draw_plot([PlotSeries("a", xs, [1.0] * 40, "red")], 40, 8))
    assert dots(whole) - dots(gap) >= 2  # the pixels around the NaN stay empty
    plain = rows_text(draw_plot([PlotSeries("a", xs[::10], [1.0] * 4, "red")], 40, 8))
    marked = rows_text(
        draw_plot([PlotSeries("a", xs[::10], [1.0] * 4, "red", markers=True)], 40, 8)
    )
    assert dots(marked) >= dots(plain) + 4 * 3  # four points, each a block of six dots


def test_colours_are_per_series_and_later_series_win_shared_cells():
    a = PlotSeries("a", [0, 10], [0, 0], "#ff0000")
    b = PlotSeries("b", [0, 10], [1, 1], "#00ff00")
    runs = [r for row in draw_plot([a, b], 30, 8) for r in row if r[1] == "plot" and r[2]]
    assert {c for _, _, c in runs} == {"#ff0000", "#00ff00"}


def test_empty_and_tiny_plots_show_a_note():
    assert "no data yet" in rows_text(draw_plot([], 30, 5))
    assert "waiting" in rows_text(
        draw_plot([PlotSeries("a", [], [], "red")], 30, 5, empty="waiting")
    )
    assert "too small" in rows_text(draw_plot([PlotSeries("a", [1, 2], [1, 2], "red")], 12, 3))
    assert draw_plot([PlotSeries("a", [1], [1], "red")], 0, 0) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=80),
    st.integers(1, 120),
    st.integers(1, 30),
    st.booleans(),
)
def test_any_data_at_any_size_fills_exactly_the_requested_cells(ys, width, height, log_y):
    xs = list(range(len(ys)))
    rows = draw_plot([PlotSeries("a", xs, ys, "red")], width, height, log_y=log_y)
    assert len(rows) == height
    assert all(sum(len(t) for t, _, _ in row) == width for row in rows)


def test_ticks_are_round_numbers():
    assert linear_ticks(2, 22, 4)[0] == [5, 10, 15, 20]
    ticks, step = linear_ticks(1, 14, 5, min_step=1)
    assert step == int(step) and all(t == int(t) for t in ticks)
    assert log_ticks(-2, 1, 5) == [-2.0, -1.0, 0.0, 1.0]
    assert len(log_ticks(0.1, 0.6, 5)) >= 2  # inside one decade: 2x and 5x ticks


def test_number_formats():
    assert fmt.num(2810.4) == "2,810" and fmt.num(12345) == "12.3k" and fmt.num(None) == "–"
    assert fmt.num(3.6e-4) == "3.6e-04" and fmt.num(float("nan")) == "–"
    assert fmt.duration(3725) == "1h02m" and fmt.duration(59) == "59s"
    assert fmt.short_duration(5400) == "1h30"
    assert fmt.bar(0.5, 10) == "█████░░░░░" and len(fmt.bar(0.33, 7)) == 7
    assert fmt.age(100.0, now=100.0 + 7200) == "2h"


def test_the_heatmap_writes_labels_numbers_and_density_glyphs():
    from podium.engine.metrics import Matrix
    from podium.tui.widgets.heatmap import glyph, heatmap_lines, legend_line

    counts = Matrix.of(["A", "B"], ["A", "B"], [[19, 1], [0, 20]])
    lines = [t.plain for t in heatmap_lines(counts, 40)]
    assert lines == ["     A    B ", "A █ 19 ░  1 ", "B    0 █ 20 "]
    assert legend_line(counts).plain == "scale 0   ░░▒▒▓▓██ 20"
    # Cells are shaded by value too (the colours go under NO_COLOR; numbers and glyphs stay).
    shaded = heatmap_lines(counts, 40)[1]
    assert any("on #" in str(span.style) for span in shaded.spans)
    # Fractions on the 0..1 scale, NaN as a dot and a dash.
    fractions = Matrix.of(["calm", "busy"], ["calm", "busy"], [[0.75, 0.25], [math.nan, 1.0]])
    lines = [t.plain for t in heatmap_lines(fractions, 40)]
    assert lines == ["       calm   busy ", "calm ▓ 0.75 ░ 0.25 ", "busy ·    – █ 1.00 "]
    assert [glyph(v) for v in (0.0, 0.1, 0.3, 0.6, 1.0, None)] == [" ", "░", "▒", "▓", "█", "·"]
    # Too wide for its space: glyphs only, then the columns that fit and how many are left.
    wide = Matrix.of(["r0", "r1"], [f"c{i}" for i in range(30)], [list(range(30))] * 2)
    lines = [t.plain for t in heatmap_lines(wide, 40)]
    *labels, more, _ = lines[0].split()
    assert all(len(line) <= 40 for line in lines) and int(more) + len(labels) == 30
    assert labels == [f"c{i}" for i in range(len(labels))] and len(lines[1]) == 3 + 3 * len(labels)
    assert lines[1].split()[0] == "r0" and "█" not in lines[1] and "▒▒" in lines[1]
    assert [t.plain for t in heatmap_lines(Matrix.of([], [], []), 40)] == ["(empty matrix)"]


def test_without_colour_glyph_series_draw_their_glyph_and_braille_series_stay_braille():
    xs = list(range(30))
    line = PlotSeries("train", xs, [2.0] * 30, "red")  # no glyph: braille even in mono
    low = PlotSeries("a", xs, [0.0] * 30, "blue", glyph="x")
    mid = PlotSeries("b", xs, [1.0] * 30, "green", glyph="o")
    over = PlotSeries("c", xs, [1.0] * 30, "grey", glyph="+")  # drawn last: wins shared cells
    text = rows_text(draw_plot([line, low, mid, over], 40, 10, mono=True))
    assert "x" in text and "+" in text and "o" not in text and dots(text) > 0
    colour = rows_text(draw_plot([line, low, mid, over], 40, 10))
    assert not {"x", "o", "+"} & set(colour) and dots(colour) > dots(text)
    runs = [r for row in draw_plot([low], 30, 8, mono=True) for r in row if "x" in r[0]]
    assert runs and all(r[1:] == ("plot", "blue") for r in runs)  # the colour stays, for grey
