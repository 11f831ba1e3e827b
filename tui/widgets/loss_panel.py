"""A loss plot with its legend: train and validation on shared axes, last and best beside each.

The run screen has two: the total loss, and a second plot whose view ``h`` cycles through, for
any family: every head's training loss, each head's training and validation loss, then each
validation metric (``val/<metric>``), then each epoch hook's group (``<group>/*``, titled by the
family's optional ``podium.tui.families.<name>`` module). Both take the same ``PlotOptions``.

"Best" is each series' minimum (↓) or maximum (↑), as its family declares which way it improves
(``Family.direction``: losses fall, scores such as the conditioning check's rise). Without colour
(NO_COLOR) every series sharing a plot is drawn in its own ASCII glyph, shown in the legend too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from podium.engine import series as names
from podium.engine.series import Direction
from podium.tui import format as fmt
from podium.tui.families import group_title
from podium.tui.model import SMOOTHING_LEVELS, RunModel, Series, XAxis, train_name, val_name
from podium.tui.widgets.plot import LinePlot, PlotSeries, tick_label

if TYPE_CHECKING:
    from podium.engine.families.registry import Family

TRAIN_COLOR = "#5fafff"
VAL_COLOR = "#ffaf00"
VAL_GLYPH = "●"
"""Validation points, in the legend and (without colour) on the plot."""
# xterm-256 colours (so a 256-colour terminal shows them exactly), distinct in hue.
HEAD_COLORS = (
    "#5fafff",
    "#ffaf00",
    "#87d75f",
    "#ff5f87",
    "#af87ff",
    "#5fd7d7",
    "#d7d75f",
    "#ff8700",
    "#d787d7",
    "#bcbcbc",
    "#87afaf",
    "#d7af87",
)
HEAD_GLYPHS = ("o", "x", "+", "*", "#", "@", "%", "=", "~", "^", "&", "$")
"""Without colour (NO_COLOR), series that share a plot are told apart by these characters, one
per colour of ``HEAD_COLORS`` (ASCII: every terminal font draws them one cell wide)."""


def _style(i: int) -> tuple[str, str]:
    """The colour and the no-colour glyph of the ``i``-th series on a plot."""
    return HEAD_COLORS[i % len(HEAD_COLORS)], HEAD_GLYPHS[i % len(HEAD_GLYPHS)]


@functools.cache
def _family(name: str) -> Family | None:
    from podium.engine.families.registry import get_family

    if not name:
        return None
    try:
        return get_family(name)
    except Exception:  # unknown or broken here (a remote run's family): the defaults
        return None


def direction(family: str, series: str) -> Direction:
    """Which way ``series`` of a run of ``family`` improves (the family's declaration, else
    losses "min" and everything else "max")."""
    spec = _family(family)
    return spec.direction(series) if spec is not None else names.default_direction(series)


@dataclass(frozen=True)
class PlotOptions:
    """How the run screen's plots are drawn; changed by keys, shared by both plots."""

    x: XAxis = "step"
    log_y: bool = False
    smoothing_index: int = 4
    """Index into ``SMOOTHING_LEVELS`` (0 = raw)."""
    head_index: int = -1
    """-1 shows every head's training loss; otherwise the view at that index of
    ``plot_views(model)``: a head's training and validation, a metric or a hook group."""

    @property
    def smoothing(self) -> float:
        return SMOOTHING_LEVELS[self.smoothing_index]

    def smoother(self, delta: int) -> PlotOptions:
        i = min(max(self.smoothing_index + delta, 0), len(SMOOTHING_LEVELS) - 1)
        return replace(self, smoothing_index=i)

    def next_heads(self, n_heads: int, extra: int = 0) -> PlotOptions:
        """All heads, each head in turn, then ``extra`` further views (metrics, hook groups)."""
        i = self.head_index + 1
        return replace(self, head_index=-1 if i >= n_heads + extra else i)

    def summary(self) -> str:
        ema = "raw" if self.smoothing == 0 else f"EMA {self.smoothing:g}"
        return f"x {self.x} · y {'log' if self.log_y else 'linear'} · {ema}"


def x_labeller(x: XAxis):
    if x == "wall":
        return lambda value, step: fmt.short_duration(value)
    return lambda value, step: fmt.num(value, 3) if abs(value) >= 1e4 else tick_label(value, step)


