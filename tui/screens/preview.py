"""Generation previews in the dashboard: the form (``GenerateModal``) and the result
(``PreviewScreen``: piano roll, statistics, file paths, and every earlier sample of the run).

The form is made from the run's family's sampler: a field per conditioning option (its help as
the placeholder, its choices checked), beside the checkpoint, length, sampling and seed fields
every family shares. Generating runs in a thread worker of the dashboard, from a checkpoint file
or (for a run trained here) from a copy of the live weights taken between two steps: training
never pauses and its RNG is never touched (the sampler has its own generator); an attached run
generates from its live weights through its control socket. Nothing here imports torch at module
level: the first preview pays for it, attaching and browsing do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from podium.engine.families.registry import ConditionOption

LIVE = "live"
"""The checkpoint field's value for "a copy of the weights training now"."""
FIXED_BEFORE = ("checkpoint",)
FIXED_AFTER = ("bars", "temperature", "top-p", "seed")
"""The fields every family's form has, around its sampler's conditioning options."""


@dataclass(frozen=True, kw_only=True)
class PreviewForm:
    """What the user asked for; validated further by the engine (the sampler's ``check``)."""

    checkpoint: str
    conditioning: dict[str, str] = field(default_factory=dict)
    """Option name -> value; blank values are drawn with the seed."""
    bars: int = 8
    temperature: float | None = None
    top_p: float | None = None
    seed: int = 0


def option_key(name: str) -> str:
    """A conditioning option's key in the form's values (and, after "f-", its widget id): its
    name, unless a shared field has that name."""
    return f"opt-{name}" if name in (*FIXED_BEFORE, *FIXED_AFTER) else name


def field_id(name: str) -> str:
    """The widget id of a conditioning option's field."""
    return f"f-{option_key(name)}"


def parse_form(values: dict[str, str], options: Sequence[ConditionOption] = ()) -> PreviewForm:
    """The form's text fields (by field name; options by ``option_key``) as a ``PreviewForm``;
    ValueError naming the field when wrong. An option with choices takes one of them (any
    case; written back as the sampler spells it)."""

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
    conditioning: dict[str, str] = {}
    for option in options:
        text = values.get(option_key(option.name), "").strip()
        if text and option.choices:
            spelled = {c.upper(): c for c in option.choices}
            if text.upper() not in spelled:
                raise ValueError(f"{option.name}: one of {', '.join(option.choices)} (got {text})")
            text = spelled[text.upper()]
        conditioning[option.name] = text
    bars = number("bars", int, 1, 256)
    seed = number("seed", int, 0)
    return PreviewForm(
        checkpoint=checkpoint,
        conditioning=conditioning,
        bars=8 if bars is None else bars,
        temperature=number("temperature", float, 1e-3, 10.0),
        top_p=number("top-p", float, 1e-3, 1.0),
        seed=0 if seed is None else seed,
    )


class GenerateModal(ModalScreen[PreviewForm | None]):
    """Checkpoint, the sampler's conditioning options, length, sampling and seed for one
    preview."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        *,
        checkpoint: str,
        live: bool,
        options: Sequence[ConditionOption] = (),
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.live = live
        self.options = tuple(options)
        """The run's family's sampler options: a field each, between checkpoint and bars."""

    def _rows(self) -> list[tuple[str, str, str, str]]:
        """(label, widget id, value, placeholder) per field, in the form's order."""
        checkpoint = f"a checkpoint name{' or live' if self.live else ''}"
        rows = [("checkpoint", "f-checkpoint", self.checkpoint, checkpoint)]
        rows += [(o.name.replace("_", " "), field_id(o.name), "", o.help) for o in self.options]
        rows += [
            ("bars", "f-bars", "8", "length in bars"),
            ("temperature", "f-temperature", "", "blank: the profile's"),
            ("top-p", "f-top-p", "", "blank: the profile's"),
            ("seed", "f-seed", "0", "same seed, same MIDI"),
        ]
        return rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Generate a preview (training goes on)", classes="question")
            with Grid(id="preview-form"):
                for label, widget_id, value, placeholder in self._rows():
                    yield Label(label)
                    yield Input(value=value, placeholder=placeholder, id=widget_id)
            yield Static("", classes="error", id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Generate", id="go", variant="primary")
                yield Button("Cancel", id="cancel")
            yield Label("Enter generates · Tab moves · Escape cancels", classes="hint")

    def on_mount(self) -> None:
        first = field_id(self.options[0].name) if self.options else "f-bars"
        self.query_one(f"#{first}", Input).focus()

    def values(self) -> dict[str, str]:
        """The fields' text by field name (options by ``option_key``)."""
        out = {n: self.query_one(f"#f-{n}", Input).value for n in (*FIXED_BEFORE, *FIXED_AFTER)}
        for option in self.options:
            key = option_key(option.name)
            out[key] = self.query_one(f"#f-{key}", Input).value
        return out

    def _submit(self) -> None:
        try:
            form = parse_form(self.values(), self.options)
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
    meta: dict[str, Any] | None = None
    """The sample's sidecar (``generate.read_meta``): where it came from, what ended it."""


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
        from podium.tui.widgets.piano_roll import PianoRoll

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

        from podium.engine.generate import read_meta
        from podium.engine.music_stats import analyse

        try:
            midi = pretty_midi.PrettyMIDI(str(path))
            stats = analyse(midi)
        except Exception as exc:
            self.post_message(SampleShown(path, None, None, f"{path.name}: {exc}"))
            return
        self.post_message(SampleShown(path, midi, stats, meta=read_meta(path)))

    def on_sample_shown(self, message: SampleShown) -> None:
        from podium.tui.widgets.piano_roll import PianoRoll

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
        stats = describe_stats(message.stats)
        if message.meta is not None:
            stats = Text("\n").join([*describe_meta(message.meta, message.stats), stats])
        self.query_one("#preview-stats", Static).update(stats)

    @work(thread=True, group="wav", exit_on_error=False)
    def action_wav(self) -> None:
        path = self.current
        if path is None:
            return
        from podium.engine.generate import render_wav

        try:
            wav = render_wav(path, path.with_suffix(".wav"))
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"WAV: {exc}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"wrote {wav}")
        self.load(path)

    def action_back(self) -> None:
        self.app.pop_screen()


def describe_meta(meta: dict[str, Any], stats: Any = None) -> list[Text]:
    """A sample's sidecar in a line or two: the weights and seed it came from, each
    conditioning value asked or drawn (the key beside the one the analyser detects), and, when
    it ended short of what was asked, why and what to change."""
    from podium.engine.generate import conditioning_words, source_words

    conditioning = meta.get("conditioning")
    conditioning = conditioning if isinstance(conditioning, dict) else {}
    drawn = meta.get("drawn") if isinstance(meta.get("drawn"), list) else []
    step = meta.get("step") if isinstance(meta.get("step"), int) else None
    detected = getattr(stats, "key", None) if getattr(stats, "notes", 0) else None
    first = Text(f"from {source_words(str(meta.get('checkpoint') or '?'), step)}", style="bold")
    first.append(f" · seed {meta.get('seed', '?')}")
    words = conditioning_words({str(k): str(v) for k, v in conditioning.items()}, drawn, detected)
    if words:
        first.append(f" · {words}")
    lines = [first]
    note = str(meta.get("note") or "")
    ended = str(meta.get("ended") or "?")
    if note:
        lines.append(Text(f"ended by {ended}: {note}", style="yellow"))
    else:
        lines.append(Text(f"ended by {ended}", style="dim"))
    return lines


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
