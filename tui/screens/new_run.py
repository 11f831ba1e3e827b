"""The short form that starts a run of a profile from the home screen.

It checks what it can before anything starts (the name, the numbers, every override against the
profile, with the loader's file:line messages) and shows the problem under the form; a valid
form returns a ``StartRequest``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from podium.engine.errors import PodiumError
from podium.engine.runs import check_run_id
from podium.tui.live import StartRequest

COMMON_KEYS = "train.lr  train.batch_size  train.epochs  train.device  data.seq_len"


def parse_form(
    profile_path: Path,
    root: Path,
    *,
    name: str,
    seed: str,
    max_steps: str,
    overrides: str,
) -> StartRequest:
    """The form's fields as a request; ValueError with one line naming the field otherwise."""
    name = name.strip()
    if name:
        try:
            check_run_id(name, what="run name")
        except PodiumError as exc:
            raise ValueError(str(exc)) from None
        if (root / name).exists():
            raise ValueError(f"run name {name!r}: a run with that id already exists in {root}")
    items = []
    try:
        items = shlex.split(overrides)
    except ValueError as exc:
        raise ValueError(f"overrides: {exc}") from None
    for item in items:
        if "=" not in item:
            raise ValueError(f"overrides: {item!r} is not KEY=VALUE (e.g. train.lr=3e-4)")
    if seed.strip():
        try:
            items.append(f"train.seed={int(seed)}")
        except ValueError:
            raise ValueError(f"seed: expected a whole number, got {seed.strip()!r}") from None
    steps = None
    if max_steps.strip():
        try:
            steps = int(max_steps)
        except ValueError:
            steps = 0
        if steps < 1:
            raise ValueError(f"max steps: expected a whole number >= 1, got {max_steps.strip()!r}")
    try:
        from podium.engine.config import load_profile  # loads the model families (torch): on use

        load_profile(profile_path, items)  # the loader's messages name the key and the fix
    except PodiumError as exc:
        raise ValueError(str(exc)) from None
    return StartRequest(
        profile_path=profile_path,
        overrides=tuple(items),
        root=root,
        name=name or None,
        max_steps=steps,
    )


class NewRunModal(ModalScreen[StartRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, profile_path: Path, root: Path, *, seed: int | None = None) -> None:
        super().__init__()
        self.profile_path = profile_path
        self.root = root
        self.seed = seed

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog new-run"):
            yield Label(f"New run of {self.profile_path.name}", classes="question")
            with Grid(classes="form"):
                yield Label("run name")
                yield Input(placeholder="automatic: <profile>-<date>-<time>", id="name")
                yield Label("seed")
                yield Input(
                    placeholder=f"profile's ({self.seed})" if self.seed is not None else "",
                    id="seed",
                    type="integer",
                )
                yield Label("max steps")
                yield Input(placeholder="the whole schedule", id="max-steps", type="integer")
                yield Label("overrides")
                yield Input(placeholder="KEY=VALUE ... e.g. train.lr=1e-3", id="overrides")
            yield Label(f"common keys: {COMMON_KEYS}", classes="hint")
            yield Static("", classes="error", id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Start", id="start", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def _value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value

    def submit(self) -> None:
        try:
            request = parse_form(
                self.profile_path,
                self.root,
                name=self._value("name"),
                seed=self._value("seed"),
                max_steps=self._value("max-steps"),
                overrides=self._value("overrides"),
            )
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss(request)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
