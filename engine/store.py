"""The per-run metrics store: one SQLite file, ``runs/<run-id>/metrics.db``, in WAL mode.

The training process writes scalars (one row per series per step), events and the checkpoint
table; the dashboard (in another thread or another process, via ``podium attach``) and CLI
commands (``podium metrics RUN --json``) read while it writes. WAL mode is what makes that work:
readers see the last committed transaction and never block the writer, the writer never blocks
readers. ``synchronous=NORMAL`` skips the fsync on every commit (a power cut may lose the last
fraction of a second of metrics, never corrupt the file), which is the right trade for data that
is rewritten every half second.

Two classes:

- ``RunStore``: one SQLite connection. Writable stores create the schema; readers open the file
  read-only (``file:...?mode=ro``). ``add_scalars`` only buffers; ``flush`` writes the buffer in
  one transaction.
- ``StoreWriter``: what the trainer feeds. Every ``submit_*`` call appends to an in-memory queue
  and returns at once; a daemon thread with its own ``RunStore`` writes batches. ``flush`` waits
  until everything submitted so far is committed; errors in the thread are re-raised there.

Thread safety: a ``RunStore`` belongs to the thread that opened it (sqlite3 connections must not
be shared across threads; the module enforces this with ``check_same_thread``). Open one store per
reading thread. A ``StoreWriter``'s methods may be called from any thread.

Timings (ingest rate, downsampled against full queries): ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from engine.errors import RunError

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the schema this module writes; a newer file is refused."""

_SCHEMA = (
    """CREATE TABLE meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID""",
    """CREATE TABLE series(
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL
)""",
    # Clustered on (series_id, step): a per-series step range is one contiguous b-tree range,
    # and a step logged twice for a series replaces the old value instead of duplicating it.
    """CREATE TABLE scalars(
    series_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    epoch REAL,
    wall REAL,
    value REAL,
    PRIMARY KEY (series_id, step)
) WITHOUT ROWID""",
    """CREATE TABLE events(
    id INTEGER PRIMARY KEY,
    wall REAL,
    step INTEGER,
    kind TEXT,
    payload TEXT
)""",
    """CREATE TABLE checkpoints(
    name TEXT PRIMARY KEY,
    path TEXT,
    step INTEGER,
    epoch REAL,
    val_loss REAL,
    size INTEGER,
    wall REAL,
    kind TEXT,
    keep INTEGER DEFAULT 0
)""",
)

# Downsampling, done inside SQLite. A plain ``GROUP BY bucket`` with min()/max() makes SQLite sort
# every row of the range into a temporary b-tree first (the bucket is an expression, so no index
# delivers it in order): on 1M points that alone cost ~330 ms per aggregate here, slower than
# fetching all rows. Instead each bucket is a correlated subquery over its own primary-key range,
# ``SELECT step, min(value)`` with no GROUP BY: two streaming passes over the range and no sort.
# SQLite's bare-column rule makes ``step`` come from the row holding the min (max). NaN is stored as
# NULL; min() skips it, and the max side ranks it above every number (``coalesce(value, 9e999)``,
# 9e999 being +inf), as numpy's sort does, so a bucket that went NaN shows it.
# Bucket i holds the steps with (step - lo) * nb // span == i: it starts at ceil(i * span / nb).
_BUCKETED = """
WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i + 1 < :nb),
r(a, z) AS (SELECT :lo + (i * :span + :nb - 1) / :nb,
                   :lo + ((i + 1) * :span + :nb - 1) / :nb - 1 FROM b),
picks(step) AS (
    SELECT (SELECT step FROM (SELECT step, min(value) FROM scalars
                              WHERE series_id = :sid AND step BETWEEN r.a AND r.z)) FROM r
    UNION
    SELECT (SELECT step FROM (SELECT step, max(coalesce(value, 9e999)) FROM scalars
                              WHERE series_id = :sid AND step BETWEEN r.a AND r.z)) FROM r
)
SELECT s.{x}, s.value FROM scalars s
WHERE s.series_id = :sid AND s.step IN (SELECT step FROM picks WHERE step IS NOT NULL)
ORDER BY s.step
"""