@dataclass(frozen=True)
class LegendEntry:
    glyph: str
    color: str
    name: str
    last: float | None
    best: float | None
    direction: Direction = "min"
    """Which way the series improves: ``best`` is its minimum (↓) or its maximum (↑)."""
    mark: str | None = None
    """The series' character on the plot without colour, shown instead of ``glyph`` then."""

    def text(self, width: int | None = None, *, mono: bool = False) -> Text:
        """The entry, cut or padded to ``width`` cells when given; ``mono``: no colour."""
        t = Text()
        t.append((self.mark if mono and self.mark else self.glyph) + " ", style=self.color)
        t.append(self.name + " ", style="bold")
        t.append(fmt.num(self.last, 3))
        arrow = "↓" if self.direction == "min" else "↑"
        t.append(f" {arrow}{fmt.num(self.best, 3)}", style="dim")
        if width is not None:
            t.truncate(width)
            t.pad_right(width - t.cell_len)
        return t


def _entry(
    series: Series | None,
    glyph: str,
    color: str,
    name: str,
    direction: Direction = "min",
    mark: str | None = None,
) -> LegendEntry:
    """A series' entry: its last value and its best one in ``direction``."""
    if series is None:
        return LegendEntry(glyph, color, name, None, None, direction, mark)
    best = series.best_or_none if direction == "min" else names.best(series.values, direction)
    return LegendEntry(glyph, color, name, series.last, best, direction, mark)


class Legend(Widget):
    """Legend entries packed into rows (two spaces apart), at most ``_max_rows()`` rows.

    When the entries do not fit, the last row says how many are left out; ``h`` shows the heads
    one at a time with their full numbers.
    """

    DEFAULT_CSS = """
    Legend { height: auto; }
    """

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.entries: list[LegendEntry] = []

    def set_entries(self, entries: list[LegendEntry]) -> None:
        if entries == self.entries:
            return
        relayout = len(entries) != len(self.entries)
        self.entries = entries
        self.refresh(layout=relayout)

    def _max_rows(self) -> int:
        # Short terminals (80x24) give the plot the rows; tall ones show more legend.
        return 2 if self.screen.size.height < 32 else 3

    def _rows(self, width: int) -> list[Text]:
        mono = self.app.no_color
        texts = [e.text(mono=mono) for e in self.entries]
        rows: list[list[Text]] = []
        used = 0
        for t in texts:  # greedy packing, two spaces apart
            if rows and used + 2 + t.cell_len <= width:
                rows[-1].append(t)
                used += 2 + t.cell_len
            else:
                rows.append([t])
                used = t.cell_len
        max_rows = self._max_rows()
        if len(rows) > max_rows:
            rows = rows[:max_rows]
            last = rows[-1]
            while True:
                shown = sum(len(r) for r in rows)
                more = Text(f"+{len(texts) - shown} more (h)", style="dim")
                used = sum(t.cell_len + 2 for t in last)
                if not last or used + more.cell_len <= width:
                    break
                last.pop()
            last.append(more)
        return [Text("  ").join(r) for r in rows]

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._rows(width)) if width > 0 else 0

    def render(self) -> Text:
        return Text("\n").join(self._rows(self.content_size.width))


def build_total(model: RunModel, opts: PlotOptions) -> tuple[list[PlotSeries], list[LegendEntry]]:
    """Series and legend of the total-loss plot."""
    return _train_and_val(model, opts, None)


def _train_and_val(
    model: RunModel, opts: PlotOptions, head: str | None
) -> tuple[list[PlotSeries], list[LegendEntry]]:
    """A loss's training line (braille even without colour) and validation points."""
    tx, ty = model.xy(train_name(head), opts.x, opts.smoothing)
    vx, vy = model.xy(val_name(head), opts.x)
    series = [
        PlotSeries("train", tx, ty, TRAIN_COLOR),
        PlotSeries("val", vx, vy, VAL_COLOR, markers=True, glyph=VAL_GLYPH),
    ]
    legend = [
        _entry(model.series.get(train_name(head)), "━", TRAIN_COLOR, "train"),
        _entry(model.series.get(val_name(head)), VAL_GLYPH, VAL_COLOR, "val"),
    ]
    return series, legend


@dataclass(frozen=True)
class View:
    """One view of the second plot after "all heads": a head, a metric or a hook group."""

    kind: Literal["head", "metric", "metrics", "group"]
    name: str
    """The head, the metric (``accuracy``), the measure several metrics share (``accuracy`` of
    ``type/accuracy``, ``root/accuracy``...) or the group (``cond``)."""


