"""PodiumApp: the dashboard's Textual app. A message router, kept thin.

It owns the runs trained in this process (``LiveRun``s: one plain thread each, so that they can
outlive the UI) and the runs of other processes it is attached to (``AttachedRun``s), drains their
event inboxes at a bounded rate (``DRAIN_INTERVAL``), and routes the results to the run screen
showing them. Screens own their layout and keys; the app owns quitting, detaching, help and
starting runs.

How the dashboard goes away while runs train here (``leave``, read by ``podium.tui.cli`` after exit):

- ``"hangup"``: the terminal went away (SIGHUP, or reads and writes failing with EIO). The UI
  closes and the runs keep training in this same process, its output re-pointed at the log;
- ``"detach"``: the user pressed ``ctrl+d`` (or chose "leave it running" when quitting). The shell
  must get its prompt back, which only the process's exit gives, so each run hands over: it
  saves a checkpoint and a new background process resumes it exactly from there.

    python -m podium                      # home screen
    python -m podium train profiles/demo.toml
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from podium.engine.runs import RunDir
from podium.tui.commands import (
    ActionsProvider,
    binding_sources,
    describe,
    key_label,
    system_commands,
    where,
)
from podium.tui.live import EventsReady, LiveRun, Request, SessionReady, TrainingEnded, hint_for
from podium.tui.remote import AttachedRun
from podium.tui.screens.home import HomeScreen
from podium.tui.screens.modals import HelpScreen, QuitModal
from podium.tui.screens.run import RunScreen


class PodiumApp(App[int]):
    CSS_PATH = "podium.tcss"
    TITLE = "podium"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while a run trains here)"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Help: every key"),
        Binding(
            "ctrl+d",
            "detach",
            "Detach",
            show=False,
            tooltip="Detach: runs keep training in the background (podium attach returns)",
        ),
    ]
    DRAIN_INTERVAL = 2.0
    """Seconds between redraws from a live run's events (the interval nvitop refreshes at).
    Each redraw costs the UI thread ~15 ms of Python (Textual composing the changed panels),
    and on a machine whose cores the run keeps busy each UI millisecond costs the run about as
    much: the UI thread takes a core from one of its threads, and the GIL from the training
    thread. At 0.5 Hz the numbers still read as live and the run keeps its pace
    (bench/bench_dashboard.py)."""

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
        self.live_runs: dict[int, LiveRun | AttachedRun] = {}
        self.notices: collections.deque[str] = collections.deque(maxlen=50)
        """The latest notifications' text (what the user was told, newest last)."""
        self._quitting = False
        self.leave: str | None = None
        """None (quit), "detach" or "hangup": see the module docstring."""
        self.attach_to: RunDir | None = None
        """Open this run's screen attached at start (``podium attach``)."""

    def notify(self, message: str, **kwargs) -> None:  # type: ignore[override]
        self.notices.append(message)
        # Messages carry engine text (reasons, paths, "[...]"): never parse them as markup.
        kwargs["markup"] = False
        super().notify(message, **kwargs)

    def on_mount(self) -> None:
        if self.attach_to is not None:
            # `podium attach`: the run screen first; the home screen is built on the way back.
            self.attach(self.attach_to)
        else:
            self.push_screen(HomeScreen(self.root, profile_dirs=self.profile_dirs))
        if self.request is not None:
            self.start_run(self.request)
        if self.is_headless:
            return  # tests: no terminal to lose
        self._watch_for_hang_up(asyncio.get_running_loop())

    def _watch_for_hang_up(self, loop: asyncio.AbstractEventLoop) -> None:
        """Notice a hang-up without the event loop's help: the loop's own thread may be the one
        stuck, in a write to the dead terminal (Textual's writer queue is bounded, and its thread
        dies of EIO or blocks on a terminal nobody reads). A plain SIGHUP handler runs in the main
        thread even inside that wait (signals interrupt lock waits), and a thread polls for EIO
        (hang-ups without SIGHUP); both make the writer drop its output before asking the loop
        to ``hang_up``. The handler hands the work to a thread: the main thread may hold the
        writer queue's lock at that instant, and taking it again there would deadlock."""

        def from_outside() -> None:
            self._drop_terminal_output()
            with contextlib.suppress(RuntimeError):  # the loop is closed: the app is gone
                loop.call_soon_threadsafe(self.hang_up)

        def on_sighup(signum: int, frame: object) -> None:
            threading.Thread(target=from_outside, name="podium-hangup", daemon=True).start()

        with contextlib.suppress(ValueError):  # not the main thread (embedded): EIO only
            signal.signal(signal.SIGHUP, on_sighup)

        def poll() -> None:
            while self.leave is None and not loop.is_closed():
                if terminal_hung_up():
                    from_outside()
                    return
                time.sleep(1.0)

        threading.Thread(target=poll, name="podium-hangup-watch", daemon=True).start()

    def _drop_terminal_output(self) -> None:
        """From now on Textual's output goes nowhere and nothing waits on its writer thread:
        queued writes are dropped (a ``put`` blocked on the full queue returns), new ones are
        discarded, and stopping the writer waits at most a second. Safe from any thread and
        from a signal handler."""
        writer = getattr(self._driver, "_writer_thread", None)
        if writer is None:
            return
        pending = writer._queue

        def drain() -> None:
            with contextlib.suppress(queue.Empty):
                while True:
                    pending.get_nowait()

        def stop() -> None:
            drain()
            with contextlib.suppress(queue.Full):
                pending.put_nowait(None)  # a live writer leaves; a blocked or dead one is left
            writer.join(timeout=1.0)

        writer.write = lambda text: None
        writer.stop = stop
        drain()

    def hang_up(self) -> None:
        """The terminal is gone: close the UI now, keep training (``podium.tui.cli`` takes over)."""
        if self.leave == "hangup":
            return
        self.leave = "hangup"
        # Nothing on the way out may wait on the dead terminal (see _watch_for_hang_up).
        self._drop_terminal_output()
        # Textual restores the terminal on the way out; on a dead one that write fails (EIO) or
        # blocks. Point fds 1 and 2 at /dev/null first; podium.tui.cli moves them to the run's log.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        self.exit(self.exit_code())

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, request: Request) -> LiveRun:
        """Train ``request`` in a thread and show its run screen.

        A plain thread, not a Textual worker: the app's exit waits for its workers, and a run
        must be able to outlive the UI (hang-up)."""
        live = LiveRun(request, self.post_message)
        self.live_runs[live.key] = live
        self.push_screen(RunScreen(live=live))
        threading.Thread(target=live.work, name=f"podium-train-{live.key}", daemon=False).start()
        return live

    def attach(self, run: RunDir) -> AttachedRun:
        """Show ``run``, trained by another process, live through its control socket."""
        for other in self.live_runs.values():
            if isinstance(other, AttachedRun) and other.training and other.run_dir.id == run.id:
                self.push_screen(RunScreen(live=other))
                return other
        attached = AttachedRun(run, self.post_message)
        self.live_runs[attached.key] = attached
        self.push_screen(RunScreen(live=attached))
        threading.Thread(
            target=attached.work, name=f"podium-attach-{attached.key}", daemon=True
        ).start()
        return attached

    def open_run(self, run: RunDir) -> None:
        """The run screen of ``run``: live when it trains here or in another process (attached),
        else read from disk."""
        for live in self.live_runs.values():
            if live.local and live.model.run_id == run.id:
                self.push_screen(RunScreen(live=live))
                return
        state, _ = run.status()
        if state in ("live", "detached") and (run.path / "control.json").exists():
            self.attach(run)
            return
        self.push_screen(RunScreen(run=run))

    def go_home(self) -> None:
        """Back to the home screen, past every screen above it (a run branched from the one
        shown is pushed over its parent's), building it if ``podium attach`` started here."""
        home = next((s for s in reversed(self.screen_stack) if isinstance(s, HomeScreen)), None)
        if home is None:
            while len(self.screen_stack) > 2:  # the default screen, and the one to replace
                self.pop_screen()
            self.switch_screen(HomeScreen(self.root, profile_dirs=self.profile_dirs))
            return
        while self.screen is not home:
            self.pop_screen()

    def viewer_left(self, attached: AttachedRun) -> None:
        """A run screen showing ``attached`` went away: close the viewer, unless another
        screen on the stack still shows it. Kept open, it held the run's viewer mark, and home
        and ``podium runs`` called the run live long after anyone watched it."""
        if any(isinstance(s, RunScreen) and s.live is attached for s in self.screen_stack):
            return
        attached.close()
        self.live_runs.pop(attached.key, None)
        if isinstance(self.screen, HomeScreen):  # its refresh on resume may have run before
            self.screen.action_refresh()

    @property
    def training(self) -> list[LiveRun]:
        """Runs trained by this process that have not ended."""
        return [lr for lr in self.live_runs.values() if lr.local and lr.training]  # type: ignore[misc]

    @property
    def attached(self) -> list[AttachedRun]:
        return [a for a in self.live_runs.values() if isinstance(a, AttachedRun)]

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
            self._redraw(live, steps=True)

    def _redraw(self, live: LiveRun, *, steps: bool = False) -> None:
        """Redraw ``live``'s run screen when it is in view: on top, or under dialogs (LR, help,
        stop) that Textual paints over it; the data keeps flowing while one is open.

        ``steps``: the redraw is for events drained from the run (its plots may wait, see
        ``RunScreen.refresh_view``)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ModalScreen):
                continue
            if isinstance(screen, RunScreen) and screen.live is live:
                screen.refresh_view(steps=steps)
            return

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
        if isinstance(live, AttachedRun):
            if live.error is not None and live.history is None:
                self.notify(live.error, severity="error", timeout=10)
            elif not self._quitting and self.leave is None:
                self.notify(f"run {live.title} is no longer live: {m.state} {m.reason}".strip())
            return
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

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's palette entries, less those podium's own (``ActionsProvider``) replace."""
        return system_commands(super().get_system_commands(screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Keys typed into a dialog belong to the dialog.
        return not (action in ("quit", "help", "detach") and isinstance(self.screen, ModalScreen))

    def action_detach(self) -> None:
        """Leave the dashboard; every run keeps training (see the module docstring)."""
        if not self.training and not any(a.training for a in self.attached):
            self.notify("nothing is training here; q quits")
            return
        self.leave = "detach"
        self.exit(self.exit_code())

    async def action_quit(self) -> None:
        training = self.training
        if not training:
            self.exit(self.exit_code())
            return
        if self._quitting:
            self.notify("still stopping: waiting for the final checkpoint…")
            return

        def answered(choice: str | None) -> None:
            if choice == "leave":
                self.action_detach()
                return
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
            sections.setdefault(where(node, screen), []).append(
                (key_label(binding), describe(binding))
            )
        for key, text in getattr(screen, "HELP_KEYS", ()):  # keys its widgets handle
            sections.setdefault(where(screen, screen), []).insert(0, (key, text))
        sections.setdefault("everywhere", []).append(("ctrl+p", "command palette: every action"))
        self.push_screen(HelpScreen(list(sections.items())))


def terminal_hung_up(fd: int | None = None) -> bool:
    """Whether this process's terminal has hung up (its ioctls then fail with EIO)."""
    import termios

    for candidate in (fd,) if fd is not None else (0, 1):
        try:
            os.tcgetpgrp(candidate)
        except OSError as exc:
            if exc.errno == 5:  # EIO: the line is gone
                return True
        except termios.error:
            continue
    return False
