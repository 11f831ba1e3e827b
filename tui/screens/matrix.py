"""A run's matrix metrics (a confusion matrix...) as a heatmap: the latest value and its step.

Opened with ``m`` on the run screen when the run's family measures any; ``m`` here moves to the
next matrix, Escape closes. While the run trains, a newer validation's matrix replaces the shown
one (the screen re-reads the run's model every second). A big matrix (32 chord types) is
summarised in a line above it (the most confused pairs) and scrolls (arrows, Page Up/Down)
inside the dialog, so the title, summary and hint stay in an 80x24 terminal.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from podium.tui.model import RunModel
from podium.tui.widgets.heatmap import Heatmap, summary_line


class MatrixScreen(ModalScreen[None]):
    """The latest value of one of the run's matrices, ``m`` for the next."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "next", "Next matrix", tooltip="Show the run's next matrix metric"),
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, model: RunModel, index: int = 0) -> None:
        super().__init__()
        self.model = model
        self.index = index
        self._shown: tuple | None = None

    @property
    def names(self) -> list[str]:
        return self.model.matrix_keys

    @property
    def name(self) -> str:
        names = self.names
        return names[self.index % len(names)] if names else ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog matrix"):
            yield Static(id="matrix-title", classes="question")
            yield Static(id="matrix-summary")
            with VerticalScroll(id="matrix-scroll"):
                yield Heatmap(id="heatmap")
            yield Label("", id="matrix-hint", classes="hint")

    def on_mount(self) -> None:
        self._draw()
        self.set_interval(1.0, self._draw)
        self.query_one("#matrix-scroll").focus()  # the arrows and Page Up/Down scroll it

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The scroll area as tall as the dialog allows (90% of the screen, less its border,
        padding, title and its margin, summary and hint) and as wide as the drawn heatmap plus its scrollbar:
        a scrolling container takes neither from its content by itself."""
        summary = 1 if self.query_one("#matrix-summary").display else 0
        scroll = self.query_one("#matrix-scroll")
        scroll.styles.max_height = max(int(self.size.height * 0.9) - 7 - summary, 4)
        self._fit_width()

    def _fit_width(self) -> None:
        room = max(int(self.size.width * 0.95) - 6, 20)  # the dialog's max, less border/padding
        heatmap = self.query_one(Heatmap)
        width = max((t.cell_len for t in heatmap.lines(room - 1)), default=1)
        self.query_one("#matrix-scroll").styles.width = min(width + 1, room)

    def _draw(self) -> None:
        names, name = self.names, self.name
        held = self.model.matrices.get(name)
        key = (name, None if held is None else held[0], id(held))
        if key == self._shown:
            return
        self._shown = key
        title = Text(name or "no matrix metric", style="bold")
        if held is not None:
            matrix = held[1]
            title.append(f" · step {held[0]}", style="")
            title.append(f" · {len(matrix.rows)} x {len(matrix.cols)}", style="dim")
        if len(names) > 1:
            title.append(f"  ({self.index % len(names) + 1}/{len(names)})", style="dim")
        self.query_one("#matrix-title", Static).update(title)
        self.query_one(Heatmap).show(None if held is None else held[1])
        summary = None if held is None else summary_line(held[1], top=3)
        self.query_one("#matrix-summary", Static).update(summary or "")
        self.query_one("#matrix-summary", Static).display = summary is not None
        self._fit()
        hint = ("m: next matrix · " if len(names) > 1 else "") + "Escape closes"
        if held is not None and len(held[1].rows) > 12:  # taller than 80x24 holds
            hint = "↑↓ scroll · " + hint
        if held is None:
            hint = "measured at each validation; none yet · " + hint
        self.query_one("#matrix-hint", Label).update(hint)

    def action_next(self) -> None:
        if len(self.names) > 1:
            self.index = (self.index + 1) % len(self.names)
            self._draw()

    def action_close(self) -> None:
        self.dismiss(None)
