"""The run screen: loss plots, training numbers, resources, checkpoints and the event log.

It shows one run from one of two sources:

- a live run: a ``LiveRun`` trained in this process, or an ``AttachedRun`` (``podium.tui.remote``)
  trained by another process and reached through its control socket. The app drains its event
  inbox at a bounded rate and calls ``refresh_view``; keys send commands through
  ``live.controls()`` (the trainer itself, or the socket);
- a run directory (finished, stopped, or live in another process when attaching failed):
  history is read from its store in a thread worker, re-read every few seconds while another
  process trains it.

It knows no model family by name: the plots' views come from the series the run has (heads,
validation metrics, epoch-hook groups), ``m`` shows its matrix metrics (only when it has any),
and the preview form (``g``) is made from the family's sampler options.

Everything slow (store reads, checkpoint listing and file changes) runs in thread workers that
post messages back; the UI thread only folds results into the model and redraws.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    CheckpointInfo,
    list_checkpoints,
)
from podium.engine.events import CheckpointDeleted
from podium.engine.runs import RunDir
from podium.engine.store import CheckpointRecord, RunStore
from podium.tui.history import History, read_history, run_facts
from podium.tui.live import BranchRequest, LiveRun, branching_available, hint_for
from podium.tui.model import LogEntry, RunModel
from podium.tui.remote import AttachedRun, SocketControls
from podium.tui.screens.modals import ConfirmModal, LrModal
from podium.tui.widgets.checkpoints import CheckpointTable
from podium.tui.widgets.event_log import EventLog
from podium.tui.widgets.footer import PodiumFooter
from podium.tui.widgets.loss_panel import (
    LossPanel,
    PlotOptions,
    build_heads,
    build_total,
    extra_views,
)
from podium.tui.widgets.panels import ResourcesPanel, RunHeader, StatsPanel

if TYPE_CHECKING:
    from podium.engine.families.registry import SamplerSpec
    from podium.engine.trainer import Trainer

GPU_LINE = "no NVIDIA GPU"
RESUME_FROM_NOT_AVAILABLE = (
    "Resume from this checkpoint into a new run: not available yet (the resilience issue adds "
    "it). Today `podium resume RUN` continues a stopped run from its newest checkpoint."
)
"""Shown when the engine has no ``branch_session`` (the checkpoint-branching API)."""
FOLLOW_INTERVAL = 2.0
"""Seconds between store re-reads of a run that another process is training."""
PREVIEW_TIMEOUT = 300.0
"""Seconds a preview may take (the live weights' copy waits for a step boundary)."""
PLOT_INTERVAL = 3.8
"""Seconds between plot redraws from a live run's new steps: every other drain
(``PodiumApp.DRAIN_INTERVAL``, 2 s), while the numbers beside them follow every drain. Drawing
both plots and legends is two thirds of a frame's cost, which the run pays for while the UI
thread runs; a curve that gains its points every 4 s reads the same as one that gains them
every 2 (bench/bench_dashboard.py: the UI's CPU per second while a run trains)."""
TICK_INTERVAL = 2.0
"""Seconds between re-reads of the resources panel and the checkpoint ages (``_tick``). While a
live run's steps arrive, the tick runs inside a drain's redraw instead of its own timer, so the
panel repaints in a frame the numbers paint anyway (every drain: one frame per 2 s, not two)."""
PLOT_LATE = 0.5
"""How long after ``PLOT_INTERVAL`` a timer draws steps that no later drain brought."""


@dataclass
class HistoryLoaded(Message):
    history: History
    facts: Any = None


@dataclass
class CheckpointsLoaded(Message):
    infos: list[CheckpointInfo]


@dataclass
class PreviewReady(Message):
    """A preview's MIDI file was written (by the worker)."""

    path: Any
    text: str


@dataclass
class CommandDone(Message):
    """A command sent to the trainer finished (``error`` set when it failed)."""

    text: str
    error: str | None = None
    log: bool = False
    """Also add ``text`` to the event log (changes the engine's bus does not report)."""


TRAINER_ACTIONS = frozenset({"pause", "resume", "save_now", "stop_run", "change_lr"})
"""The keys that command the trainer: shown (footer, help, palette) while the run is live."""


class RunScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        # description: the footer's word; tooltip: what help (?) and the palette say.
        # Two bindings of space, one shown at a time (check_action): the footer says what
        # the key does now, "Resume" while the run is paused.
        Binding("space", "pause", "Pause", tooltip="Pause training"),
        Binding("space", "resume", "Resume", tooltip="Resume training"),
        Binding("s", "save_now", "Save", tooltip="Save a checkpoint now"),
        Binding("x", "stop_run", "Stop", tooltip="Stop the run (asks; saves a checkpoint)"),
        Binding("l", "change_lr", "LR", tooltip="Change the learning rate"),
        # An ended run hides the four above (check_action); their keys still say why not.
        Binding("space,s,x,l", "why_no_trainer", show=False),
        Binding("c", "focus_checkpoints", "Ckpts", tooltip="Go to the checkpoints table"),
        Binding(
            "g",
            "generate_preview",
            "Preview",
            show=False,
            tooltip="Generate a preview (MIDI) from a checkpoint or the live weights",
        ),
        Binding("y", "toggle_log", "Log", tooltip="Toggle a log scale on the loss axis"),
        Binding("t", "cycle_x", "X", tooltip="X axis: step or wall time"),
        Binding(
            "h",
            "cycle_heads",
            "Heads",
            tooltip="Second plot: all heads, each head, then each metric and hook group",
        ),
        Binding(
            "m",
            "show_matrix",
            "Matrix",
            tooltip="Show the latest matrix metric as a heatmap (m there: the next one)",
        ),
        Binding(
            "left_square_bracket",
            "smooth(-1)",
            "Smooth-",
            key_display="[",
            tooltip="Less EMA smoothing",
        ),
        Binding(
            "right_square_bracket",
            "smooth(1)",
            "Smooth+",
            key_display="]",
            tooltip="More EMA smoothing",
        ),
        Binding("a", "attach", "Attach", show=False, tooltip="Attach to a run trained elsewhere"),
        Binding("escape", "back", "Back", tooltip="Back to the home screen"),
    ]
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (110, "-wide")]
    AUTO_FOCUS = ""  # keys go to the screen until the user focuses the checkpoints (c)

    def __init__(
        self, *, live: LiveRun | AttachedRun | None = None, run: RunDir | None = None
    ) -> None:
        super().__init__()
        if (live is None) == (run is None):
            raise ValueError("RunScreen: give exactly one of live= or run=")
        self.live = live
        self.run_dir = run
        self.model: RunModel = live.model if live is not None else RunModel()
        self.options = PlotOptions()
        self._drawn: tuple | None = None
        self._plotted = 0.0
        """When the plots were last drawn (monotonic seconds)."""
        self._plot_timer: Timer | None = None
        self._ticked = 0.0
        self._stepped = 0.0
        """When the tick last ran, and when a drain last brought steps (monotonic seconds)."""
        self._ckpt_seen = -1
        self._follow = False
        self._last_event_id = 0
        self._has_matrix = False
        self._controls = (False, True)  # (paused, live): what space says, whether it is shown
        self._matrix_index = 0

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        with Horizontal(id="run-body"):
            with Vertical(id="plots"):
                yield LossPanel(id="total-panel")
                yield LossPanel(id="heads-panel")
            with Vertical(id="side"):
                stats = StatsPanel(id="stats")
                stats.border_title = "training"
                yield stats
                res = ResourcesPanel(id="resources")
                res.border_title = "resources"
                yield res
                table = CheckpointTable(id="checkpoints")
                table.border_title = "checkpoints (c)"
                yield table
                log = EventLog(id="events")
                log.border_title = "events"
                yield log
        yield PodiumFooter(compact=True)

    @property
    def table(self) -> CheckpointTable:
        return self.query_one(CheckpointTable)

    def on_mount(self) -> None:
        if self.live is not None and not self.live.local:
            self.live.poll_status()  # the trainer's pid, RAM and CUDA memory for the panel
        self.query_one(ResourcesPanel).sample(GPU_LINE)
        self.set_interval(TICK_INTERVAL, self._timed_tick)
        if self.run_dir is not None:
            self._init_stored(self.run_dir)
            # Before the first paint, so the store reads overlap with composing the screen; the
            # plot's width is not known yet: size the query from the terminal's.
            self.model.max_points = max(200, 2 * self.app.size.width)
            self._load_history()
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def on_unmount(self) -> None:
        if isinstance(self.live, AttachedRun):  # left for good: stop watching (see viewer_left)
            self.app.viewer_left(self.live)  # type: ignore[attr-defined]

    def _fit_points(self) -> None:
        """Keep about two points per plot cell column in memory (and per store query)."""
        width = self.query_one("#total-panel", LossPanel).plot.content_size.width
        self.model.max_points = max(200, 2 * width)

    # -- data --------------------------------------------------------------------------------

    def _init_stored(self, run: RunDir) -> None:
        m = self.model
        m.run_id = run.id
        try:
            info = run.info()
            m.profile, m.family = info.profile, info.family
        except Exception as exc:
            m.reason = str(exc)
        self._family_order(m)
        state, reason = run.status()
        m.state, m.reason = state, reason
        self._follow = state == "live"

    @staticmethod
    def _family_order(m: RunModel) -> None:
        """A stored run's metrics and matrices in its family's declared order (a live run's
        session or status gives it), not the store's alphabetical one: "type" before "bass"."""
        if not m.family:
            return
        from podium.engine.errors import ProfileError
        from podium.engine.families.registry import get_family

        try:
            family = get_family(m.family)
        except ProfileError:
            return  # a family that no longer imports: the store's order
        m.metric_names = list(family.metrics)
        m.matrix_names = list(family.matrices)

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def _load_history(self) -> None:
        """Read the stored run (thread): loss series, stat values, events since the last read."""
        assert self.run_dir is not None
        history = read_history(
            self.run_dir.db_path,
            max_points=self.model.max_points,
            since_event=self._last_event_id,
        )
        self.post_message(HistoryLoaded(history, run_facts(self.run_dir)))

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        m, h = self.model, message.history
        facts = message.facts
        if facts is not None:
            m.device = m.device or facts.device
            m.total_steps = m.total_steps or facts.total_steps
            m.steps_per_epoch = m.steps_per_epoch or facts.steps_per_epoch
        m.load_history(h.points, last=h.last, matrices=h.matrices)
        m.load_events(h.events)
        self._last_event_id = max(self._last_event_id, h.last_event_id)
        if self.run_dir is not None:
            state, reason = self.run_dir.status()
            m.state, m.reason = state, reason
            self._follow = state == "live"
        m.checkpoints_version += 1
        self.refresh_view()

    @property
    def checkpoint_dir(self):
        if self.run_dir is not None:
            return self.run_dir.checkpoint_dir
        if self.live is not None and self.live.run_dir is not None:
            return self.live.run_dir.checkpoint_dir
        return None

    @work(thread=True, exclusive=True, group="checkpoints", exit_on_error=False)
    def _load_checkpoints(self) -> None:
        directory = self.checkpoint_dir
        self.post_message(CheckpointsLoaded(list_checkpoints(directory) if directory else []))

    def on_checkpoints_loaded(self, message: CheckpointsLoaded) -> None:
        self.table.show(message.infos)

    def _timed_tick(self) -> None:
        # Skipped while a live run's steps arrive: the drains' redraws run it (TICK_INTERVAL).
        drain = self.app.DRAIN_INTERVAL  # type: ignore[attr-defined]
        if time.monotonic() - self._stepped >= 1.5 * drain:
            self._tick()

    def _tick(self) -> None:
        """Every 2 s: resources, checkpoint ages, and a re-read of a run trained elsewhere."""
        self._ticked = time.monotonic()
        if self.live is not None and not self.live.local:
            self.live.poll_status()  # the trainer's pid, RAM and CUDA memory for the panel
        self.query_one(ResourcesPanel).sample(GPU_LINE)
        if self.table.row_count:  # re-list so the age column stays true
            self._load_checkpoints()
        if self._follow and self.run_dir is not None:
            self._load_history()

    # -- drawing -----------------------------------------------------------------------------

    def refresh_view(self, *, steps: bool = False) -> None:
        """Redraw from the model; plots only when the data or the plot options changed.

        ``steps``: what changed is events drained from a live run: the plots then wait until
        ``PLOT_INTERVAL`` has passed since they were last drawn."""
        m = self.model
        self._fit_points()
        note = ""
        if self.live is None:
            note = (
                "(live in another process: following its store)" if self._follow else "(read-only)"
            )
        elif self.live.phase == "preparing":
            note = "preparing data and model…" if self.live.local else "attaching…"
        elif not self.live.local:
            note = "(attached: q or ctrl+d leaves it training)"
        self.query_one(RunHeader).show(
            m, note=note, hint=hint_for(m.reason) if m.state == "failed" else ""
        )
        self.query_one(StatsPanel).show(m)
        has_matrix = bool(m.matrix_keys)
        controls = (m.state == "paused", m.is_live)
        if has_matrix != self._has_matrix or controls != self._controls:
            # m joins the footer (and help) once there is a matrix; space says Resume when
            # paused; the trainer's keys leave once the run has ended
            self._has_matrix, self._controls = has_matrix, controls
            self.refresh_bindings()
        key = (m.version, self.options, len(m.heads))
        if key != self._drawn:
            self._plots_due(key, steps)
        if steps:
            self._stepped = time.monotonic()
            if self._stepped - self._ticked >= TICK_INTERVAL - 0.8:
                self._tick()  # in this frame (see TICK_INTERVAL)
        self.query_one(EventLog).follow(m)
        if m.checkpoints_version != self._ckpt_seen and self.checkpoint_dir is not None:
            self._ckpt_seen = m.checkpoints_version
            self._load_checkpoints()

    def _plots_due(self, key: tuple, steps: bool) -> None:
        """Draw the plots now, or, when only a live run's new steps changed them and they were
        drawn less than ``PLOT_INTERVAL`` ago, once that much time has passed (with the data
        as it is then). Redrawing both plots and legends is most of what a drain costs the UI
        thread, and while it runs the training thread waits for the GIL; a key, an option, a
        history read or the run's end still redraws at once."""
        drawn = self._drawn
        wait = self._plotted + PLOT_INTERVAL - time.monotonic()
        steps_only = steps and drawn is not None and key[1:] == drawn[1:]
        if steps_only and wait > 0:
            # Drawn by the first drain after the wait, in the frame that repaints the numbers
            # (one repaint, not two); the timer is for steps that stop coming (a pause).
            if self._plot_timer is None:
                self._plot_timer = self.set_timer(wait + PLOT_LATE, self._deferred_plots)
            return
        self._drawn = key
        self._plotted = time.monotonic()
        if self._plot_timer is not None:
            self._plot_timer.stop()
            self._plot_timer = None
        self._draw_plots()

    def _deferred_plots(self) -> None:
        self._plot_timer = None
        key = (self.model.version, self.options, len(self.model.heads))
        if key != self._drawn:
            self._plots_due(key, steps=False)

    def _draw_plots(self) -> None:
        m, opts = self.model, self.options
        waiting = "waiting for the first steps…" if m.is_live else "no steps recorded"
        series, legend = build_total(m, opts)
        self.query_one("#total-panel", LossPanel).show(
            f"loss · total · {opts.summary()}", series, legend, opts, waiting
        )
        series, legend, title = build_heads(m, opts)
        self.query_one("#heads-panel", LossPanel).show(title, series, legend, opts, waiting)

    def set_options(self, options: PlotOptions) -> None:
        self.options = options
        self.refresh_view()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # m is there only for a run whose family measures a matrix (footer, help, palette).
        if action == "show_matrix":
            return bool(self.model.matrix_keys)
        # An ended run has no trainer: space Pause, s Save, x Stop and l LR would only say so.
        if action in TRAINER_ACTIONS and not self.model.is_live:
            return False
        if action == "why_no_trainer":
            return not self.model.is_live
        if action in ("pause", "resume"):
            return (self.model.state == "paused") == (action == "resume")
        return True

    # -- commands to the trainer --------------------------------------------------------------

    def _trainer(self) -> Trainer | SocketControls | None:
        """Where commands go (the trainer or the socket), or None after telling the user why
        they cannot go anywhere."""
        if self.live is None:
            where = "another process" if self._follow else "no process (it has ended)"
            self.notify(
                f"run {self.model.run_id} is trained by {where}; this view is read-only"
                + (" (a attaches to it)" if self._follow else ""),
                severity="warning",
            )
            return None
        if self.live.starting:
            self.notify("the run is still starting (preparing data and model)", severity="warning")
            return None
        controls = self.live.controls()
        if not self.live.training or controls is None:
            self.notify(
                f"the run has ended ({self.model.state}); nothing to control", severity="warning"
            )
            return None
        return controls

    def _report(self, future: Future, done: str) -> None:
        """Tell the user when a command finished; the callback may run in the training thread."""

        def finished(f: Future) -> None:
            exc = f.exception()
            text = done.format(result=f.result()) if exc is None else done
            self.post_message(CommandDone(text, None if exc is None else str(exc)))

        future.add_done_callback(finished)

    def on_command_done(self, message: CommandDone) -> None:
        if message.error:
            self.notify(f"{message.text}: {message.error}", severity="error")
            self.model.add_log(
                LogEntry(
                    time.time(),
                    self.model.numbers.step,
                    "error",
                    f"{message.text}: {message.error}",
                )
            )
        else:
            self.notify(message.text)
            if message.log:
                self.model.add_log(
                    LogEntry(time.time(), self.model.numbers.step, "info", message.text)
                )
        self.refresh_view()

    def action_why_no_trainer(self) -> None:
        self._trainer()  # tells the user why there is none

    def action_pause(self) -> None:
        self.action_toggle_pause()

    def action_resume(self) -> None:
        self.action_toggle_pause()

    def action_toggle_pause(self) -> None:
        trainer = self._trainer()
        if trainer is None:
            return
        if self.model.state == "paused":
            self._report(trainer.resume(), "resumed at step {result}")
        else:
            self._report(trainer.pause(), "paused at step {result}")

    def action_save_now(self) -> None:
        trainer = self._trainer()
        if trainer is not None:
            self.notify("saving a checkpoint…")
            self._report(trainer.save_now(), "checkpoint saved")

    def action_stop_run(self) -> None:
        if self._trainer() is None:
            return
        live = self.live
        assert live is not None

        def answered(yes: bool | None) -> None:
            if yes and live.training:
                live.request_stop("stopped from the dashboard")
                self.notify("stopping: the run saves a checkpoint and ends")

        self.app.push_screen(stop_dialog(self.model.run_id), answered)

    def action_change_lr(self) -> None:
        trainer = self._trainer()
        if trainer is None:
            return

        def answered(lr: float | None) -> None:
            if lr is not None:
                self._report(trainer.set_lr(lr), f"learning rate set to {lr:.3g}")

        self.app.push_screen(LrModal(self.model.numbers.lr), answered)

    def action_focus_checkpoints(self) -> None:
        self.table.focus()
        if not self.table.row_count:
            self.notify("no checkpoints yet (s saves one now)")

    def _sampler(self) -> SamplerSpec | None:
        """The run's family's sampler, or None after telling the user why there is none."""
        from podium.engine.errors import PodiumError
        from podium.engine.families.registry import get_family
        from podium.engine.generate import sampler_of

        if not self.model.family:
            self.notify(f"run {self.model.run_id}: its model family is not known", severity="error")
            return None
        try:
            return sampler_of(get_family(self.model.family))
        except PodiumError as exc:  # no sampler, or a family this dashboard cannot import
            self.notify(str(exc), severity="warning")
        except Exception as exc:  # a family module that fails as it is imported
            self.notify(f"model family {self.model.family}: {exc!r}", severity="error")
        return None

    def _live_here(self) -> bool:
        """Whether live weights can be sampled: trained here, or attached through the socket."""
        live = self.live
        if isinstance(live, LiveRun):
            return live.training and live.session is not None
        return isinstance(live, AttachedRun) and live.training and not live.starting

    def action_generate_preview(self, checkpoint: str | None = None) -> None:
        """The preview form, then a sample generated in a worker (training goes on)."""
        from podium.tui.screens.preview import LIVE, GenerateModal

        run_dir = self.run_dir or (self.live.run_dir if self.live is not None else None)
        if run_dir is None or (self.live is not None and self.live.starting):
            self.notify("the run is still starting (preparing data and model)", severity="warning")
            return
        sampler = self._sampler()
        if sampler is None:
            return
        here = self._live_here()
        default = checkpoint or (LIVE if here else "latest")

        def answered(form) -> None:
            if form is not None:
                self.notify(f"generating from {form.checkpoint}… (training goes on)")
                self._generate(run_dir, form)

        self.app.push_screen(
            GenerateModal(checkpoint=default, live=here, options=sampler.options), answered
        )

    @work(thread=True, group="preview", exit_on_error=False)
    def _generate(self, run_dir: RunDir, form) -> None:
        from podium.engine.families.registry import SampleRequest
        from podium.engine.generate import generate_from_run
        from podium.tui.screens.preview import LIVE

        request = SampleRequest(
            conditioning=form.conditioning,
            bars=form.bars,
            temperature=form.temperature,
            top_p=form.top_p,
            seed=form.seed,
        )
        live = self.live
        try:
            if form.checkpoint == LIVE and isinstance(live, AttachedRun):
                # Trained by another process: its own copy of the live weights, over the socket.
                if not live.training:
                    raise ValueError("the run has ended: live weights are gone (pick a checkpoint)")
                result = live.controls().generate(
                    checkpoint=LIVE,
                    conditioning=dict(request.conditioning),
                    bars=request.bars,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    seed=request.seed,
                )
                answer = result.result(timeout=PREVIEW_TIMEOUT)
                path = Path(answer["path"])
                used = answer.get("conditioning") or {}
                label = " ".join(str(v) for v in used.values() if v)
                ended = str(answer.get("ended", "?"))
                note = str(answer.get("note") or "")  # an older podium's answer has none
            else:
                here = isinstance(live, LiveRun) and live.session is not None and live.training
                if here:  # this process trains it: the session samples without moving its RNG
                    sample, path = live.session.generate(form.checkpoint, request)
                elif form.checkpoint == LIVE:
                    raise ValueError("live weights exist only while the run trains")
                else:
                    sample, path = generate_from_run(run_dir.path, form.checkpoint, request)
                label, ended, note = sample.label, sample.ended, sample.note
        except Exception as exc:
            self.post_message(
                CommandDone("preview", str(exc).splitlines()[0] if str(exc) else repr(exc))
            )
            return
        # The note says why in words a user can act on ("4 of 8 bars: ... model.max_len");
        # "ended by max_len" alone did not.
        why = f"ended by {ended}" + (f": {note}" if note else "")
        self.post_message(PreviewReady(path, f"{label or 'unconditioned'}: {why}"))

    def on_preview_ready(self, message: PreviewReady) -> None:
        from podium.tui.screens.preview import PreviewScreen

        self.notify(f"preview written: {message.path.name} ({message.text})")
        self.app.push_screen(PreviewScreen(samples_dir=message.path.parent, show=message.path))

    def action_toggle_log(self) -> None:
        self.set_options(replace(self.options, log_y=not self.options.log_y))

    def action_cycle_x(self) -> None:
        self.set_options(replace(self.options, x="wall" if self.options.x == "step" else "step"))

    def action_cycle_heads(self) -> None:
        extra = extra_views(self.model)  # then each validation metric and hook group
        if not self.model.heads and not extra:
            self.notify("no per-head losses yet")
            return
        self.set_options(self.options.next_heads(len(self.model.heads), extra))

    def action_show_matrix(self) -> None:
        """The latest value of the run's matrix metrics (m again there: the next one)."""
        from podium.tui.screens.matrix import MatrixScreen

        if not self.model.matrix_keys:
            self.notify("this run has no matrix metric")
            return
        screen = MatrixScreen(self.model, self._matrix_index)

        def closed(_: None) -> None:
            self._matrix_index = screen.index

        self.app.push_screen(screen, closed)

    def action_smooth(self, delta: int) -> None:
        self.set_options(self.options.smoother(delta))

    def action_attach(self) -> None:
        live = self.live
        if isinstance(live, AttachedRun) and live.training:
            self.notify(
                f"already attached to run {self.model.run_id} (ctrl+d or q leaves it training)"
            )
            return
        if live is not None and live.local and live.training:
            self.notify(f"run {self.model.run_id} trains in this dashboard; nothing to attach")
            return
        if self.run_dir is None or not self._follow:
            self.notify(
                f"run {self.model.run_id} is not live ({self.model.state}): nothing to attach; "
                "attach is for a run live in another process",
                severity="warning",
            )
            return
        self.app.pop_screen()
        self.app.attach(self.run_dir)  # type: ignore[attr-defined]

    def action_back(self) -> None:
        if self.focused is self.table:
            self.set_focus(None)
            return
        # Home, as help says, also from a run branched from this one (its screen was pushed
        # over its parent's).
        self.app.go_home()  # type: ignore[attr-defined]

    # -- checkpoint actions ------------------------------------------------------------------

    @on(CheckpointTable.Action)
    def on_checkpoint_action(self, message: CheckpointTable.Action) -> None:
        name = message.name
        if message.action == "resume":
            self._branch_from(name)
            return
        if message.action == "preview":
            self.action_generate_preview(name)
            return
        if self.live is None and self._follow:
            self.notify(
                f"run {self.model.run_id} is live in another process: press a to attach to it, "
                "then manage its checkpoints",
                severity="warning",
            )
            return
        info = self.table.infos.get(name)
        if info is None:
            return
        if message.action == "keep":
            self._change_checkpoint("keep", info)
            return
        warning = ""
        if name == "latest":
            warning = " `podium resume` continues from the newest checkpoint left."
        elif name == "best":
            warning = " The best validation checkpoint is not saved again until a new best."

        def answered(yes: bool | None) -> None:
            if yes:
                self._change_checkpoint("delete", info)

        self.app.push_screen(
            ConfirmModal(
                f"Delete checkpoint {name} (step {info.step})? This cannot be undone.{warning}",
                yes="Delete",
                danger=True,
            ),
            answered,
        )

    def _branch_from(self, checkpoint: str) -> None:
        """Start a new run from ``checkpoint`` of this run (after a confirmation)."""
        if not branching_available():
            self.notify(RESUME_FROM_NOT_AVAILABLE, severity="warning", timeout=8)
            return
        if self.run_dir is not None:
            parent = self.run_dir.path
        elif self.live is not None and self.live.run_dir is not None:
            parent = self.live.run_dir.path
        else:
            return
        info = self.table.infos.get(checkpoint)
        step = f" (step {info.step})" if info is not None else ""
        # Pinned now, by content: by the time the user answers, a live run may have saved
        # ``best`` or ``latest`` again, and the branch must start from what this dialog says.
        expect_checksum = info.checksum if info is not None else None
        expect_step = info.step if info is not None else None

        def answered(yes: bool | None) -> None:
            if yes:
                request = BranchRequest(
                    parent_path=parent,
                    checkpoint=checkpoint,
                    root=self.app.root,  # type: ignore[attr-defined]
                    expect_checksum=expect_checksum or None,
                    expect_step=expect_step,
                )
                self.app.start_run(request)  # type: ignore[attr-defined]

        self.app.push_screen(
            ConfirmModal(
                f"Start a new run from checkpoint {checkpoint}{step} of run {self.model.run_id}? "
                "This run is left as it is.",
                yes="Start new run",
            ),
            answered,
        )

    def _checkpointer(self) -> Checkpointer | None:
        directory = self.checkpoint_dir
        if directory is None:
            return None
        live = self.live
        if live is not None:
            ck = live.checkpointer()
            if ck is not None:
                return ck
        # delete and set_keep use only the directory; the policy and hash are not consulted.
        return Checkpointer(directory, CheckpointConfig(), "")

    @work(thread=True, group="checkpoint-files", exit_on_error=False)
    def _change_checkpoint(self, action: str, info: CheckpointInfo) -> None:
        """Delete a checkpoint or flip its keep flag (thread), and mirror it in the store."""
        ck = self._checkpointer()
        if ck is None:
            return
        try:
            if action == "delete":
                ck.delete(info.name)
                text = f"checkpoint {info.name} deleted"
            else:
                ck.set_keep(info.name, not info.keep)
                text = f"checkpoint {info.name}: keep {'on' if not info.keep else 'off'}"
            via_bus = self._mirror(action, info)
        except Exception as exc:
            self.post_message(CommandDone(f"{action} {info.name}", str(exc)))
            return
        self.post_message(CommandDone(text, log=not (via_bus and action == "delete")))
        self.post_message(CheckpointsLoaded(list_checkpoints(ck.directory)))

    def _mirror(self, action: str, info: CheckpointInfo) -> bool:
        """Keep the store's checkpoint table and event log in step with the files (thread).

        Returns True when the change went through the live run's event bus."""
        live = self.live
        step = self.model.numbers.step
        if isinstance(live, LiveRun) and live.session is not None and live.training:
            session = live.session
            if action == "delete":
                # Through the bus: the store, the log file, remote viewers and this screen
                # all learn of it the way they learn of retention's deletions.
                session.bus.publish(CheckpointDeleted(step=step, wall=time.time(), name=info.name))
            else:
                session.writer.submit_checkpoint(
                    _record(info, keep=not info.keep, ck=self._checkpointer())
                )
            return True
        db = self.run_dir.db_path if self.run_dir is not None else None
        if db is None and live is not None and live.run_dir is not None:
            db = live.run_dir.db_path
        if db is None or not db.exists():
            return False
        store = RunStore.open(db)
        try:
            if action == "delete":
                store.delete_checkpoint(info.name)
                payload = {
                    "type": "CheckpointDeleted",
                    "step": step,
                    "wall": time.time(),
                    "name": info.name,
                }
                store.add_event("checkpoint_deleted", payload, step=step, wall=payload["wall"])
            else:
                store.upsert_checkpoint(_record(info, keep=not info.keep, ck=self._checkpointer()))
        finally:
            store.close()
        return False


def stop_dialog(run_id: str) -> ConfirmModal:
    """The question ``x`` asks before it stops a run."""
    return ConfirmModal(
        f"Stop run {run_id}? It saves a checkpoint at the current step and ends; "
        "`podium resume` can continue it.",
        yes="Stop the run",
        danger=True,
    )


def _record(info: CheckpointInfo, *, keep: bool, ck: Checkpointer | None) -> CheckpointRecord:
    path = "" if ck is None else str(ck.directory / f"{info.name}.pt")
    return CheckpointRecord(
        name=info.name,
        path=path,
        step=info.step,
        epoch=info.epoch,
        val_loss=info.val_loss,
        size=info.size,
        wall=info.wall,
        kind=info.kind,
        keep=keep,
    )
