"""Runs trained by another process, watched and driven through their control socket.

``podium attach`` (and Enter on a live run of another process) opens the same run screen as a
run trained here. The screen talks to a small interface that both kinds provide: ``model``,
``phase``, ``training``, ``run_dir``, ``controls()`` and ``request_stop``. Here:

- history comes from the run's store, read once after subscribing, so no step falls between the
  two (the model's series keep the newer of two points with the same step, and log events seen
  in both are kept once);
- live events arrive over one socket connection (``subscribe``) and go through the same bounded
  ``EventInbox`` as in-process events, so the app drains both the same way;
- commands go over a second connection, one at a time, from a single worker thread, each
  returning a ``Future`` like the trainer's own methods.

Leaving an attached viewer closes the connections and releases the viewer mark; the run never
notices beyond the mark.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from textual.message import Message

from podium.engine.control import ControlClient
from podium.engine.errors import RunError
from podium.engine.events import StepMetrics
from podium.engine.runs import RunDir, ViewerHold
from podium.tui.history import History, read_history, run_facts
from podium.tui.live import EventInbox, EventsReady, Phase, SessionReady, TrainingEnded, next_key
from podium.tui.model import LogEntry, RunModel, event_from_payload
from podium.tui.proc import CudaMemory

CONNECT_TIMEOUT = 10.0
"""Seconds for one command's answer; a stuck run must not hang a key press forever."""


