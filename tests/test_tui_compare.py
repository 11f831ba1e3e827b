"""Marking runs on the home screen and comparing their loss curves (stored runs, real stores)."""

from __future__ import annotations

import math

from podium.tui.app import PodiumApp
from podium.tui.screens.compare import CompareScreen
from podium.tui.screens.home import MARK, HomeScreen
from tests.tui_helpers import make_stored_run, sync, wait_for

SIZE = (120, 40)


def run_cell(table, run_id: str) -> str:
    return str(table.get_cell(run_id, "run"))


@sync
async def test_mark_two_runs_and_compare_their_curves(tmp_path):
    # Different heads on purpose: the plots show the union, a run lacking a head has no line.
    make_stored_run(tmp_path, "alpha", steps=120, heads=("tempo", "chord"), checkpoints=False)
    make_stored_run(tmp_path, "beta", steps=80, heads=("tempo", "pitch"), checkpoints=False)
    app = PodiumApp(root=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        home = app.screen
        assert isinstance(home, HomeScreen)
        table = home.query_one("#runs")
        await wait_for(pilot, lambda: table.row_count == 2, 10, "the runs table")

        await pilot.press("c")  # nothing marked yet: says how
        assert "mark runs with m" in app.notices[-1]
        assert not isinstance(app.screen, CompareScreen)

        await pilot.press("m", "m")  # marks the row under the cursor, then moves down
        assert set(home.marked) == {"alpha", "beta"}
        assert run_cell(table, "alpha").startswith(MARK)
        assert run_cell(table, "beta").startswith(MARK)
        await pilot.press("up")
        first = home._cursor_run()
        await pilot.press("m")  # unmark it, and mark it again
        assert first not in home.marked and not run_cell(table, first).startswith(MARK)
        await pilot.press("up", "m")
        assert set(home.marked) == {"alpha", "beta"}

        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: screen.loaded and len(screen.panels()) == 4, 10, "curves")
        title = str(screen.query_one("#compare-title").render())
        assert "alpha" in title and "beta" in title
        assert screen.heads == ["chord", "pitch", "tempo"]
        colors = {r.id: r.color for r in screen.runs}
        assert colors["alpha"] != colors["beta"]

        plots = {head: panel for head, panel in screen.panels()}
        total = plots[None]
        legend = [e.name for e in total.legend.entries]
        assert sorted(legend) == ["alpha", "beta"]
        # Per run: the training curve and its validation points, in the run's colour.
        labels = sorted(s.label for s in total.plot.series)
        assert labels == ["alpha", "alpha val", "beta", "beta val"]
        by_label = {s.label: s for s in total.plot.series}
        assert by_label["alpha"].color == by_label["alpha val"].color == colors["alpha"]
        assert max(by_label["alpha"].xs) == 120 and max(by_label["beta"].xs) == 80
        assert len(by_label["beta val"].xs) == 1  # val every 50 steps: step 50
        assert any(0x2800 < ord(c) < 0x2900 for c in total.plot.text())
        # A head only one run has: one run's lines, and the title says so.
        pitch = plots["pitch"]
        assert sorted(s.label for s in pitch.plot.series) == ["beta", "beta val"]
        assert [e.name for e in pitch.legend.entries] == ["beta"]
        assert "1/2 runs" in pitch.border_title
        assert sorted(s.label for s in plots["tempo"].plot.series) == [
            "alpha",
            "alpha val",
            "beta",
            "beta val",
        ]

        await pilot.press("v")  # validation hidden
        assert sorted(s.label for s in total.plot.series) == ["alpha", "beta"]
        await pilot.press("y")  # log scale: same series, a log axis
        assert total.plot._log_y
        await pilot.press("t")  # wall time since each run began (fixture: 0.5 s a step)
        alpha = next(s for s in total.plot.series if s.label == "alpha")
        assert math.isclose(max(alpha.xs), 119 * 0.5)
        assert "x wall" in str(screen.query_one("#compare-title").render())
        stored = next(r for r in screen.runs if r.id == "alpha").model.series["train/loss"]
        assert list(alpha.ys) != stored.values  # EMA smoothing by default, as on the run screen
        for _ in range(5):
            await pilot.press("left_square_bracket")
        assert screen.options.smoothing == 0
        alpha = next(s for s in total.plot.series if s.label == "alpha")
        assert list(alpha.ys) == stored.values

        await pilot.press("escape")
        assert isinstance(app.screen, HomeScreen)
