"""The run screen's checkpoint table and the messages its keys send up to the screen.

The table only shows rows and says what the user asked for (delete, keep, resume from, preview);
the screen, which knows the run and its session, does the work ("attributes down, messages up").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from podium.engine.checkpoints import CheckpointInfo
from podium.tui import format as fmt

COLUMNS = (
    ("name", "name"),
    ("step", "step"),
    ("epoch", "epoch"),
    ("val", "val loss"),
    ("size", "size"),
    ("age", "age"),
    ("keep", "keep"),
)
"""(key, header) of every column, in order."""
DROP_ORDER = ("epoch", "size", "val")
"""Columns left out, one by one, while the names do not fit (epoch names say their epoch and
validation loss); age and keep always stay."""
MIN_NAME = 6


class CheckpointTable(DataTable):
    """name, step, epoch, val loss, size, age, keep; row keys are checkpoint names.

    The columns are sized here, not by DataTable (which widens every column to its longest
    cell, so that one ``epoch-*`` name pushed age and keep out of the side panel): the other
    columns take what their cells need, the name column what is left, and names that still do
    not fit end in an ellipsis.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "request('delete')", "Delete", tooltip="Delete the checkpoint (asks)"),
        Binding("k", "request('keep')", "Keep", tooltip="Keep: exempt from retention (toggle)"),
        Binding("r", "request('resume')", "New run", tooltip="New run from this checkpoint"),
        Binding("p", "request('preview')", "Preview", tooltip="Preview from this checkpoint"),
    ]
    HELP_GROUP = "checkpoints table (when focused)"
    DEFAULT_CSS = """
    CheckpointTable { scrollbar-gutter: stable; scrollbar-size-vertical: 1; overflow-x: hidden; }
    """

    @dataclass
    class Action(Message):
        """The user asked for ``action`` on the checkpoint named ``name``."""

        table: CheckpointTable
        action: str
        name: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.infos: dict[str, CheckpointInfo] = {}
        self._laid_out: tuple = ()

    def on_mount(self) -> None:
        self._fill()

    def on_resize(self) -> None:
        self._fill()

    def show(self, infos: Sequence[CheckpointInfo]) -> None:
        """Replace the rows, keeping the cursor on the same checkpoint where it still exists."""
        self.infos = {i.name: i for i in infos}
        self._fill()

    @staticmethod
    def cells(i: CheckpointInfo) -> dict[str, str]:
        return {
            "name": i.name,
            "step": str(i.step),
            "epoch": f"{i.epoch:.2f}",
            "val": fmt.num(i.val_loss, 4) if i.val_loss is not None else "",
            "size": fmt.size(i.size),
            "age": fmt.age(i.wall),
            "keep": "✓" if i.keep else "",
        }

    def layout_columns(self, width: int, rows: list[dict[str, str]]) -> dict[str, int]:
        """The shown columns and their widths for ``width`` cells of content."""
        pad = 2 * self.cell_padding
        widths = {key: max([len(header), *(len(r[key]) for r in rows)]) for key, header in COLUMNS}
        shown = [key for key, _ in COLUMNS]

        def room() -> int:
            return width - sum(widths[k] + pad for k in shown if k != "name") - pad

        for key in DROP_ORDER:
            if room() >= widths["name"]:
                break
            shown.remove(key)
        name = max(MIN_NAME, min(widths["name"], room()))
        return {k: (name if k == "name" else widths[k]) for k in shown}

    def _fill(self) -> None:
        """(Re)build columns and rows for the current width and checkpoints."""
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        infos = sorted(self.infos.values(), key=lambda i: (-i.step, i.name))
        rows = [self.cells(i) for i in infos]
        columns = self.layout_columns(width, rows)
        key = (width, tuple(columns.items()), tuple(tuple(r.values()) for r in rows))
        if key == self._laid_out:
            return
        self._laid_out = key
        selected = self.selected_name
        self.clear(columns=True)
        headers = dict(COLUMNS)
        for column, w in columns.items():
            self.add_column(headers[column], key=column, width=w)
        for row in rows:
            cells = []
            for column, w in columns.items():
                text = row[column]
                if column == "name":
                    if len(text) > w:
                        text = text[: w - 1] + "…"
                    cells.append(Text(text))
                elif column == "keep":
                    cells.append(Text(text))
                else:
                    cells.append(Text(text, justify="right"))
            self.add_row(*cells, key=row["name"])
        if selected is not None and selected in self.infos:
            self.move_cursor(row=self.get_row_index(selected))

    @property
    def selected_name(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def action_request(self, action: str) -> None:
        name = self.selected_name
        if name is None:
            self.notify("no checkpoint selected (the run has none yet)", severity="warning")
            return
        self.post_message(self.Action(self, action, name))
