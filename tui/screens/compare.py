"""The compare screen: the loss curves of several runs overlaid, one colour per run.

Opened from the home screen with the marked runs (``m`` marks, ``c`` compares). One plot for the
total loss and one per head, the union of the runs' heads (a run without a head has no line on
its plot); training curves as lines, validation as dots of the same colour (``v`` hides them).
Each run's history is read from its store in a thread worker into a ``RunModel``, so smoothing
and the wall-time axis work exactly as on the run screen. What is shown is the stores at opening
time; ``r`` reads them again (a run still training moves on).

    python -m podium     # home screen: m on two runs, then c
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from podium.engine.runs import RunDir
from podium.tui.history import RunRow, read_history
from podium.tui.model import RunModel, train_name, val_name
from podium.tui.widgets.footer import PodiumFooter
from podium.tui.widgets.loss_panel import (
    HEAD_COLORS,
    HEAD_GLYPHS,
    LegendEntry,
    LossPanel,
    PlotOptions,
)
from podium.tui.widgets.plot import PlotSeries

RUN_COLORS = HEAD_COLORS
"""One colour per run, in marking order (xterm-256 colours, distinct in hue)."""


@dataclass
class ComparedRun:
    """One run on the compare screen: its id, its colour and its loaded history."""

    id: str
    color: str
    db_path: Path
    model: RunModel
    error: str = ""
    """Why its history could not be read (the run still gets a legend entry)."""


@dataclass
class CompareLoaded(Message):
    """The runs' histories, read in a worker: run id -> (model, error)."""

    models: dict[str, tuple[RunModel, str]]


def head_union(runs: Sequence[ComparedRun]) -> list[str]:
    """Every head any run has, sorted."""
    return sorted({h for r in runs for h in r.model.heads})


def build_compare(
    runs: Sequence[ComparedRun], head: str | None, opts: PlotOptions, *, show_val: bool
) -> tuple[list[PlotSeries], list[LegendEntry]]:
    """Series and legend of one compare plot (``head`` None: the total loss).

    Per run: its training curve (smoothed like the run screen) and, when ``show_val``, its
    validation points as dots in the same colour. The legend gives each run's last training
    value and best validation value on this plot.
    """
    series: list[PlotSeries] = []
    legend: list[LegendEntry] = []
    for i, run in enumerate(runs):
        glyph = HEAD_GLYPHS[i % len(HEAD_GLYPHS)]  # each run's character without colour
        m = run.model
        train = m.series.get(train_name(head))
        val = m.series.get(val_name(head))
        if train is None and val is None:
            continue  # this run has no such head: no line, no entry
        if train is not None:
            xs, ys = m.xy(train_name(head), opts.x, opts.smoothing)
            series.append(PlotSeries(run.id, xs, ys, run.color, glyph=glyph))
        if show_val and val is not None and len(val):
            vx, vy = m.xy(val_name(head), opts.x)
            series.append(PlotSeries(f"{run.id} val", vx, vy, run.color, markers=True))
        legend.append(
            LegendEntry(
                "━",
                run.color,
                run.id,
                train.last if train is not None else None,
                val.best_or_none if val is not None else None,
                mark=glyph,
            )
        )
    return series, legend


class CompareScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "toggle_log", "Log", tooltip="Toggle a log scale on the loss axis"),
        Binding("t", "cycle_x", "X", tooltip="X axis: step or wall time since each run began"),
        Binding("v", "toggle_val", "Val", tooltip="Show or hide the validation points"),
        Binding(
            "left_square_bracket",
            "smooth(-1)",
            "Smooth-",
            key_display="[",
            tooltip="Less EMA smoothing",
        ),
        Binding(
            "right_square_bracket",
            "smooth(1)",
            "Smooth+",
            key_display="]",
            tooltip="More EMA smoothing",
        ),
        Binding("r", "reload", "Reload", tooltip="Read the runs' stores again"),
        Binding("escape", "back", "Back", tooltip="Back to the home screen"),
    ]
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (110, "-wide")]

    def __init__(self, rows: Sequence[RunRow]) -> None:
        super().__init__()
        if not rows:
            raise ValueError("CompareScreen: give at least one run")
        self.runs = [
            ComparedRun(r.id, RUN_COLORS[i % len(RUN_COLORS)], RunDir(r.path).db_path, RunModel())
            for i, r in enumerate(rows)
        ]
        for run in self.runs:
            run.model.run_id = run.id
        self.options = PlotOptions()
        self.show_val = True
        self.loaded = False
        self.heads: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        yield VerticalScroll(id="compare-plots")
        yield PodiumFooter(compact=True)

    def on_mount(self) -> None:
        self._title()
        self.query_one("#compare-plots", VerticalScroll).focus()
        self._load()

    # -- data --------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _load(self) -> None:
        """Read every run's loss series (thread) into fresh models."""
        max_points = max(200, 2 * self.app.size.width)
        out: dict[str, tuple[RunModel, str]] = {}
        for run in self.runs:
            model = RunModel()
            model.run_id = run.id
            error = ""
            try:
                history = read_history(run.db_path, max_points=max_points, with_events=False)
                model.load_history(history.points)
            except Exception as exc:  # one damaged store must not hide the other runs
                error = f"{type(exc).__name__}: {exc}"
            out[run.id] = (model, error)
        self.post_message(CompareLoaded(out))

    async def on_compare_loaded(self, message: CompareLoaded) -> None:
        for run in self.runs:
            run.model, run.error = message.models.get(run.id, (run.model, "not read"))
            if run.error:
                self.notify(f"run {run.id}: {run.error}", severity="error")
        self.loaded = True
        heads = head_union(self.runs)
        if heads != self.heads or not self.query(LossPanel):
            self.heads = heads
            box = self.query_one("#compare-plots", VerticalScroll)
            await box.remove_children()
            await box.mount_all(
                [LossPanel(id="compare-total")]
                + [LossPanel(id=f"compare-head-{i}") for i in range(len(heads))]
            )
        self._title()
        self._draw()

    # -- drawing -----------------------------------------------------------------------------

    def panels(self) -> list[tuple[str | None, LossPanel]]:
        """(head, panel) of every plot: None for the total, then the heads."""
        out: list[tuple[str | None, LossPanel]] = []
        for panel in self.query(LossPanel):
            if panel.id == "compare-total":
                out.append((None, panel))
            elif panel.id and panel.id.startswith("compare-head-"):
                i = int(panel.id.removeprefix("compare-head-"))
                if i < len(self.heads):
                    out.append((self.heads[i], panel))
        return out

    def _title(self) -> None:
        t = Text("compare ", style="bold")
        for run in self.runs:
            t.append("━ ", style=run.color)
            t.append(run.id + ("" if not run.error else " (unreadable)"), style="bold")
            t.append("  ")
        t.append(
            f"{self.options.summary()} · val {'dots' if self.show_val else 'hidden'}", style="dim"
        )
        self.query_one("#compare-title", Static).update(t)

    def _draw(self) -> None:
        opts = self.options
        n = len(self.runs)
        empty = "no steps recorded" if self.loaded else "reading the runs…"
        for head, panel in self.panels():
            series, legend = build_compare(self.runs, head, opts, show_val=self.show_val)
            name = "total · legend: last train ↓best val" if head is None else f"head {head}"
            title = f"loss · {name}" + (f" · {len(legend)}/{n} runs" if len(legend) < n else "")
            panel.show(title, series, legend, opts, empty)

    def set_options(self, options: PlotOptions) -> None:
        self.options = options
        self._title()
        self._draw()

    def action_toggle_log(self) -> None:
        self.set_options(replace(self.options, log_y=not self.options.log_y))

    def action_cycle_x(self) -> None:
        self.set_options(replace(self.options, x="wall" if self.options.x == "step" else "step"))

    def action_toggle_val(self) -> None:
        self.show_val = not self.show_val
        self.set_options(self.options)

    def action_smooth(self, delta: int) -> None:
        self.set_options(self.options.smoother(delta))

    def action_reload(self) -> None:
        self._load()

    def action_back(self) -> None:
        self.app.pop_screen()
