"""Small modal screens: confirm, change learning rate, quit with a live run, and help.

Each is a ``ModalScreen[T]`` that returns its answer through ``dismiss``; escape always cancels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import ClassVar

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static


class ConfirmModal(ModalScreen[bool]):
    """A question with a yes button (focused) and a cancel button.

    The question wraps inside the dialog (``.dialog Label`` in podium.tcss): a Label sizes to
    its text and was cut at the dialog's edge, mid-sentence, on an 80-column terminal."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("n", "cancel", "No", show=False),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, id="yes", variant="error" if self.danger else "primary")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_cancel(self) -> None:
        self.dismiss(False)


def parse_lr(text: str) -> float:
    """A learning rate from user text; ValueError with a sentence when it is not one."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number (e.g. 3e-4)") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"the learning rate must be a positive number (got {text.strip()})")
    return value


class LrModal(ModalScreen[float | None]):
    """Asks for a new learning rate; the schedule is rescaled from the current step on."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: float | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        now = "unknown" if self.current is None else f"{self.current:.3g}"
        with Vertical(classes="dialog"):
            yield Label(f"New learning rate (now {now}); the schedule continues from it:")
            yield Input(
                value="" if self.current is None else f"{self.current:.3g}",
                placeholder="e.g. 3e-4",
                id="lr",
            )
            yield Static("", classes="error", id="lr-error")
            yield Label("Enter applies · Escape cancels", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = parse_lr(event.value)
        except ValueError as exc:
            self.query_one("#lr-error", Static).update(str(exc))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitModal(ModalScreen[str]):
    """Quit while runs train here: stop them (each saves a checkpoint), leave them running in
    the background (``detach``), or cancel.

    "Leave it running" has the focus: ``q`` then a reflexive Enter must not end the training."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "choose('cancel')", "Cancel")]

    def __init__(self, run_names: Iterable[str]) -> None:
        super().__init__()
        self.run_names = list(run_names)

    def compose(self) -> ComposeResult:
        names = ", ".join(self.run_names)
        with Vertical(classes="dialog"):
            yield Label(f"Training in this dashboard: {names}.", classes="question")
            yield Label("Stop it, or leave it training in the background?")
            with Horizontal(classes="buttons"):
                yield Button("Stop and quit", id="stop", variant="error")
                yield Button("Leave it running", id="leave", variant="primary")
                yield Button("Cancel", id="cancel")
            yield Label(
                "Leave it running: the run continues from a checkpoint taken now, with no "
                "terminal; `podium attach` brings the dashboard back.",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


def help_table(sections: list[tuple[str, list[tuple[str, str]]]]) -> Group:
    """Sections of (key, description) rows; a description that wraps stays in its column
    (indented under itself, not back at the dialog's edge)."""
    parts: list[Text | Table] = []
    for title, rows in sections:
        if not rows:
            continue
        if parts:
            parts.append(Text())
        parts.append(Text(title, style="bold underline"))
        table = Table.grid(padding=(0, 2, 0, 0))
        table.add_column(justify="right", style="bold", no_wrap=True)
        table.add_column(ratio=1)
        for key, description in rows:
            table.add_row("  " + key, description)
        parts.append(table)
    return Group(*parts)


class HelpText(Widget):
    """The help's sections, laid out at the widget's width (descriptions wrap in their column);
    rendered to a ``Text``, so its plain text is what the screen shows."""

    DEFAULT_CSS = """
    HelpText { height: auto; }
    """

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.sections = sections

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(width))

    def _lines(self, width: int) -> list[Text]:
        console = self.app.console
        options = console.options.update_width(max(width, 20))
        lines = console.render_lines(help_table(self.sections), options, pad=False)
        return [Text.assemble(*((seg.text, seg.style) for seg in line)) for line in lines]

    def render(self) -> Text:
        return Text("\n").join(self._lines(self.content_size.width or 76))


class HelpScreen(ModalScreen[None]):
    """Every binding of the screen underneath and of the app, with its key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label("Keys", classes="question")
            with VerticalScroll():
                yield HelpText(self.sections, id="help-text")
            yield Label("Escape closes · ctrl+p opens the command palette", classes="hint")

    def text(self, width: int = 76) -> str:
        """The help's plain text as shown ``width`` columns wide (tests, and a readable diff)."""
        console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
        console.print(help_table(self.sections))
        return console.export_text()

    def action_close(self) -> None:
        self.dismiss(None)
