"""Runs trained inside the dashboard's process: the session, its event inbox and its model.

The training thread must never wait for the UI. The bus delivers events in the training thread,
so the subscriber (``EventInbox``) only appends to a locked list and, when the list goes from empty
to non-empty, posts one Textual message (``App.post_message`` is thread-safe and non-blocking;
``call_from_thread`` would block training until the UI ran the call). The app drains the inbox
at a bounded rate, so a burst of steps costs the UI one redraw, not one per step.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from podium.engine.events import Event
from podium.engine.runs import RunDir, ViewerHold
from podium.tui.history import History, read_history
from podium.tui.model import LogEntry, RunModel

if TYPE_CHECKING:  # the engine's training modules load torch: only a run trained here needs them
    from podium.engine.checkpoints import Checkpointer
    from podium.engine.session import Session
    from podium.engine.trainer import Trainer, TrainResult


@dataclass(frozen=True, kw_only=True)
class StartRequest:
    """A new run of a profile, as ``podium train`` or the home screen's form asks for it."""

    profile_path: Path
    """The profile's TOML file."""
    overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` overrides, seed included (``train.seed=N``)."""
    root: Path
    """The runs root the run directory is created in."""
    name: str | None = None
    """Run id; None picks ``<profile>-<time>``."""
    max_steps: int | None = None
    max_epochs: int | None = None
    gpus: str | None = None
    """``--gpus``: None lets the engine choose."""
    share_gpu: bool = False
    cpu_ranks: int | None = None
    """``--cpu-ranks``: data-parallel processes for a run on the CPU (None: the default)."""
    share_group: str | None = None
    """``--share-group``: a group that may read the run (None: the lab's setting)."""


@dataclass(frozen=True, kw_only=True)
class ResumeRequest:
    """Continue a stopped or interrupted run in place from its newest checkpoint."""

    run_path: Path
    max_steps: int | None = None
    max_epochs: int | None = None
    gpus: str | None = None
    share_gpu: bool = False
    cpu_ranks: int | None = None
    """``--cpu-ranks``: data-parallel processes for a run on the CPU (None: the default)."""


@dataclass(frozen=True, kw_only=True)
class BranchRequest:
    """A new run continuing ``parent_path`` from one of its checkpoints (the parent is untouched)."""

    parent_path: Path
    checkpoint: str
    root: Path
    """The runs root the new run directory is created in."""
    expect_checksum: str | None = None
    """The checkpoint's checksum when the user chose it: ``branch_session`` refuses one that was
    saved again since (``best`` of a live run), instead of branching from other weights."""
    expect_step: int | None = None
    """The step the user was shown (what is checked for a checkpoint without a checksum)."""
    name: str | None = None
    max_steps: int | None = None
    max_epochs: int | None = None
    gpus: str | None = None
    share_gpu: bool = False
    cpu_ranks: int | None = None
    """``--cpu-ranks``: data-parallel processes for a run on the CPU (None: the default)."""


Request = StartRequest | ResumeRequest | BranchRequest


def branching_available() -> bool:
    """Whether the engine can start a new run from a checkpoint (``branch_session``)."""
    import podium.engine.session

    return hasattr(podium.engine.session, "branch_session")


class EventsReady(Message):
    """Posted from the training thread when a live run's inbox stops being empty."""

    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key


class SessionReady(Message):
    """The run's session exists (data and model built); ``history`` is set when resuming."""

    def __init__(self, key: int, history: History | None) -> None:
        super().__init__()
        self.key = key
        self.history = history


class TrainingEnded(Message):
    """The run stopped training: it ended, failed, or never started (``LiveRun.error`` says)."""

    def __init__(self, key: int) -> None:
        super().__init__()
        self.key = key


class EventInbox:
    """The bus subscriber of a live run: a locked buffer and a wake-up on first arrival.

    Bounded: if the UI stops draining (a stuck terminal), the oldest events go first and
    ``dropped`` counts them; training never waits.
    """

    def __init__(self, wake: Callable[[], None], *, maxlen: int = 200_000) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._wake = wake
        self.dropped = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            was_empty = not self._events
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
        if was_empty:
            self._wake()

    def drain(self) -> list[Event]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events


Phase = Literal["preparing", "training", "ended"]
_keys = itertools.count(1)


TRAINING_SWITCH_INTERVAL = 0.0002
"""``sys.setswitchinterval`` while a run trains in this process (Python's default is 5 ms).

The training thread lets go of the GIL inside every torch op and needs it back when the op
returns; while the UI thread composes a frame (~10 ms of Python) the training thread waits a
whole switch interval for it after each op. At 0.2 ms its ops keep running beside the UI's
Python instead of in turns (bench/bench_dashboard.py measures the throughput with the dashboard
attached against headless). The UI pays a little more GIL switching while it draws; nothing
else runs Python hard in this process."""

_handoff_lock = threading.Lock()
_handoff_users = 0
_handoff_saved = 0.0


@contextlib.contextmanager
def quick_gil_handoff() -> Iterator[None]:
    """``TRAINING_SWITCH_INTERVAL`` while at least one run trains here, then as it was."""
    global _handoff_users, _handoff_saved
    with _handoff_lock:
        if _handoff_users == 0:
            _handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_saved, TRAINING_SWITCH_INTERVAL))
        _handoff_users += 1
    try:
        yield
    finally:
        with _handoff_lock:
            _handoff_users -= 1
            if _handoff_users == 0:
                sys.setswitchinterval(_handoff_saved)


def next_key() -> int:
    """A process-wide unique id for a run shown by this dashboard (local or attached)."""
    return next(_keys)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    if not first:
        return name
    # Domain errors already read as sentences; show a class name only for unexpected ones.
    from podium.engine.errors import PodiumError

    return first if isinstance(exc, PodiumError) else f"{name}: {first}"


def hint_for(reason: str) -> str:
    """A next step for common failures (shown under the error), or ""."""
    low = reason.lower()
    if "out of memory" in low or "outofmemory" in low:
        return "lower train.batch_size (raise train.grad_accum to keep the effective batch)"
    if "non-finite" in low or "nan" in low.split():
        return "lower train.lr, check the data, or set train.precision = 'fp32'"
    return ""


class LiveRun:
    """One run trained in this process, from request to end.

    ``work`` runs in a thread worker: it opens the session, subscribes the inbox, trains, and
    posts ``SessionReady`` and ``TrainingEnded``. Everything else is read by the UI thread.
    """

    local = True

    def __init__(self, request: Request, post: Callable[[Message], object]) -> None:
        self.key = next_key()
        self.request = request
        self.session: Session | None = None
        self.model = RunModel()
        self.phase: Phase = "preparing"
        self.error: str | None = None
        self.result: TrainResult | None = None
        self.done = threading.Event()
        self.last_drain = 0.0
        self.drain_pending = False
        self._stop_reason: str | None = None
        self._viewer: ViewerHold | None = None
        self._lock = threading.Lock()
        self._post = post
        self.inbox = EventInbox(lambda: post(EventsReady(self.key)))
        if isinstance(request, StartRequest):
            self.model.profile = request.profile_path.stem
            self.model.run_id = request.name or ""
        elif isinstance(request, BranchRequest):
            self.model.run_id = request.name or ""
            self.model.profile = f"from {request.parent_path.name}/{request.checkpoint}"
        else:
            self.model.run_id = request.run_path.name
        self.model.state = "starting"
        self.model.max_steps = request.max_steps

    @property
    def title(self) -> str:
        return self.model.run_id or self.model.profile

    @property
    def training(self) -> bool:
        return not self.done.is_set()

    @property
    def starting(self) -> bool:
        return self.session is None and self.training

    @property
    def run_dir(self) -> RunDir | None:
        return self.session.run if self.session is not None else None

    def controls(self) -> Trainer | None:
        """What the run screen sends pause/resume/save/set_lr to (each returns a Future)."""
        return self.session.trainer if self.session is not None else None

    def checkpointer(self) -> Checkpointer | None:
        return self.session.trainer.checkpointer if self.session is not None else None

    def release_viewer(self) -> None:
        """No dashboard shows this run any more: ``podium runs`` calls it detached."""
        with self._lock:
            hold, self._viewer = self._viewer, None
        if hold is not None:
            hold.release()

    def work(self) -> None:
        """Open the session and train (in a worker thread); never raises."""
        history: History | None = None
        try:
            session = self._open()
            # Whatever the session published while it was built (a resumed run's truncate and
            # "resumed" event, warnings) is in the store once the queued writes land; training
            # has not started, so nothing is both there and in the inbox.
            session.writer.flush(timeout=30)
            resumed = session.resumed_from
            history = read_history(
                session.run.db_path,
                max_points=self.model.max_points,
                end_step=resumed.step if resumed is not None else None,
            )
        except BaseException as exc:
            self.error = _one_line(exc)
            self.phase = "ended"
            self.done.set()
            self._post(TrainingEnded(self.key))
            return
        session.bus.subscribe(self.inbox)
        with self._lock:
            self.session = session
            self._viewer = session.run.hold_viewer()
            if self._stop_reason is not None:  # asked to stop while it was still preparing
                session.trainer.stop(self._stop_reason)
        self._post(SessionReady(self.key, history))
        try:
            with quick_gil_handoff():
                self.result = session.run_training()
        except BaseException as exc:  # the run is marked failed; the dashboard carries on
            self.error = _one_line(exc)
        finally:
            self.release_viewer()
            self.phase = "ended"
            self.done.set()
            self._post(TrainingEnded(self.key))

    def _open(self) -> Session:
        from podium.engine.config import load_profile
        from podium.engine.session import check_resumable, new_session, resume_session

        req = self.request
        # Device choice is passed only when asked for, so an engine without it still works.
        devices: dict[str, object] = {}
        if req.gpus is not None:
            devices["gpus"] = req.gpus
        if req.share_gpu:
            devices["share_gpu"] = True
        if req.cpu_ranks is not None:
            devices["cpu_ranks"] = req.cpu_ranks
        limits = {"max_steps": req.max_steps, "max_epochs": req.max_epochs}
        if isinstance(req, StartRequest):
            profile = load_profile(req.profile_path, list(req.overrides))
            if req.share_group is not None:
                limits["share_group"] = req.share_group
            return new_session(profile, root=req.root, name=req.name, **limits, **devices)
        if isinstance(req, BranchRequest):
            from podium.engine.session import branch_session

            parent = RunDir(req.parent_path)
            pinned: dict[str, object] = {}
            if req.expect_checksum:
                pinned["expect_checksum"] = req.expect_checksum
            if req.expect_step is not None:
                pinned["expect_step"] = req.expect_step
            return branch_session(
                parent, req.checkpoint, root=req.root, name=req.name, **limits, **devices, **pinned
            )
        run = RunDir(req.run_path)
        check_resumable(run)
        return resume_session(run, **limits, **devices)

    def request_stop(self, reason: str) -> None:
        """Stop the run (it saves a checkpoint); a run still preparing stops as soon as it starts."""
        with self._lock:
            if self.session is None:
                self._stop_reason = reason
                return
        self.session.trainer.stop(reason)

    def bind_session(self, history: History | None) -> None:
        """Copy the session's facts into the model (UI thread, on ``SessionReady``)."""
        session = self.session
        assert session is not None
        trainer = session.trainer
        m = self.model
        m.run_id = session.run.id
        m.profile = session.profile.name
        m.family = session.profile.family
        m.device = str(trainer.device)
        m.heads = list(trainer.head_names)
        family = session.profile.family_spec
        m.metric_names = list(family.metrics)
        m.matrix_names = list(family.matrices)
        m.total_steps = trainer.total_steps
        m.steps_per_epoch = trainer.steps_per_epoch
        m.max_steps = trainer.max_steps
        m.numbers.step = trainer.state.step
        m.numbers.epoch = trainer.state.epoch + trainer.state.batch_in_epoch / max(
            trainer.steps_per_epoch, 1
        )
        if history is not None:
            m.load_history(history.points, last=history.last, matrices=history.matrices)
            m.load_events(history.events)
        if m.state == "starting" and trainer.run_state != "starting":
            m.state = trainer.run_state
        self.phase = "training" if self.training else "ended"
        m.version += 1

    def end(self) -> None:
        """Record the outcome in the model (UI thread, on ``TrainingEnded``)."""
        m = self.model
        if self.result is not None:
            m.state, m.reason = self.result.status, self.result.reason
        elif self.error is not None:
            m.state, m.reason = "failed", self.error
            m.add_log(LogEntry(time.time(), m.numbers.step, "error", self.error))
        m.version += 1


def stop_all(runs: list[LiveRun], reason: str, timeout: float | None = None) -> None:
    """Ask every live run to stop (each saves a checkpoint) and wait for their threads."""
    for live in runs:
        if live.training:
            live.request_stop(reason)
    for live in runs:
        live.done.wait(timeout)
