"""Subscribers that turn engine events into stored rows and printed lines.

``StoreSink`` feeds the run's SQLite store through a non-blocking writer thread. ``LineSink``
prints compact progress lines (headless mode on stdout, always into the run's ``train.log``): one
line every few seconds for steps, and at once for validations, checkpoints, warnings and state
changes.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import TextIO

from podium.engine import series
from podium.engine.events import (
    CheckpointDeleted,
    CheckpointSaved,
    EvalMetrics,
    Event,
    Message,
    Scalars,
    StateChanged,
    StepMetrics,
    event_to_dict,
)
from podium.engine.store import CheckpointRecord, StoreWriter
from podium.engine.units import size


def step_series(event: StepMetrics) -> dict[str, float]:
    return series.step_values(
        loss=event.loss,
        losses=event.losses,
        lr=event.lr,
        grad_norm=event.grad_norm,
        tokens_per_s=event.tokens_per_s,
        samples_per_s=event.samples_per_s,
        mfu=event.mfu,
    )


def eval_series(event: EvalMetrics) -> dict[str, float]:
    return series.eval_values(loss=event.loss, losses=event.losses, metrics=event.metrics)


class StoreSink:
    """Writes every event into the run's store without ever blocking the training thread."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def __call__(self, event: Event) -> None:
        w = self.writer
        if isinstance(event, StepMetrics):
            w.submit_scalars(event.step, event.epoch, event.wall, step_series(event))
        elif isinstance(event, EvalMetrics):
            w.submit_scalars(event.step, event.epoch, event.wall, eval_series(event))
            if event.matrices:
                w.submit_matrices(event.step, event.wall, dict(event.matrices))
            # The matrices have a table of their own: the log's row needs only the numbers.
            row = event_to_dict(dataclasses.replace(event, matrices={}))
            w.submit_event("eval", row, step=event.step, wall=event.wall)
        elif isinstance(event, CheckpointSaved):
            w.submit_checkpoint(
                CheckpointRecord(
                    name=event.name,
                    path=event.path,
                    step=event.step,
                    epoch=event.epoch,
                    val_loss=event.val_loss,
                    size=event.size,
                    wall=event.wall,
                    kind=event.kind,
                )
            )
            w.submit_event("checkpoint", event_to_dict(event), step=event.step, wall=event.wall)
        elif isinstance(event, CheckpointDeleted):
            w.submit_delete_checkpoint(event.name)
            w.submit_event(
                "checkpoint_deleted", event_to_dict(event), step=event.step, wall=event.wall
            )
        elif isinstance(event, StateChanged):
            w.submit_event("state", event_to_dict(event), step=event.step, wall=event.wall)
        elif isinstance(event, Message):
            w.submit_event(event.level, event_to_dict(event), step=event.step, wall=event.wall)
        elif isinstance(event, Scalars):
            w.submit_scalars(event.step, event.epoch, event.wall, dict(event.values))


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_step(event: StepMetrics, total_steps: int | None = None) -> str:
    of = f"/{total_steps}" if total_steps else ""
    heads = " ".join(f"{h} {v:.3f}" for h, v in event.losses.items())
    return (
        f"step {event.step}{of} ep {event.epoch:.2f} loss {event.loss:.4f} | {heads} | "
        f"lr {event.lr:.2e} | {event.tokens_per_s:,.0f} tok/s{_mfu_text(event.mfu)} | ETA {format_duration(event.eta_s)}"
    )


class LineSink:
    """Prints progress lines; step lines are rate-limited to one per ``interval`` seconds."""

    def __init__(
        self, stream: TextIO | None = None, *, interval: float = 3.0, total_steps: int | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.interval = interval
        self.total_steps = total_steps
        self._last = 0.0
        self._latest: StepMetrics | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last, self._latest = now, None
                self._write(format_step(event, self.total_steps))
            else:
                self._latest = event  # printed later, or by flush_step
            return
        self.flush_step()
        if isinstance(event, EvalMetrics):
            heads = " ".join(f"{h} {v:.3f}" for h, v in {**event.losses, **event.metrics}.items())
            patience = (
                "" if event.patience_left is None else f" | patience left {event.patience_left}"
            )
            self._write(
                f"val  step {event.step} loss {event.loss:.4f} (best {event.best:.4f}) | {heads}{patience}"
            )
        elif isinstance(event, CheckpointSaved):
            self._write(f"checkpoint {event.name} at step {event.step} ({size(event.size)})")
        elif isinstance(event, StateChanged):
            reason = f": {event.reason}" if event.reason else ""
            self._write(f"state {event.state} at step {event.step}{reason}")
        elif isinstance(event, Message):
            self._write(f"{event.level}: {event.text}")
        elif isinstance(event, Scalars):
            values = " ".join(f"{k} {v:.3f}" for k, v in event.values.items())
            self._write(f"step {event.step}: {values}")

    def flush_step(self) -> None:
        """Print the newest step line if it has not been printed (so the last numbers show)."""
        latest, self._latest = self._latest, None
        if latest is not None:
            self._last = time.monotonic()
            self._write(format_step(latest, self.total_steps))

    def _write(self, line: str) -> None:
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not stop training


def _mfu_text(value: float | None) -> str:
    return "" if value is None else f" | MFU {value:.1%}"
