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


class CheckpointTable(DataTable):
    """name, step, epoch, val loss, size, age, keep; row keys are checkpoint names."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "request('delete')", "Delete", tooltip="Delete the checkpoint (asks)"),
        Binding("k", "request('keep')", "Keep", tooltip="Keep: exempt from retention (toggle)"),
        Binding("r", "request('resume')", "New run", tooltip="New run from this checkpoint"),
        Binding("p", "request('preview')", "Preview", tooltip="Preview from this checkpoint"),
    ]
    HELP_GROUP = "checkpoints table (when focused)"

    @dataclass
    class Action(Message):
        """The user asked for ``action`` on the checkpoint named ``name``."""

        table: CheckpointTable
        action: str
        name: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.infos: dict[str, CheckpointInfo] = {}

    def on_mount(self) -> None:
        for label, key in (
            ("name", "name"),
            ("step", "step"),
            ("epoch", "epoch"),
            ("val loss", "val"),
            ("size", "size"),
            ("age", "age"),
            ("keep", "keep"),
        ):
            self.add_column(label, key=key)

    def show(self, infos: Sequence[CheckpointInfo]) -> None:
        """Replace the rows, keeping the cursor on the same checkpoint where it still exists."""
        selected = self.selected_name
        self.infos = {i.name: i for i in infos}
        self.clear()
        for i in sorted(infos, key=lambda i: (-i.step, i.name)):
            self.add_row(
                i.name,
                Text(str(i.step), justify="right"),
                Text(f"{i.epoch:.2f}", justify="right"),
                Text(fmt.num(i.val_loss, 4) if i.val_loss is not None else "", justify="right"),
                Text(fmt.size(i.size), justify="right"),
                Text(fmt.age(i.wall), justify="right"),
                "✓" if i.keep else "",
                key=i.name,
            )
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
