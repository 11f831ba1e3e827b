"""Reading a run's stored history and facts for the dashboard (runs in worker threads).

Every function here opens its own read-only store connection and closes it before returning,
because a SQLite connection belongs to the thread that opened it; callers run these in Textual
thread workers and hand the plain results to the UI thread in a message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from podium.engine import series
from podium.engine.events import Event
from podium.engine.metrics import Matrix
from podium.engine.runs import RunDir
from podium.engine.store import RunStore
from podium.tui.model import event_from_payload, is_reading

STAT_SERIES = series.STATS
"""Per-step readings whose latest value is shown as a number (never plotted)."""
LOG_KINDS = ("eval", "checkpoint", "checkpoint_deleted", "state", "info", "warning", "error")


@dataclass
class History:
    """Series points (name -> (by step, by wall)), the latest values of the stats, metrics and
    hook series, the latest matrices (name -> (step, matrix)) and log events."""

    points: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = field(
        default_factory=dict
    )
    last: dict[str, float] = field(default_factory=dict)
    matrices: dict[str, tuple[int, Matrix]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    series_names: list[str] = field(default_factory=list)
    last_event_id: int = 0


def plotted_series(names: Iterable[str]) -> list[str]:
    """The plotted series among ``names``: losses (total and per head, train and val),
    validation metrics and epoch hooks' values; not the per-step stats."""
    return series.plotted(names)


def _latest_matrices(store: RunStore, end_step: int | None) -> dict[str, tuple[int, Matrix]]:
    """The newest stored value of each matrix metric (at or before ``end_step``)."""
    out: dict[str, tuple[int, Matrix]] = {}
    for name in store.matrix_names():
        found = store.latest_matrix(name, end_step=end_step)
        if found is not None:
            out[name] = (int(found[0]), found[1])
    return out


def read_history(
    db_path: Path,
    *,
    max_points: int,
    end_step: int | None = None,
    names: Sequence[str] | None = None,
    with_events: bool = True,
    since_event: int = 0,
) -> History:
    """Downsampled loss series, the latest stat values and the event log of one run's store.

    Args:
        db_path: the run's ``metrics.db``; a missing file gives an empty history.
        max_points: per series (the store keeps each bucket's min and max point).
        end_step: ignore anything after this step (a resumed run's store may still hold points
            after the checkpoint until the writer's truncate lands).
        names: only these series (default: every plotted series, ``series.plotted``).
        with_events: also read events with ``id > since_event``.
    """
    out = History()
    if not db_path.exists():
        return out
    store = RunStore.open(db_path, readonly=True)
    try:
        out.series_names = store.series_names()
        wanted = list(names) if names is not None else plotted_series(out.series_names)
        wanted = [n for n in wanted if n in out.series_names]
        by_step = store.query_many(wanted, max_points=max_points, end_step=end_step)
        by_wall = store.query_many(wanted, max_points=max_points, end_step=end_step, x="wall")
        out.points = {n: (by_step[n], by_wall[n]) for n in wanted}
        readings = [n for n in out.series_names if is_reading(n)]
        for name in (*STAT_SERIES, *readings):
            if end_step is None:
                last = store.last(name)
            elif name in STAT_SERIES:  # every step: the last one or two are enough
                pts = store.query(name, start_step=max(end_step - 1, 0), end_step=end_step)
                last = pts[-1] if pts else None
            else:  # metrics and hooks: a point per validation or per few epochs
                pts = store.query(name, end_step=end_step)
                last = pts[-1] if pts else None
            if last is not None and math.isfinite(last[1]):
                out.last[name] = last[1]
        out.matrices = _latest_matrices(store, end_step)
        if with_events:
            rows = store.events(kinds=LOG_KINDS, since_id=since_event)
            for row in rows:
                out.last_event_id = max(out.last_event_id, row.id)
                if end_step is not None and row.step > end_step:
                    continue
                event = event_from_payload(row.payload)
                if event is not None:
                    out.events.append(event)
    finally:
        store.close()
    return out


_LOG_FACTS = re.compile(
    r"device (?P<device>[^,\s]+)(?: x \d+ ranks)?, (?P<total>\d+) steps \((?P<per_epoch>\d+)/epoch\)"
)


@dataclass(frozen=True)
class RunFacts:
    """Facts the engine prints when a run starts but does not store elsewhere (yet)."""

    device: str = ""
    total_steps: int | None = None
    steps_per_epoch: int | None = None


def run_facts(run: RunDir) -> RunFacts:
    """Device and schedule length of a run, read from the first lines of its ``train.log``.

    A stop-gap: the engine writes these only to the log. The newest start line wins (a resumed
    run logs it again).
    """
    try:
        with open(run.log_path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return RunFacts()
    found = None
    for m in _LOG_FACTS.finditer(head):
        found = m
    if found is None:
        return RunFacts()
    return RunFacts(
        device=found["device"],
        total_steps=int(found["total"]),
        steps_per_epoch=int(found["per_epoch"]),
    )


@dataclass(frozen=True)
class RunRow:
    """One line of the home screen's runs table."""

    id: str
    profile: str
    state: str
    reason: str
    step: int | None
    best_val: float | None
    device: str
    created: float
    host: str
    path: Path


def row_signature(run: RunDir) -> tuple:
    """Changes whenever ``run_row(run)`` could: the run's state and its files' sizes and times.

    The home screen re-reads a run's store only when this changed, so a long list of finished
    runs costs a few ``stat`` calls per refresh instead of one SQLite open per run.
    """
    sig: list[object] = [run.status()]
    for path in (run.db_path, run.db_path.with_name("metrics.db-wal"), run.path / "run.json"):
        try:
            st = path.stat()
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


def run_row(run: RunDir) -> RunRow:
    """A run's table row from its directory and store (a damaged run still gets a row)."""
    try:
        info = run.info()
        profile, created, host = info.profile, info.created, info.host
    except Exception:
        profile, created, host = "?", math.nan, ""
    state, reason = run.status()
    step = best = None
    if run.db_path.exists():
        try:
            store = RunStore.open(run.db_path, readonly=True)
        except Exception as exc:
            reason = f"store unreadable: {exc}"
        else:
            try:
                step, best = store.progress()
            except Exception as exc:  # a store being migrated or damaged: show, don't fail
                reason = f"store unreadable: {exc}"
            finally:
                store.close()
    return RunRow(
        id=run.id,
        profile=profile,
        state=state,
        reason=reason,
        step=step,
        best_val=best,
        device=run_facts(run).device,
        created=created,
        host=host,
        path=run.path,
    )
