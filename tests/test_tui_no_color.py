"""With NO_COLOR every series used to be drawn in the same braille dots and the legend gave every
head the same ``━``: the all-heads plot could not be read. Without colour each series now has its
own character on the plot, and the legend shows that character beside its name."""

from __future__ import annotations

from textual.app import App, ComposeResult

from podium.engine.events import Scalars
from podium.tui.model import RunModel
from podium.tui.widgets.loss_panel import LossPanel, PlotOptions, build_heads
from tests.tui_helpers import sync

HEADS = {"type": 3.0, "pitch": 2.0, "duration": 1.0}
"""Three heads whose losses lie well apart, highest first."""


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield LossPanel()


def _model() -> RunModel:
    m = RunModel()
    m.heads = list(HEADS)
    for step in range(1, 61):
        values = {f"train/loss/{h}": level - step / 200 for h, level in HEADS.items()}
        m.apply([Scalars(step=step, epoch=step / 60, wall=float(step), values=values)])
    return m


async def _draw() -> tuple[App, list[str], list[str], list[str | None]]:
    """The all-heads plot's rendered lines, the legend's lines and the series' glyphs."""
    app = PlotApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(LossPanel)
        series, legend, title = build_heads(_model(), PlotOptions())
        panel.show(title, series, legend, PlotOptions(), "no data")
        await pilot.pause()
        plot = panel.plot
        lines = [
            "".join(seg.text for seg in plot.render_line(y))
            for y in range(plot.content_size.height)
        ]
        legend_lines = panel.legend.render().plain.splitlines()
        return app, lines, legend_lines, [s.glyph for s in series]


def _plot_area(lines: list[str]) -> list[str]:
    """The rows above the x axis, right of the y axis."""
    gutter = lines[-2].index("└") + 1
    return [line[gutter:] for line in lines[:-2]]


@sync
async def test_without_colour_each_head_has_its_own_glyph_on_the_plot_and_in_the_legend(
    monkeypatch,
):
    monkeypatch.setenv("NO_COLOR", "1")
    app, lines, legend, glyphs = await _draw()
    assert app.no_color
    area = _plot_area(lines)
    assert len(set(glyphs)) == len(HEADS) and None not in glyphs
    rows = {}
    for head, glyph in zip(HEADS, glyphs, strict=True):
        found = [i for i, row in enumerate(area) if glyph in row]
        assert sum(row.count(glyph) for row in area) >= 10, (head, glyph, "\n".join(lines))
        rows[head] = sum(found) / len(found)
        # The legend names the head with the glyph its line is drawn in.
        assert any(f"{glyph} {head} " in line for line in legend), (glyph, head, legend)
    # Each glyph is where its head's loss is: the highest loss at the top.
    assert rows["type"] < rows["pitch"] < rows["duration"]
    assert not any(0x2800 <= ord(c) <= 0x28FF for row in area for c in row)  # no braille left
    assert not any("━" in line for line in legend)


@sync
async def test_in_colour_the_heads_stay_braille_lines_with_coloured_bars(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    app, lines, legend, glyphs = await _draw()
    assert not app.no_color
    area = _plot_area(lines)
    assert not any(g in row for g in glyphs if g for row in area)
    assert sum(0x2800 < ord(c) <= 0x28FF for row in area for c in row) >= 30
    assert all(f"━ {head} " in " ".join(legend) for head in HEADS)


@sync
async def test_without_colour_each_compared_run_has_its_own_glyph(monkeypatch, tmp_path):
    """The compare screen drew every run in braille: without colour, runs could not be told."""
    from pathlib import Path

    from podium.tui.screens.compare import ComparedRun, build_compare

    monkeypatch.setenv("NO_COLOR", "1")
    runs = []
    for i, level in enumerate((3.0, 1.0)):
        m = RunModel()
        for step in range(1, 61):
            m.apply([Scalars(step=step, epoch=1.0, wall=float(step),
                             values={"train/loss": level - step / 200})])  # fmt: skip
        runs.append(ComparedRun(f"run{i}", "red", Path(tmp_path / f"r{i}.db"), m))
    app = PlotApp()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(LossPanel)
        series, legend = build_compare(runs, None, PlotOptions(), show_val=False)
        panel.show("compare", series, legend, PlotOptions(), "no data")
        await pilot.pause()
        lines = [
            "".join(seg.text for seg in panel.plot.render_line(y))
            for y in range(panel.plot.content_size.height)
        ]
        legend_lines = panel.legend.render().plain.splitlines()
    glyphs = [s.glyph for s in series]
    assert len(set(glyphs)) == 2 and None not in glyphs
    area = _plot_area(lines)
    for run, glyph in zip(runs, glyphs, strict=True):
        assert sum(row.count(glyph) for row in area) >= 10, "\n".join(lines)
        assert any(f"{glyph} {run.id}" in line for line in legend_lines), legend_lines
