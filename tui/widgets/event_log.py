"""The run screen's event log: checkpoints, validations (early-stopping counter), warnings,
errors and state changes, newest at the bottom."""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text
from textual import events
from textual.widgets import RichLog

from podium.tui.model import LogEntry, RunModel

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    """A ``RichLog`` that wraps each entry at its own width, text under text.

    RichLog wraps a line once, as it is written, at no less than ``min_width`` (78 by
    default): in the 36-to-52-column side panel that cut every long entry at the panel's edge
    (words lost, the wrapped rest orphaned on the next line). Here lines are as wide as the
    panel, and a width change rewrites the entries at the new width.
    """

    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """
    HELP_GROUP = "events log (when focused)"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, max_lines=500, wrap=True, markup=False, highlight=False, min_width=1
        )
        self._seen = 0
        self._model: RunModel | None = None
        self._width = 0

    def follow(self, model: RunModel) -> None:
        """Write the entries the model gained since the last call."""
        self._model = model
        new = model.log_version - self._seen
        if new <= 0:
            return
        entries = list(model.log)[-min(new, len(model.log)) :]
        self._seen = model.log_version
        for entry in entries:
            self.write(self.line(entry))

    def on_resize(self, event: events.Resize) -> None:
        width = self.scrollable_content_region.width
        if width == self._width:
            return
        self._width = width
        if self._model is not None and self.lines:
            self.clear()
            self._seen = 0
            self.follow(self._model)

    @staticmethod
    def line(entry: LogEntry) -> Table:
        """Time and step, then the text; text that wraps stays in its column."""
        grid = Table.grid(padding=(0, 1, 0, 0), expand=True)
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(ratio=1)
        stamp = time.strftime("%H:%M:%S", time.localtime(entry.wall)) + f" {entry.step}"
        grid.add_row(stamp, Text(entry.text, style=LEVEL_STYLES.get(entry.level, "")))
        return grid
