"""Events the engine publishes while it trains, and the bus that fans them out.

Events are small frozen dataclasses: the store, the control socket, the headless printer and the
dashboard all receive the same objects. Publishing must never stall the training loop, so a
subscriber is either non-blocking by contract (the store writer, ``App.post_message``) or wrapped
in a ``QueuedSubscriber`` that hands events to its own thread and drops the oldest when it falls
too far behind (and says how many it dropped).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from podium.engine.metrics import Matrix

log = logging.getLogger(__name__)

RunState = Literal["starting", "running", "paused", "stopping", "finished", "stopped", "failed"]


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step. ``losses`` has every head; ``loss`` is their weighted sum."""

    step: int
    epoch: float
    wall: float
    loss: float
    losses: dict[str, float]
    lr: float
    grad_norm: float
    tokens_per_s: float
    samples_per_s: float
    eta_s: float
    mfu: float | None = None
    """Model FLOPs utilisation (0..1) when the device's peak is known (``podium.engine.mfu``)."""


@dataclass(frozen=True)
class EvalMetrics:
    """A validation pass over the validation split."""

    step: int
    epoch: float
    wall: float
    loss: float
    losses: dict[str, float]
    best: float
    patience_left: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    """The family's scalar validation metrics (accuracy, top-k...), by name."""
    matrices: dict[str, Matrix] = field(default_factory=dict)
    """The family's matrix metrics (a confusion matrix), by name."""


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    epoch: float
    wall: float
    name: str
    path: str
    kind: str
    size: int
    val_loss: float | None


@dataclass(frozen=True)
class CheckpointDeleted:
    step: int
    wall: float
    name: str


@dataclass(frozen=True)
class StateChanged:
    step: int
    wall: float
    state: RunState
    reason: str = ""


@dataclass(frozen=True)
class Message:
    """A line for the event log: warnings (skipped non-finite step), info (lr changed), errors."""

    step: int
    wall: float
    level: Literal["info", "warning", "error"]
    text: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scalars:
    """Named values measured at a step outside the loss (e.g. the conditioning check)."""

    step: int
    epoch: float
    wall: float
    values: dict[str, float]


Event = (
    StepMetrics
    | EvalMetrics
    | CheckpointSaved
    | CheckpointDeleted
    | StateChanged
    | Message
    | Scalars
)
Subscriber = Callable[[Event], None]


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with a ``type`` tag (the socket and the store use this form)."""
    out = {"type": type(event).__name__, **dataclasses.asdict(event)}
    if isinstance(event, EvalMetrics):
        out["matrices"] = {k: m.to_dict() for k, m in event.matrices.items()}
    return out


_EVENT_TYPES: dict[str, type] = {c.__name__: c for c in typing.get_args(Event)}


def event_from_dict(payload: Mapping[str, Any]) -> Event | None:
    """Rebuild an event from ``event_to_dict``'s form (the store's rows, the socket's lines);
    None for an unknown type or a malformed payload."""
    cls = _EVENT_TYPES.get(str(payload.get("type")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in payload.items() if k in names}
    try:
        if cls is EvalMetrics:
            kwargs["matrices"] = {
                k: Matrix.from_dict(m) for k, m in (kwargs.get("matrices") or {}).items()
            }
        return cls(**kwargs)
    except (TypeError, ValueError, AttributeError):
        return None


class EventBus:
    """Calls every subscriber with every event, in the publishing thread.

    A subscriber that raises is logged and removed, so one broken viewer cannot break training.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed; removing it", subscriber)
                with self._lock:
                    if subscriber in self._subscribers:
                        self._subscribers.remove(subscriber)


class QueuedSubscriber:
    """Runs a slow consumer on its own thread behind a bounded queue.

    When the consumer falls more than ``maxlen`` events behind, the oldest events are dropped and
    ``dropped`` counts them; the training thread never waits.
    """

    def __init__(self, consumer: Subscriber, *, maxlen: int = 10_000, name: str = "events") -> None:
        self._consumer = consumer
        self._queue: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(event)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                event = self._queue.popleft()
            try:
                self._consumer(event)
            except Exception:
                log.exception("queued subscriber %r failed", self._consumer)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
