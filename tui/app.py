"""PodiumApp: the dashboard's Textual app. A message router, kept thin.

It owns the runs trained in this process (``LiveRun``s: one thread worker each), drains their
event inboxes at a bounded rate (``DRAIN_INTERVAL``), and routes the results to the run screen
showing them. Screens own their layout and keys; the app owns quitting, help and starting runs.

    python -m tui.cli                      # home screen
    python -m tui.cli train profiles/demo.toml
"""

from __future__ import annotations

import collections
import time
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.worker import Worker, WorkerState

from engine.runs import RunDir
from tui.commands import ActionsProvider, binding_sources, describe, key_label
from tui.live import EventsReady, LiveRun, Request, SessionReady, TrainingEnded, hint_for
from tui.screens.home import HomeScreen
from tui.screens.modals import HelpScreen, QuitModal
from tui.screens.run import RunScreen


class PodiumApp(App[int]):
    CSS_PATH = "podium.tcss"
    TITLE = "podium"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while a run trains here)"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Help: every key"),
    ]
    DRAIN_INTERVAL = 0.5
    """Seconds between redraws from a live run's events (2 Hz: smooth to the eye, and the
    training threads keep the CPU; see bench/bench_dashboard.py)."""

    def __init__(
        self,
        *,
        root: Path,
        request: Request | None = None,
        profile_dirs: list[Path] | None = None,
    ) -> None:
        """``profile_dirs``: where the home screen looks for profiles (default: ./profiles and
        the package's)."""
        super().__init__()
        self.root = root
        self.request = request
        self.profile_dirs = profile_dirs
        self.live_runs: dict[int, LiveRun] = {}
        self.notices: collections.deque[str] = collections.deque(maxlen=50)
        """The latest notifications' text (what the user was told, newest last)."""
        self._quitting = False

    def notify(self, message: str, **kwargs) -> None:  # type: ignore[override]
        self.notices.append(message)
        # Messages carry engine text (reasons, paths, "[...]"): never parse them as markup.
        kwargs["markup"] = False
        super().notify(message, **kwargs)

    def on_mount(self) -> None:
        self.push_screen(HomeScreen(self.root, profile_dirs=self.profile_dirs))
        if self.request is not None:
            self.start_run(self.request)

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, request: Request) -> LiveRun:
        """Train ``request`` in a thread worker and show its run screen."""
        live = LiveRun(request, self.post_message)
        self.live_runs[live.key] = live
        self.push_screen(RunScreen(live=live))
        self.run_worker(
            live.work,
            thread=True,
            exit_on_error=False,
            group="training",
            name=f"train-{live.key}",
            description=f"training {live.title}",
        )
        return live

    def open_run(self, run: RunDir) -> None:
        """The run screen of ``run``: the live one when it trains here, else read from disk."""
        for live in self.live_runs.values():
            if live.model.run_id == run.id:
                self.push_screen(RunScreen(live=live))
                return
        self.push_screen(RunScreen(run=run))

    @property
    def training(self) -> list[LiveRun]:
        return [lr for lr in self.live_runs.values() if lr.training]

    def on_events_ready(self, message: EventsReady) -> None:
        live = self.live_runs.get(message.key)
        if live is None or live.drain_pending:
            return
        live.drain_pending = True
        delay = live.last_drain + self.DRAIN_INTERVAL - time.monotonic()
        if delay > 0:
            self.set_timer(delay, partial(self._drain, live))
        else:
            self.call_later(self._drain, live)

    def _drain(self, live: LiveRun) -> None:
        live.drain_pending = False
        live.last_drain = time.monotonic()
        events = live.inbox.drain()
        if events:
            live.model.apply(events)
            self._redraw(live)

    def _redraw(self, live: LiveRun) -> None:
        screen = self.screen
        if isinstance(screen, RunScreen) and screen.live is live:
            screen.refresh_view()

    def on_session_ready(self, message: SessionReady) -> None:
        live = self.live_runs.get(message.key)
        if live is None:
            return
        live.bind_session(message.history)
        self._redraw(live)

    def on_training_ended(self, message: TrainingEnded) -> None:
        live = self.live_runs.get(message.key)
        if live is None:
            return
        live.model.apply(live.inbox.drain())
        live.end()
        self._redraw(live)
        m = live.model
        if m.state == "failed":
            hint = hint_for(m.reason)
            self.notify(
                m.reason + (f"\nhint: {hint}" if hint else ""),
                title=f"run {live.title} failed",
                severity="error",
                timeout=15,
            )
        else:
            self.notify(f"run {live.title} {m.state} at step {m.numbers.step}: {m.reason}")
        if self._quitting and not self.training:
            self.exit(self.exit_code())

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Worker failures in one place: a bug in a worker becomes a message, not a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            err = event.worker.error
            self.notify(
                f"{type(err).__name__}: {err}",
                title=f"{event.worker.name or 'background task'} failed",
                severity="error",
                timeout=10,
            )

    def exit_code(self) -> int:
        """1 when a run trained here failed, else 0 (the CLI's exit status)."""
        return 1 if any(lr.model.state == "failed" for lr in self.live_runs.values()) else 0

    # -- app-wide actions -----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Keys typed into a dialog belong to the dialog.
        return not (action in ("quit", "help") and isinstance(self.screen, ModalScreen))

    async def action_quit(self) -> None:
        training = self.training
        if not training:
            self.exit(self.exit_code())
            return
        if self._quitting:
            self.notify("still stopping: waiting for the final checkpoint…")
            return

        def answered(choice: str | None) -> None:
            if choice != "stop":
                return
            self._quitting = True
            for live in self.training:
                live.request_stop("stopped from the dashboard (quit)")
            self.notify("stopping: saving a checkpoint, then quitting…")
            if not self.training:
                self.exit(self.exit_code())

        self.push_screen(QuitModal(lr.title for lr in training), answered)

    def action_help(self) -> None:
        screen = self.screen
        sections: dict[str, list[tuple[str, str]]] = {}
        for node, binding in binding_sources(screen):
            if node is self:
                title = "everywhere"
            elif node is screen:
                title = type(screen).__name__.removesuffix("Screen").lower() + " screen"
            else:
                title = getattr(node, "HELP_GROUP", f"{type(node).__name__} (when focused)")
            sections.setdefault(title, []).append((key_label(binding), describe(binding)))
        sections.setdefault("everywhere", []).append(("ctrl+p", "command palette: every action"))
        self.push_screen(HelpScreen(list(sections.items())))