class SocketControls:
    """The trainer's command methods (each returns a ``Future``), carried over the socket."""

    def __init__(self, run: RunDir) -> None:
        self._run = run
        self._client: ControlClient | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="podium-control")

    def _request(self, cmd: str, **args: Any) -> Any:
        if self._client is None:
            self._client = ControlClient.for_run(self._run.path, timeout=CONNECT_TIMEOUT + 60)
        try:
            return self._client.request(cmd, **args)
        except (OSError, ValueError) as exc:
            self._drop()
            raise RunError(f"run {self._run.id}: the control socket failed ({exc})") from None

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _submit(self, cmd: str, **args: Any) -> Future:
        return self._pool.submit(self._request, cmd, **args)

    def pause(self) -> Future:
        return self._submit("pause")

    def resume(self) -> Future:
        return self._submit("resume")

    def save_now(self) -> Future:
        return self._submit("save")

    def set_lr(self, lr: float) -> Future:
        return self._submit("set_lr", lr=lr)

    def stop(self, reason: str) -> Future:
        return self._submit("stop", reason=reason)

    def status(self) -> Future:
        return self._submit("status")

    def generate(self, **args: Any) -> Future:
        """A sample written by the run's own process (``checkpoint="live"``: its live weights);
        the answer is ``{"path", "conditioning", "ended", "tokens", "seed"}``."""
        return self._submit("generate", **args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool.submit = _closed  # type: ignore[method-assign]
        self._drop()


def _closed(*args: Any, **kwargs: Any) -> Future:
    fut: Future = Future()
    fut.set_exception(RunError("this viewer has been closed"))
    return fut


class AttachedRun:
    """A live run of another process, as the run screen sees it (see the module docstring)."""

    local = False

    def __init__(self, run: RunDir, post: Callable[[Message], object]) -> None:
        self.key = next_key()
        self.run_dir = run
        self.model = RunModel()
        self.model.run_id = run.id
        self.model.state = "attaching"
        self.phase: Phase = "preparing"
        self.error: str | None = None
        self.done = threading.Event()
        self.last_drain = 0.0
        self.drain_pending = False
        self._post = post
        self.inbox = EventInbox(lambda: post(EventsReady(self.key)))
        self._controls = SocketControls(run)
        self._sub: ControlClient | None = None
        self._hold: ViewerHold | None = None
        self._closed = threading.Event()
        self._status: dict[str, Any] = {}
        self._polling = False
        self.history: History | None = None

    @property
    def title(self) -> str:
        return self.model.run_id

    @property
    def training(self) -> bool:
        return not self.done.is_set()

    @property
    def starting(self) -> bool:
        return self.phase == "preparing" and self.training

    @property
    def pid(self) -> int | None:
        """The training process (from its last ``status``)."""
        pid = self._status.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def cpu_plan(self) -> str:
        """The training process's CPU share, in words, when its ``status`` reports it."""
        from podium.engine.cpu_share import CpuPlan

        plan = self._status.get("cpu")
        if not isinstance(plan, dict):
            return ""
        try:
            return CpuPlan(**plan).describe()
        except (TypeError, ValueError):
            return ""

    @property
    def cuda_memory(self) -> CudaMemory | None:
        """The training process's CUDA memory, when its ``status`` reports it."""
        mem = self._status.get("cuda")
        if not isinstance(mem, dict):
            return None
        try:
            return CudaMemory(
                device=str(mem.get("device", "cuda")),
                allocated=int(mem["allocated"]),
                reserved=int(mem["reserved"]),
                peak=int(mem["peak"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def poll_status(self) -> None:
        """Refresh the process facts in the background (the resources panel reads them)."""
        if not self.training or self._polling:
            return
        self._polling = True

        def done(fut: Future) -> None:
            self._polling = False
            if fut.exception() is None and isinstance(fut.result(), dict):
                self._status = fut.result()

        self._controls.status().add_done_callback(done)

    def controls(self) -> SocketControls:
        return self._controls

    def checkpointer(self) -> None:
        return None

    def request_stop(self, reason: str) -> None:
        self._controls.stop(reason)

    def work(self) -> None:
        """Subscribe, read the history, then forward events until the run goes away (thread).

        Events published while the store is read wait in the socket (and the server's bounded
        queue) and are read afterwards: a step seen twice keeps one point, log events already in
        the history are skipped.
        """
        try:
            self._hold = self.run_dir.hold_viewer()
            sub = ControlClient.for_run(self.run_dir.path, timeout=CONNECT_TIMEOUT)
            self._sub = sub
            sub.request("subscribe")
            self._status = dict(self._controls.status().result(CONNECT_TIMEOUT) or {})
            history = read_history(self.run_dir.db_path, max_points=self.model.max_points)
        except Exception as exc:
            self.error = f"cannot attach to run {self.run_dir.id}: {exc}"
            self._finish()
            return
        if self._closed.is_set():
            self._finish()
            return
        self.history = history
        self._post(SessionReady(self.key, history))
        known = {repr(e) for e in history.events}
        sub.settimeout(None)  # from here events come whenever the run has them
        for payload in sub.events():
            event = event_from_payload(payload)
            if event is None:
                continue
            if not isinstance(event, StepMetrics) and repr(event) in known:
                continue
            self.inbox(event)
        self._finish()

    def _finish(self) -> None:
        self.phase = "ended"
        self.done.set()
        self._post(TrainingEnded(self.key))

    def bind_session(self, history: History | None) -> None:
        """Copy the run's facts into the model (UI thread, on ``SessionReady``)."""
        m, st = self.model, self._status
        facts = run_facts(self.run_dir)
        info = self.run_dir.info()
        m.profile = str(st.get("profile") or info.profile)
        m.family = str(st.get("family") or info.family)
        m.device = str(st.get("device") or facts.device)
        m.total_steps = st.get("total_steps") or facts.total_steps
        m.steps_per_epoch = st.get("steps_per_epoch") or facts.steps_per_epoch
        for attr, key in (
            ("heads", "heads"),
            ("metric_names", "metrics"),
            ("matrix_names", "matrices"),
        ):
            value = st.get(key)
            if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
                setattr(m, attr, list(value))
        if history is not None:
            m.load_history(history.points, last=history.last, matrices=history.matrices)
            m.load_events(history.events)
        if isinstance(st.get("step"), int):
            m.numbers.step = max(m.numbers.step or 0, st["step"])
        if isinstance(st.get("lr"), (int, float)):
            m.numbers.lr = float(st["lr"])
        m.state = str(st.get("state") or "running")
        self.phase = "training" if self.training else "ended"
        m.version += 1

    def end(self) -> None:
        """The connection is gone: record what became of the run (UI thread)."""
        m = self.model
        if self.error is not None and self.history is None:
            m.state, m.reason = "failed to attach", self.error
            m.add_log(LogEntry(time.time(), m.numbers.step, "error", self.error))
        elif not self._closed.is_set():
            # Give the process a moment to write its end marker and drop its lock.
            deadline = time.monotonic() + 2.0
            state, reason = self.run_dir.status()
            while state in ("live", "detached") and time.monotonic() < deadline:
                time.sleep(0.05)
                state, reason = self.run_dir.status()
            m.state, m.reason = state, reason or m.reason
        m.version += 1

    def close(self) -> None:
        """Leave: close both connections and drop the viewer mark (the run trains on)."""
        self._closed.set()
        self._controls.close()
        sub = self._sub
        if sub is not None:
            sub.shutdown()
        if self._hold is not None:
            self._hold.release()
            self._hold = None