_NAN = float("nan")


@dataclass(frozen=True, kw_only=True)
class CheckpointRecord:
    """One row of the checkpoint table (mirrors a checkpoint's metadata file)."""

    name: str
    path: str
    step: int
    epoch: float
    val_loss: float | None
    size: int
    wall: float
    kind: str
    keep: bool = False


@dataclass(frozen=True)
class EventRow:
    """One stored event; ``payload`` is the decoded JSON object."""

    id: int
    wall: float
    step: int
    kind: str
    payload: dict[str, Any]


def _ro_uri(path: Path) -> str:
    # quote() keeps '/' but escapes '?', '#', '%' and spaces that would break the URI.
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def _value(v: float | None) -> float:
    return _NAN if v is None else v


class RunStore:
    """One connection to a run's metrics database. Use from the thread that opened it."""

    def __init__(self, con: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._con = con
        self.path = path
        self.readonly = readonly
        self._buffer: list[tuple[int, float, float, Mapping[str, float]]] = []
        self._series_ids: dict[str, int] = {}
        self._tx_depth = 0
        self._ready = not readonly  # a reader may open the file before the schema is committed

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> RunStore:
        """Open (and, when writable, create) the store at ``path``.

        Args:
            path: the ``metrics.db`` file; its directory must exist.
            readonly: open read-only (dashboard, CLI); the file must exist. Never blocks a writer.
            busy_timeout: seconds to wait for a lock held by another connection before failing.

        Raises:
            FileNotFoundError: ``readonly`` and there is no such file.
            RunError: the file was written by a newer podium (its schema version is higher).
        """
        path = Path(path)
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"{path}: no metrics store")
            con = sqlite3.connect(
                _ro_uri(path), uri=True, timeout=busy_timeout, isolation_level=None
            )
        else:
            con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            store = cls(con, path, readonly)
            if readonly:
                store._check_version()
            else:
                con.execute("PRAGMA journal_mode = WAL")
                con.execute("PRAGMA synchronous = NORMAL")
                store._create_schema()
        except BaseException:
            con.close()
            raise
        return store

    def _check_version(self) -> int:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunError(
                f"{self.path}: metrics store schema version {version} is newer than this podium "
                f"reads ({SCHEMA_VERSION}); upgrade podium to open this run"
            )
        self._ready = version >= 1
        return version

    def _create_schema(self) -> None:
        with self._tx():
            if self._check_version() == 0:
                for statement in _SCHEMA:
                    self._con.execute(statement)
                self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._con.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('created', ?)",
                    (repr(time.time()),),
                )
        self._ready = True

    def _is_ready(self) -> bool:
        """Readers: has the writer committed the schema yet? (Checked until it has.)"""
        return self._ready or self._check_version() >= 1

    def close(self) -> None:
        """Write what is buffered and close the connection; a second call does nothing."""
        if self._con is None:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            self._con.close()
            self._con = None  # type: ignore[assignment]

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one (so a batch commits once)."""
        if self._tx_depth:
            self._tx_depth += 1
            try:
                yield
            finally:
                self._tx_depth -= 1
            return
        # IMMEDIATE takes the write lock up front, so a busy database fails here (after
        # busy_timeout) instead of halfway through the batch.
        self._con.execute("BEGIN IMMEDIATE")
        self._tx_depth = 1
        try:
            yield
        except BaseException:
            self._tx_depth = 0
            self._con.execute("ROLLBACK")
            self._series_ids.clear()  # ids created in the rolled-back transaction are gone
            raise
        self._tx_depth = 0
        try:
            self._con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._con.execute("ROLLBACK")
            self._series_ids.clear()
            raise

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group several writes (scalars flush, events, checkpoints) into one transaction."""
        return self._tx()

    # -- scalars ---------------------------------------------------------------------------

    def add_scalars(
        self, step: int, epoch: float, wall: float, values: Mapping[str, float]
    ) -> None:
        """Buffer one step's values (series name -> value); nothing is written until ``flush``.

        NaN is stored as NULL and read back as NaN; +-inf are stored as they are.
        """
        self._buffer.append((step, epoch, wall, values))

    def flush(self) -> None:
        """Write the buffered scalars in one transaction; on failure the buffer is kept."""
        if not self._buffer:
            return
        with self._tx():
            ids = self._series_ids
            rows = []
            for step, epoch, wall, values in self._buffer:
                for name, value in values.items():
                    sid = ids.get(name)
                    if sid is None:
                        sid = self._series_id(name, create=True)
                    # sqlite3 binds NaN as NULL itself; read back below as NaN.
                    rows.append((sid, step, epoch, wall, float(value)))
            self._con.executemany(
                "INSERT OR REPLACE INTO scalars(series_id, step, epoch, wall, value) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._buffer.clear()

    def _series_id(self, name: str, *, create: bool = False) -> int | None:
        sid = self._series_ids.get(name)
        if sid is not None:
            return sid
        if create:
            self._con.execute("INSERT OR IGNORE INTO series(name) VALUES (?)", (name,))
        row = self._con.execute("SELECT id FROM series WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        self._series_ids[name] = row[0]
        return row[0]

    def series_names(self) -> list[str]:
        """Every series with at least a name stored, sorted by name."""
        if not self._is_ready():
            return []
        return [r[0] for r in self._con.execute("SELECT name FROM series ORDER BY name")]

    def last(self, series: str) -> tuple[int, float] | None:
        """The (step, value) of the highest step stored for ``series``, or None."""
        if not self._is_ready() or (sid := self._series_id(series)) is None:
            return None
        row = self._con.execute(
            "SELECT step, value FROM scalars WHERE series_id = ? ORDER BY step DESC LIMIT 1",
            (sid,),
        ).fetchone()
        return None if row is None else (row[0], _value(row[1]))

    def query(
        self,
        series: str,
        *,
        max_points: int | None = None,
        start_step: int | None = None,
        end_step: int | None = None,
        x: Literal["step", "wall"] = "step",
    ) -> list[tuple[float, float]]:
        """Points of ``series`` in step order, downsampled so that no spike or dip is lost.

        Args:
            series: series name; an unknown name gives ``[]``.
            max_points: None for every point. Otherwise, when the range holds more points than
                this, the step range is cut into ``max_points // 2`` equal buckets and each bucket
                keeps its minimum and its maximum point (NaN counts as the maximum).
            start_step, end_step: inclusive step bounds (None = open).
            x: ``"step"`` gives (step, value) pairs, ``"wall"`` gives (wall time, value) pairs of
                the same points.

        Returns:
            ``[(x, value), ...]`` sorted by step; stored NULLs come back as NaN.
        """
        if max_points is not None and max_points < 2:
            raise ValueError(f"max_points: must be >= 2 or None (got {max_points})")
        if x not in ("step", "wall"):
            raise ValueError(f"x: must be 'step' or 'wall' (got {x!r})")
        if not self._is_ready() or (sid := self._series_id(series)) is None:
            return []
        lo_bound = -(2**63) if start_step is None else start_step
        hi_bound = 2**63 - 1 if end_step is None else end_step
        con = self._con
        # One read transaction: the bounds, the count and the points come from the same snapshot.
        own_tx = not con.in_transaction
        if own_tx:
            con.execute("BEGIN")
        try:
            if max_points is not None:
                n = con.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM scalars WHERE series_id = ? "
                    "AND step BETWEEN ? AND ? LIMIT ?)",
                    (sid, lo_bound, hi_bound, max_points + 1),
                ).fetchone()[0]
            if max_points is None or n <= max_points:
                rows = con.execute(
                    f"SELECT {x}, value FROM scalars WHERE series_id = ? "
                    "AND step BETWEEN ? AND ? ORDER BY step",
                    (sid, lo_bound, hi_bound),
                ).fetchall()
            else:
                rng = "FROM scalars WHERE series_id = ? AND step BETWEEN ? AND ? ORDER BY step"
                lo = con.execute(f"SELECT step {rng} LIMIT 1", (sid, lo_bound, hi_bound))
                hi = con.execute(f"SELECT step {rng} DESC LIMIT 1", (sid, lo_bound, hi_bound))
                lo, hi = lo.fetchone()[0], hi.fetchone()[0]
                params = {"sid": sid, "lo": lo, "span": hi - lo + 1, "nb": max_points // 2}
                rows = con.execute(_BUCKETED.format(x=x), params).fetchall()
        finally:
            if own_tx:
                con.execute("COMMIT")
        return [(a, _NAN if v is None else v) for a, v in rows]

    def query_many(self, names: Iterable[str], **kw: Any) -> dict[str, list[tuple[float, float]]]:
        """``query`` for several series with the same options."""
        return {name: self.query(name, **kw) for name in names}

    def truncate_after(self, step: int) -> None:
        """Delete scalars and events after ``step`` (a run resuming from a checkpoint at ``step``).

        Anything buffered is written first, so a truncate also applies to earlier ``add_scalars``.
        """
        with self._tx():
            self.flush()
            sids = [r[0] for r in self._con.execute("SELECT id FROM series")]
            # Per series, so each delete is a primary-key range instead of a full-table scan.
            self._con.executemany(
                "DELETE FROM scalars WHERE series_id = ? AND step > ?", [(s, step) for s in sids]
            )
            self._con.execute("DELETE FROM events WHERE step > ?", (step,))

    # -- events ----------------------------------------------------------------------------

    def add_event(
        self, kind: str, payload: Mapping[str, Any] | str, *, step: int, wall: float
    ) -> int:
        """Store one event now (``payload``: a JSON-ready mapping, or JSON text); returns its id."""
        text = payload if isinstance(payload, str) else json.dumps(payload, default=_json_default)
        with self._tx():
            cur = self._con.execute(
                "INSERT INTO events(wall, step, kind, payload) VALUES (?, ?, ?, ?)",
                (wall, step, kind, text),
            )
        return cur.lastrowid

    def events(
        self,
        kinds: Iterable[str] | None = None,
        since_id: int = 0,
        limit: int | None = None,
    ) -> list[EventRow]:
        """Events with ``id > since_id`` (optionally only these kinds), oldest first.

        A follower keeps the last id it saw and passes it back as ``since_id``.
        """
        if not self._is_ready():
            return []
        sql = "SELECT id, wall, step, kind, payload FROM events WHERE id > ?"
        args: list[Any] = [since_id]
        if kinds is not None:
            kinds = list(kinds)
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            args += kinds
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            EventRow(id=i, wall=w, step=s, kind=k, payload=json.loads(p))
            for i, w, s, k, p in self._con.execute(sql, args)
        ]

    # -- checkpoints -----------------------------------------------------------------------

    def upsert_checkpoint(self, rec: CheckpointRecord) -> None:
        """Insert or replace the checkpoint row named ``rec.name``."""
        val_loss = rec.val_loss
        if val_loss is not None and math.isnan(val_loss):
            val_loss = None
        with self._tx():
            self._con.execute(
                "INSERT OR REPLACE INTO checkpoints"
                "(name, path, step, epoch, val_loss, size, wall, kind, keep) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.name,
                    str(rec.path),
                    rec.step,
                    rec.epoch,
                    val_loss,
                    rec.size,
                    rec.wall,
                    rec.kind,
                    int(rec.keep),
                ),
            )

    def delete_checkpoint(self, name: str) -> None:
        with self._tx():
            self._con.execute("DELETE FROM checkpoints WHERE name = ?", (name,))

    def checkpoints(self) -> list[CheckpointRecord]:
        """Every checkpoint row, oldest step first."""
        if not self._is_ready():
            return []
        rows = self._con.execute(
            "SELECT name, path, step, epoch, val_loss, size, wall, kind, keep FROM checkpoints "
            "ORDER BY step, wall, name"
        )
        return [
            CheckpointRecord(
                name=n, path=p, step=s, epoch=e, val_loss=v, size=z, wall=w, kind=k, keep=bool(kp)
            )
            for n, p, s, e, v, z, w, k, kp in rows
        ]

    # -- meta ------------------------------------------------------------------------------

    def meta_get(self, key: str, default: str | None = None) -> str | None:
        if not self._is_ready():
            return default
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def meta_set(self, key: str, value: str) -> None:
        """Store a small string (run-level facts such as the profile hash)."""
        with self._tx():
            self._con.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value))
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"event payload: {type(obj).__name__} is not JSON serialisable")