def shared_metrics(metrics: list[str]) -> dict[str, list[str]]:
    """Metrics named ``<head>/<measure>`` grouped by measure, where two or more heads share one
    (``{"accuracy": ["type/accuracy", "root/accuracy", "bass/accuracy"]}``): a classifier's
    per-head accuracies drawn in one plot beside the losses."""
    by: dict[str, list[str]] = {}
    for metric in metrics:
        head, sep, measure = metric.rpartition("/")
        if sep and head:
            by.setdefault(measure, []).append(metric)
    return {measure: group for measure, group in by.items() if len(group) > 1}


def plot_views(model: RunModel) -> list[View]:
    """The views ``h`` steps through after all heads: each head, each measure the heads share
    (every head's accuracy in one plot), each validation metric, then each epoch hook group,
    for whatever the run's family measures."""
    metrics = model.metrics
    views = [View("head", h) for h in model.heads]
    views += [View("metrics", m) for m in shared_metrics(metrics)]
    views += [View("metric", m) for m in metrics]
    views += [View("group", g) for g in model.hook_groups]
    return views


def extra_views(model: RunModel) -> int:
    """How many views come after the heads (metrics and hook groups)."""
    return len(plot_views(model)) - len(model.heads)


def build_heads(
    model: RunModel, opts: PlotOptions
) -> tuple[list[PlotSeries], list[LegendEntry], str]:
    """Series, legend and title of the second plot, for the view ``opts.head_index``."""
    legend: list[LegendEntry] = []
    series = []
    heads = model.heads
    views = plot_views(model)
    view = views[opts.head_index] if 0 <= opts.head_index < len(views) else None
    if view is not None and view.kind == "metric":
        name = names.val_metric(view.name)
        xs, ys = model.xy(name, opts.x)
        series.append(PlotSeries(view.name, xs, ys, VAL_COLOR, markers=True, glyph=VAL_GLYPH))
        way = direction(model.family, name)
        legend.append(_entry(model.series.get(name), VAL_GLYPH, VAL_COLOR, view.name, way))
        return series, legend, f"val {view.name} · each validation (h: next)"
    if view is not None and view.kind == "metrics":
        for i, metric in enumerate(shared_metrics(model.metrics)[view.name]):
            color, glyph = _style(i)
            name = names.val_metric(metric)
            xs, ys = model.xy(name, opts.x)
            series.append(PlotSeries(metric, xs, ys, color, markers=True, glyph=glyph))
            label = metric.rpartition("/")[0]
            way = direction(model.family, name)
            legend.append(_entry(model.series.get(name), VAL_GLYPH, color, label, way, glyph))
        return series, legend, f"val {view.name} · every head (h: next)"
    if view is not None and view.kind == "group":
        for i, name in enumerate(model.hook_groups[view.name]):
            color, glyph = _style(i)
            xs, ys = model.xy(name, opts.x)
            series.append(PlotSeries(name, xs, ys, color, markers=True, glyph=glyph))
            label = name.removeprefix(view.name + "/")
            way = direction(model.family, name)
            legend.append(_entry(model.series.get(name), VAL_GLYPH, color, label, way, glyph))
        return series, legend, f"{group_title(model.family, view.name)} (h: next)"
    if view is None:
        for i, head in enumerate(heads):
            color, glyph = _style(i)
            xs, ys = model.xy(train_name(head), opts.x, opts.smoothing)
            series.append(PlotSeries(head, xs, ys, color, glyph=glyph))
            train = model.series.get(train_name(head))
            legend.append(_entry(train, "━", color, head, mark=glyph))
        return series, legend, f"heads · train · all {len(heads)} (h: one head)"
    head = view.name
    series, legend = _train_and_val(model, opts, head)
    return series, legend, f"head {head} ({opts.head_index + 1}/{len(heads)}) · train and val"


class LossPanel(Vertical):
    """A titled plot with a one-or-more-line legend above it."""

    DEFAULT_CSS = """
    LossPanel { height: 1fr; }
    """
    _title: str | None = None

    def compose(self) -> ComposeResult:
        yield Legend()
        yield LinePlot()

    @property
    def plot(self) -> LinePlot:
        return self.query_one(LinePlot)

    @property
    def legend(self) -> Legend:
        return self.query_one(Legend)

    def show(
        self,
        title: str,
        series: list[PlotSeries],
        legend: list[LegendEntry],
        opts: PlotOptions,
        empty: str,
    ) -> None:
        if title != self._title:  # setting it repaints the whole panel, border and all
            self._title = title
            self.border_title = title
        self.legend.set_entries(legend)
        self.plot.set_series(
            series,
            log_y=opts.log_y,
            x_label=x_labeller(opts.x),
            x_min_step=1.0 if opts.x == "step" else 0.0,
            empty=empty,
        )
