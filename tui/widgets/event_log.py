"""The run screen's event log: checkpoints, validations (early-stopping counter), warnings,
errors and state changes, newest at the bottom."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from podium.tui.model import LogEntry, RunModel

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}


class EventLog(RichLog):
    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=500, wrap=True, markup=False, highlight=False)
        self._seen = 0

    def follow(self, model: RunModel) -> None:
        """Write the entries the model gained since the last call."""
        new = model.log_version - self._seen
        if new <= 0:
            return
        entries = list(model.log)[-min(new, len(model.log)) :]
        self._seen = model.log_version
        for entry in entries:
            self.write(self.line(entry))

    @staticmethod
    def line(entry: LogEntry) -> Text:
        t = Text(time.strftime("%H:%M:%S ", time.localtime(entry.wall)), style="dim")
        t.append(f"{entry.step} ", style="dim")
        t.append(entry.text, style=LEVEL_STYLES.get(entry.level, ""))
        return t