# -- the non-blocking writer ------------------------------------------------------------------

# Queue entries: (op, *args). Submitting validates and converts on the caller's thread, so
# the writer thread only ever fails on database/disk errors, which are worth retrying.
_SCALARS, _EVENT, _CHECKPOINT, _DELETE_CHECKPOINT, _TRUNCATE, _META = range(6)


class StoreWriter:
    """Feeds a run's store from the training thread without ever blocking it.

    ``submit_*`` append to an in-memory queue and return. A daemon thread, with its own
    ``RunStore`` connection, writes the queue in one transaction at most every ``flush_interval``
    seconds, sooner when ``max_pending`` rows wait or someone calls ``flush``.

    When a write fails (disk full, database locked by another process), the batch goes back to
    the front of the queue and is retried after ``flush_interval``; the exception is kept and
    raised, as itself, by the next ``flush()`` or ``close()``. While failures last the queue is
    capped at ``max_backlog`` rows: beyond that the oldest rows are dropped and counted in
    ``dropped``, so a dead disk cannot eat the machine's memory.

    All methods may be called from any thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 0.5,
        max_pending: int = 1000,
        busy_timeout: float = 5.0,
        max_backlog: int = 1_000_000,
    ) -> None:
        """Open the store (in the writer thread) and start it.

        Raises whatever opening the database raises (for example ``sqlite3.OperationalError``
        when the directory does not exist), here on the caller's thread.
        """
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_backlog = max_backlog
        self.dropped = 0
        """Rows given up after failed writes (see the class docstring)."""
        self._busy_timeout = busy_timeout
        self._cond = threading.Condition()
        self._ops: collections.deque[tuple] = collections.deque()
        self._rows = 0  # rows waiting in _ops
        self._submitted = 0  # ops submitted so far (a sequence number)
        self._written = 0  # ops committed so far
        self._flush_waiters = 0
        self._retry_at = 0.0
        self._error: BaseException | None = None
        self._closed = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"store-writer:{self.path.parent.name}", daemon=True
        )
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    @property
    def closed(self) -> bool:
        return self._closed

    # -- submitting (never blocks on I/O) ---------------------------------------------------

    def _submit(self, op: tuple, rows: int) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"StoreWriter for {self.path} is closed")
            self._ops.append(op)
            self._rows += rows
            self._submitted += 1
            # Wake the thread when the queue stops being empty (it then sleeps until the next
            # flush is due) and when a batch is full; other submits touch nothing but the deque.
            if len(self._ops) == 1 or self._rows >= self.max_pending:
                self._cond.notify_all()

    def submit_scalars(
        self, step: int, epoch: float, wall: float, values: Mapping[str, float]
    ) -> None:
        """Queue one step's values (copied, so the caller may reuse its dict)."""
        vals = {str(k): float(v) for k, v in values.items()}
        self._submit((_SCALARS, int(step), float(epoch), float(wall), vals), len(vals))

    def submit_event(
        self, kind: str, payload: Mapping[str, Any], *, step: int, wall: float
    ) -> None:
        """Queue an event; the payload is serialised now, so a bad payload raises here."""
        text = json.dumps(payload, default=_json_default)
        self._submit((_EVENT, str(kind), text, int(step), float(wall)), 1)

    def submit_checkpoint(self, rec: CheckpointRecord) -> None:
        if not isinstance(rec, CheckpointRecord):
            raise TypeError(
                f"submit_checkpoint: expected a CheckpointRecord, got {type(rec).__name__}"
            )
        self._submit((_CHECKPOINT, rec), 1)

    def submit_delete_checkpoint(self, name: str) -> None:
        self._submit((_DELETE_CHECKPOINT, str(name)), 1)

    def submit_truncate(self, step: int) -> None:
        """Queue ``truncate_after(step)``; it applies after everything submitted before it."""
        self._submit((_TRUNCATE, int(step)), 1)

    def submit_meta(self, key: str, value: str) -> None:
        self._submit((_META, str(key), str(value)), 1)

    # -- waiting ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything submitted before this call is committed to the database.

        Raises:
            The exception a write in the writer thread raised since the last ``flush``/``close``
            (the rows stay queued and are retried).
            TimeoutError: not everything was written within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while True:
                    self._raise_error()
                    if self._written >= target:
                        break
                    if not self._thread.is_alive():
                        if self._closed:
                            break  # close() already reported what was not written
                        raise RuntimeError(
                            f"{self.path}: the store writer thread has stopped; "
                            f"{self._submitted - self._written} writes were not made"
                        )
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(
                            f"{self.path}: {self._submitted - self._written} store writes still "
                            f"pending after {timeout} s"
                        )
                    self._cond.wait(left)
            finally:
                self._flush_waiters -= 1

    def _raise_error(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, stop the thread and close the database.

        A second call does nothing. Raises the writer thread's pending error, if any (including a
        failure of this final write, after which the unwritten rows are counted in ``dropped``).
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._raise_error()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = RunStore.open(self.path, busy_timeout=self._busy_timeout)
        except BaseException as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop(store)
        except BaseException as exc:  # a bug here must not be silent either
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()
        finally:
            with contextlib.suppress(sqlite3.Error):
                store.close()

    def _loop(self, store: RunStore) -> None:
        next_due = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                while True:
                    final = self._closed
                    if final:
                        break
                    now = time.monotonic()
                    if self._ops:
                        urgent = self._rows >= self.max_pending or self._flush_waiters > 0
                        wake = self._retry_at if urgent else max(self._retry_at, next_due)
                        if now >= wake:
                            break
                        self._cond.wait(wake - now)
                    else:
                        self._cond.wait()
                ops = list(self._ops)
                rows = self._rows
                upto = self._submitted
                self._ops.clear()
                self._rows = 0
            error = self._write(store, ops) if ops else None
            with self._cond:
                if error is None:
                    self._written = upto
                else:
                    self._error = self._error or error
                    if final:
                        self.dropped += rows
                        if hasattr(error, "add_note"):
                            error.add_note(
                                f"podium: {rows} metric rows were not written to {self.path}"
                            )
                    else:
                        self._requeue(ops, rows)
                self._cond.notify_all()
            if final:
                return
            next_due = time.monotonic() + self.flush_interval

    def _requeue(self, ops: list[tuple], rows: int) -> None:
        """Put a failed batch back in front of newer ops; cap the backlog. Holds the lock."""
        self._ops.extendleft(reversed(ops))
        self._rows += rows
        self._retry_at = time.monotonic() + self.flush_interval
        while self._rows > self.max_backlog and self._ops:
            op = self._ops.popleft()
            n = len(op[4]) if op[0] == _SCALARS else 1
            self._rows -= n
            self.dropped += n

    def _write(self, store: RunStore, ops: Sequence[tuple]) -> BaseException | None:
        try:
            with store.batch():
                for op in ops:
                    kind = op[0]
                    if kind == _SCALARS:
                        store.add_scalars(op[1], op[2], op[3], op[4])
                    elif kind == _EVENT:
                        store.add_event(op[1], op[2], step=op[3], wall=op[4])
                    elif kind == _CHECKPOINT:
                        store.upsert_checkpoint(op[1])
                    elif kind == _DELETE_CHECKPOINT:
                        store.delete_checkpoint(op[1])
                    elif kind == _TRUNCATE:
                        store.truncate_after(op[1])
                    elif kind == _META:
                        store.meta_set(op[1], op[2])
                store.flush()
        except Exception as exc:
            store._buffer.clear()  # the ops are requeued; their buffered copies must not linger
            return exc
        return None
