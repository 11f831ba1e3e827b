"""What the run screen shows, as plain data: series in memory, the latest numbers, the event log.

A ``RunModel`` is filled from two sources that meet at the same shape: the run's store (history,
downsampled by the store's min/max query) and live engine events (appended as they arrive). It
knows nothing of Textual, so it is tested and benchmarked on its own; widgets only read it.

Memory stays bounded: a live series that grows past ``4 * max_points`` is decimated in memory with
the store's rule (per equal-width step bucket, keep the minimum and the maximum point), so spikes
survive and a week-long run costs the same to draw as a minute-long one.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from podium.engine import series as names
from podium.engine.events import (
    CheckpointDeleted,
    CheckpointSaved,
    EvalMetrics,
    Event,
    Message,
    Scalars,
    StateChanged,
    StepMetrics,
    event_from_dict,
)
from podium.engine.metrics import Matrix
from podium.tui import format as fmt

XAxis = Literal["step", "wall"]
SMOOTHING_LEVELS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99)
"""EMA weights that ``[`` and ``]`` step through (TensorBoard's slider, in fixed notches)."""

LIVE_STATES = ("starting", "running", "paused", "stopping")
"""Engine run states in which commands still reach the trainer."""

Level = Literal["info", "warning", "error"]


def train_name(head: str | None) -> str:
    """The training loss series of ``head`` (None: the weighted total)."""
    return names.train_loss(head)


def val_name(head: str | None) -> str:
    """The validation loss series of ``head`` (None: the weighted total)."""
    return names.val_loss(head)


def is_reading(name: str) -> bool:
    """Whether a series is one whose latest value the numbers panel shows beside the plots:
    a validation metric (``val/<metric>``) or an epoch hook's value (``<group>/<name>``)."""
    return names.kind(name) in ("metric", "hook")


class Series:
    """One metric's points in step order: step, wall time and value per point."""

    __slots__ = ("best", "steps", "values", "walls")

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.walls: list[float] = []
        self.values: list[float] = []
        self.best = math.inf

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: float, wall: float, value: float) -> None:
        if self.steps and step <= self.steps[-1]:
            # A step logged again (a resumed run re-trains from its checkpoint): the newer wins.
            while self.steps and self.steps[-1] >= step:
                self.steps.pop()
                self.walls.pop()
                self.values.pop()
            self.best = min((v for v in self.values if v == v), default=math.inf)
        self.steps.append(step)
        self.walls.append(wall)
        self.values.append(value)
        if value < self.best:
            self.best = value

    def extend(
        self, steps: Sequence[float], walls: Sequence[float], values: Sequence[float]
    ) -> None:
        for s, w, v in zip(steps, walls, values, strict=True):
            self.append(s, w, v)

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    @property
    def best_or_none(self) -> float | None:
        return self.best if math.isfinite(self.best) else None

    def decimate(self, max_points: int) -> None:
        """Keep each equal-width step bucket's min and max point (``max_points // 2`` buckets)."""
        n = len(self.steps)
        if n <= max_points or max_points < 4:
            return
        nb = max_points // 2
        lo, hi = self.steps[0], self.steps[-1]
        span = hi - lo + 1
        keep: list[int] = []
        cur = -1
        imin = imax = 0
        for i in range(n):
            k = int((self.steps[i] - lo) * nb // span)
            if k != cur:
                if cur >= 0:
                    keep.extend(sorted({imin, imax}))
                cur, imin, imax = k, i, i
                continue
            v = self.values[i]
            if v < self.values[imin]:
                imin = i
            if not v <= self.values[imax]:  # NaN counts as the maximum, as in the store
                imax = i
        keep.extend(sorted({imin, imax}))
        self.steps = [self.steps[i] for i in keep]
        self.walls = [self.walls[i] for i in keep]
        self.values = [self.values[i] for i in keep]


def ema(steps: Sequence[float], values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average whose decay is per *step*, not per point.

    A point ``d`` steps after the previous one decays the average by ``weight ** d``, so a
    downsampled history (one point per bucket) and a full-resolution live tail smooth alike.
    Non-finite values are passed through and do not enter the average.
    """
    if weight <= 0 or not values:
        return list(values)
    out: list[float] = []
    acc = 0.0
    norm = 0.0
    prev: float | None = None
    for s, v in zip(steps, values, strict=True):
        if not (v == v and abs(v) != math.inf):
            out.append(v)
            continue
        decay = weight if prev is None else weight ** max(s - prev, 1.0)
        prev = s
        acc = acc * decay + (1 - decay) * v
        norm = norm * decay + (1 - decay)
        out.append(acc / norm if norm > 0 else v)
    return out


@dataclass(frozen=True)
class LogEntry:
    wall: float
    step: int
    level: Level
    text: str


@dataclass
class Numbers:
    """The latest scalar readings shown beside the plots."""

    step: int = 0
    epoch: float = 0.0
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    mfu: float | None = None
    """Model FLOPs utilisation (0..1), where the run reports one (``podium.engine.mfu``: a
    device whose peak is known)."""
    eta_s: float | None = None
    best_val: float | None = None
    patience_left: int | None = None
    wall: float | None = None
    latest: dict[str, float] = field(default_factory=dict)
    """The latest value of every validation metric and epoch-hook series (``val/accuracy``,
    ``cond/valence``...) by series name, whatever the family."""

    def metrics(self) -> dict[str, float]:
        """The latest validation metrics by metric name (``accuracy``), sorted."""
        return {
            names.metric_of(k): v
            for k, v in sorted(self.latest.items())
            if names.kind(k) == "metric"
        }

    def hook_groups(self) -> dict[str, dict[str, float]]:
        """The latest epoch-hook values by group, then by series name, sorted."""
        return {
            group: {k: self.latest[k] for k in keys}
            for group, keys in names.hook_groups(self.latest).items()
        }


def event_from_payload(payload: Mapping[str, Any]) -> Event | None:
    """Rebuild any engine event from its stored or socket JSON form (``event_to_dict``'s), or
    None for an unknown type or a malformed payload."""
    return event_from_dict(payload)


def describe(event: Event) -> LogEntry | None:
    """The event-log line for an event, or None for events the log does not show (steps)."""
    if isinstance(event, StateChanged):
        level: Level = "error" if event.state == "failed" else "info"
        reason = f": {event.reason}" if event.reason else ""
        return LogEntry(event.wall, event.step, level, f"state {event.state}{reason}")
    if isinstance(event, Message):
        return LogEntry(event.wall, event.step, event.level, event.text)
    if isinstance(event, CheckpointSaved):
        return LogEntry(
            event.wall, event.step, "info", f"saved {event.name} ({fmt.size(event.size)})"
        )
    if isinstance(event, CheckpointDeleted):
        return LogEntry(event.wall, event.step, "info", f"removed checkpoint {event.name}")
    if isinstance(event, EvalMetrics):
        new_best = math.isfinite(event.loss) and event.loss <= event.best
        text = f"val {event.loss:.4f}" + (" new best" if new_best else f" (best {event.best:.4f})")
        if event.patience_left is not None:
            text += f" · patience {event.patience_left}"
        level = (
            "warning" if event.patience_left is not None and event.patience_left <= 1 else "info"
        )
        return LogEntry(event.wall, event.step, level, text)
    return None


@dataclass
class RunModel:
    """Everything the run screen draws for one run."""

    run_id: str = ""
    profile: str = ""
    family: str = ""
    device: str = ""
    heads: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    """The family's declared validation metrics (before any value arrives); see ``metrics``."""
    matrix_names: list[str] = field(default_factory=list)
    """The family's declared matrix metrics (before any value arrives); see ``matrix_keys``."""
    matrices: dict[str, tuple[int, Matrix]] = field(default_factory=dict)
    """The latest value of each matrix metric, with the step it was measured at."""
    state: str = "starting"
    """An engine run state while live in this process, else the run directory's status."""
    reason: str = ""
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    numbers: Numbers = field(default_factory=Numbers)
    series: dict[str, Series] = field(default_factory=dict)
    log: collections.deque[LogEntry] = field(default_factory=lambda: collections.deque(maxlen=500))
    max_points: int = 400
    """Points kept per series in memory (about twice the plot's width in cells)."""
    version: int = 0
    """Bumped on every change; views redraw only when it moved."""
    checkpoints_version: int = 0
    """Bumped when a checkpoint was saved or removed; the checkpoint table re-reads the disk."""
    log_version: int = 0
    start_wall: float | None = None

    # -- feeding ------------------------------------------------------------------------------

    def get(self, name: str) -> Series:
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = Series()
        return s

    def _point(self, name: str, step: int, wall: float, value: float) -> None:
        s = self.get(name)
        s.append(step, wall, value)
        if len(s) > 4 * self.max_points:
            s.decimate(2 * self.max_points)

    def apply(self, events: Iterable[Event]) -> None:
        """Fold live events into the model (called by the UI thread with a drained batch)."""
        changed = False
        for event in events:
            changed = True
            if self.start_wall is None:
                self.start_wall = event.wall
            if isinstance(event, StepMetrics):
                self._step(event)
                continue
            if isinstance(event, EvalMetrics):
                self._eval(event)
            elif isinstance(event, StateChanged):
                self.state, self.reason = event.state, event.reason
            elif isinstance(event, (CheckpointSaved, CheckpointDeleted)):
                self.checkpoints_version += 1
            elif isinstance(event, Scalars):
                for name, value in event.values.items():
                    self._point(name, event.step, event.wall, value)
                    if is_reading(name):
                        self.numbers.latest[name] = value
                continue
            elif isinstance(event, Message) and "lr" in event.data:
                self.numbers.lr = float(event.data["lr"])
            self.add_log(describe(event))
        if changed:
            self.version += 1

    def add_log(self, entry: LogEntry | None) -> None:
        if entry is not None:
            self.log.append(entry)
            self.log_version += 1

    def _step(self, e: StepMetrics) -> None:
        n = self.numbers
        n.step, n.epoch, n.wall = e.step, e.epoch, e.wall
        n.lr, n.grad_norm = e.lr, e.grad_norm
        n.tokens_per_s, n.samples_per_s, n.eta_s = e.tokens_per_s, e.samples_per_s, e.eta_s
        n.mfu = e.mfu
        self._point(names.train_loss(), e.step, e.wall, e.loss)
        for head, v in e.losses.items():
            self._point(names.train_loss(head), e.step, e.wall, v)
        if not self.heads:
            self.heads = list(e.losses)

    def _eval(self, e: EvalMetrics) -> None:
        self._point(names.val_loss(), e.step, e.wall, e.loss)
        for head, v in e.losses.items():
            self._point(names.val_loss(head), e.step, e.wall, v)
        for metric, v in e.metrics.items():
            name = names.val_metric(metric)
            self._point(name, e.step, e.wall, v)
            self.numbers.latest[name] = v
        self.set_matrices({k: (e.step, m) for k, m in e.matrices.items()})
        self.numbers.best_val = e.best if math.isfinite(e.best) else None
        self.numbers.patience_left = e.patience_left

    def set_matrices(self, matrices: Mapping[str, tuple[int, Matrix]]) -> None:
        """Keep the newer of what is held and ``matrices`` (name -> (step, matrix)) per name."""
        for name, (step, matrix) in matrices.items():
            held = self.matrices.get(name)
            if held is None or step >= held[0]:
                self.matrices[name] = (int(step), matrix)

    # -- history -----------------------------------------------------------------------------

    def load_history(
        self,
        points: Mapping[str, tuple[Sequence[tuple[float, float]], Sequence[tuple[float, float]]]],
        *,
        last: Mapping[str, float] | None = None,
        matrices: Mapping[str, tuple[int, Matrix]] | None = None,
    ) -> None:
        """Replace series with stored history: name -> (step points, wall points) of one query.

        Both lists come from the same downsampled query with ``x="step"`` and ``x="wall"``, so
        they hold the same points in the same order. Live points newer than the history stay.
        ``last`` holds the latest stored value of the stats, metrics and hook series; ``matrices``
        the latest stored value of each matrix metric (a newer one held already stays).
        """
        for name, (by_step, by_wall) in points.items():
            fresh = Series()
            if len(by_step) == len(by_wall):
                fresh.extend(
                    [p[0] for p in by_step], [p[0] for p in by_wall], [p[1] for p in by_step]
                )
            old = self.series.get(name)
            if old is not None and fresh.steps:
                for s, w, v in zip(old.steps, old.walls, old.values, strict=True):
                    if s > fresh.steps[-1]:
                        fresh.append(s, w, v)
            self.series[name] = fresh
            if fresh.walls and (self.start_wall is None or fresh.walls[0] < self.start_wall):
                self.start_wall = fresh.walls[0]
        if last:
            n = self.numbers
            for name, value in last.items():
                if is_reading(name):
                    n.latest[name] = value
            n.lr = last.get(names.LR, n.lr)
            n.grad_norm = last.get(names.GRAD_NORM, n.grad_norm)
            n.tokens_per_s = last.get(names.TOKENS_PER_S, n.tokens_per_s)
            n.samples_per_s = last.get(names.SAMPLES_PER_S, n.samples_per_s)
            n.mfu = last.get(names.MFU, n.mfu)
        if matrices:
            self.set_matrices(matrices)
        train = self.series.get(names.train_loss())
        if train is not None and train.steps and train.steps[-1] > self.numbers.step:
            self.numbers.step = int(train.steps[-1])
            if self.steps_per_epoch:
                self.numbers.epoch = self.numbers.step / self.steps_per_epoch
        val = self.series.get(names.val_loss())
        if val is not None and val.best_or_none is not None:
            self.numbers.best_val = val.best_or_none
        if not self.heads:
            self.heads = names.heads_in(self.series)
        self.version += 1

    def load_events(self, events: Iterable[Event]) -> None:
        """Stored events (oldest first) into the log and the early-stopping reading."""
        for event in events:
            if isinstance(event, EvalMetrics):
                self.numbers.patience_left = event.patience_left
                if math.isfinite(event.best):
                    self.numbers.best_val = event.best
                self.set_matrices({k: (event.step, m) for k, m in event.matrices.items()})
            self.add_log(describe(event))
        self.version += 1

    # -- reading -----------------------------------------------------------------------------

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def metrics(self) -> list[str]:
        """Validation metric names (``accuracy``): the declared ones, then any others stored."""
        found = names.metrics_in(self.series)
        return [*self.metric_names, *(n for n in found if n not in self.metric_names)]

    @property
    def hook_groups(self) -> dict[str, list[str]]:
        """Epoch-hook series by group (``{"cond": ["cond/arousal", ...]}``), sorted."""
        return names.hook_groups(self.series)

    @property
    def matrix_keys(self) -> list[str]:
        """Matrix metric names: the declared ones, then any others that have a value."""
        return [
            *self.matrix_names,
            *(n for n in sorted(self.matrices) if n not in self.matrix_names),
        ]

    @property
    def end_step(self) -> int | None:
        """The step this run will stop at: the schedule's end or ``--max-steps``."""
        if self.total_steps is None:
            return self.max_steps
        if self.max_steps is None:
            return self.total_steps
        return min(self.total_steps, self.max_steps)

    def xy(self, name: str, x: XAxis, smoothing: float = 0.0) -> tuple[list[float], list[float]]:
        """The (x, y) lists of a series for plotting; wall time is seconds since the run began."""
        s = self.series.get(name)
        if s is None or not s.steps:
            return [], []
        if x == "step":
            xs = list(s.steps)
        else:
            t0 = self.start_wall if self.start_wall is not None else s.walls[0]
            xs = [w - t0 for w in s.walls]
        ys = ema(s.steps, s.values, smoothing) if smoothing > 0 else list(s.values)
        return xs, ys
