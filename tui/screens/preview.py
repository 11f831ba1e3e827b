"""Generation previews in the dashboard: the form (``GenerateModal``) and the result
(``PreviewScreen``: piano roll, statistics, file paths, and every earlier sample of the run).

Generating runs in a thread worker of the dashboard, from a checkpoint file or (for a run trained
here) from a copy of the live weights taken between two steps: training never pauses and its RNG
is never touched (the sampler has its own generator). Nothing here imports torch at module level:
the first preview pays for it, attaching and browsing do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

LIVE = "live"
"""The checkpoint field's value for "a copy of the weights training now"."""


@dataclass(frozen=True, kw_only=True)
class PreviewForm:
    """What the user asked for; validated further by the engine (conditioning values)."""

    checkpoint: str
    emotion: str = ""
    key: str = ""
    bars: int = 8
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0


def parse_form(values: dict[str, str]) -> PreviewForm:
    """The form's text fields as a ``PreviewForm``; ValueError naming the field when wrong."""

    def number(name: str, cast, low: float, high: float | None = None) -> Any:
        text = values.get(name, "").strip()
        if not text:
            return None
        try:
            value = cast(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"{name}: must be {bound} (got {text})")
        return value

    checkpoint = values.get("checkpoint", "").strip() or "latest"
    bars = number("bars", int, 1, 256)
    seed = number("seed", int, 0)
    return PreviewForm(
        checkpoint=checkpoint,
        emotion=values.get("emotion", "").strip(),
        key=values.get("key", "").strip(),
        bars=8 if bars is None else bars,
        temperature=number("temperature", float, 1e-3, 10.0),
        top_p=number("top-p", float, 1e-3, 1.0),
        seed=0 if seed is None else seed,
    )


class GenerateModal(ModalScreen[PreviewForm | None]):
    """Conditioning, length, sampling and seed for one preview."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    FIELDS = ("checkpoint", "emotion", "key", "bars", "temperature", "top-p", "seed")

    def __init__(self, *, checkpoint: str, live: bool, hints: dict[str, str]) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.live = live
        self.hints = hints

    def compose(self) -> ComposeResult:
        defaults = {"checkpoint": self.checkpoint, "bars": "8", "seed": "0"}
        placeholders = {
            "checkpoint": f"a checkpoint name{' or live' if self.live else ''}",
            "emotion": self.hints.get("emotion", "Q1..Q4 (blank: any)"),
            "key": self.hints.get("key", "e.g. C:maj, a:min (blank: any)"),
            "bars": "length in bars",
            "temperature": "blank: the profile's",
            "top-p": "blank: the profile's",
            "seed": "same seed, same MIDI",
        }
        with Vertical(classes="dialog"):
            yield Label("Generate a preview (training goes on)", classes="question")
            with Grid(id="preview-form"):
                for name in self.FIELDS:
                    yield Label(name)
                    yield Input(
                        value=defaults.get(name, ""), placeholder=placeholders[name], id=f"f-{name}"
                    )
            yield Static("", classes="error", id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Generate", id="go", variant="primary")
                yield Button("Cancel", id="cancel")
            yield Label("Enter generates · Tab moves · Escape cancels", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#f-emotion", Input).focus()

    def _submit(self) -> None:
        values = {name: self.query_one(f"#f-{name}", Input).value for name in self.FIELDS}
        try:
            form = parse_form(values)
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss(form)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass
class SampleShown(Message):
    """A sample's MIDI was read (thread) and is ready to draw."""

    path: Path
    midi: Any
    stats: Any
    error: str | None = None


class PreviewScreen(Screen):
    """A sample as a piano roll with its statistics, and the run's other samples."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "wav", "WAV", tooltip="Render the shown sample to WAV next to its MIDI"),
        Binding("escape", "back", "Back", tooltip="Back to the run screen"),
    ]

    def __init__(self, *, samples_dir: Path, show: Path | None = None) -> None:
        super().__init__()
        self.samples_dir = samples_dir
        self.show_path = show
        self.current: Path | None = None

    def compose(self) -> ComposeResult:
        from tui.widgets.piano_roll import PianoRoll

        yield Static(id="preview-title")
        with Horizontal(id="preview-body"):
            roll = PianoRoll(id="piano-roll")
            roll.border_title = "piano roll"
            yield roll
            samples = OptionList(id="samples")
            samples.border_title = "samples (Enter shows)"
            yield samples
        yield Static(id="preview-stats")
        yield Footer()

    def on_mount(self) -> None:
        self.reload_samples()
        if self.show_path is not None:
            self.load(self.show_path)

    def reload_samples(self) -> None:
        options = self.query_one("#samples", OptionList)
        options.clear_options()
        files = sorted(self.samples_dir.glob("*.mid"), key=lambda p: p.stat().st_mtime)
        for path in reversed(files):  # newest first
            options.add_option(Option(path.stem, id=str(path)))
        if not files:
            options.add_option(Option("no samples yet", disabled=True))

    @on(OptionList.OptionSelected, "#samples")
    def _pick(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.load(Path(event.option.id))

    @work(thread=True, exclusive=True, group="sample", exit_on_error=False)
    def load(self, path: Path) -> None:
        import pretty_midi

        from engine.music_stats import analyse

        try:
            midi = pretty_midi.PrettyMIDI(str(path))
            stats = analyse(midi)
        except Exception as exc:
            self.post_message(SampleShown(path, None, None, f"{path.name}: {exc}"))
            return
        self.post_message(SampleShown(path, midi, stats))

    def on_sample_shown(self, message: SampleShown) -> None:
        from tui.widgets.piano_roll import PianoRoll

        if message.error is not None:
            self.notify(message.error, severity="error")
            return
        self.current = message.path
        title = Text("preview  ", style="bold")
        title.append(str(message.path), style="dim")
        wav = message.path.with_suffix(".wav")
        if wav.exists():
            title.append(f"\n         {wav}", style="dim")
        self.query_one("#preview-title", Static).update(title)
        self.query_one(PianoRoll).show(message.midi)
        self.query_one("#preview-stats", Static).update(describe_stats(message.stats))

    @work(thread=True, group="wav", exit_on_error=False)
    def action_wav(self) -> None:
        path = self.current
        if path is None:
            return
        from engine.generate import render_wav

        try:
            wav = render_wav(path, path.with_suffix(".wav"))
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"WAV: {exc}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"wrote {wav}")
        self.load(path)

    def action_back(self) -> None:
        self.app.pop_screen()


def describe_stats(stats: Any) -> Text:
    """One or two lines of a sample's statistics (whatever the analyser reports)."""
    if hasattr(stats, "line"):
        return Text(stats.line())
    t = Text()
    fields = getattr(stats, "__dataclass_fields__", {})
    for i, name in enumerate(fields):
        value = getattr(stats, name)
        if isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (tuple, list)):
            value = "–".join(str(v) for v in value)
        t.append(("  " if i else "") + name.replace("_", " "), style="dim")
        t.append(f" {value}")
    return t
