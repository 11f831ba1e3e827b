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

Downsampled reads come from min/max rollups kept at write time (see ``_ROLLUP_SHIFTS`` for the
block sizes and why), so ``query(series, max_points=N)`` costs about the same on a 10k-point and a
10M-point series. Schema version 2 added them; a writable open of a version-1 file builds them
once (in the same transaction as the version bump), and a reader of a version-1 file falls back to
scanning the raw rows.

Timings (ingest rate, rollup against raw-row queries): ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import json
import math
import operator
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from engine.errors import RunError

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the schema this module writes; a newer file is refused.

1: scalars, events, checkpoints, meta. 2: adds the ``rollup`` table (migrated on writable open)."""

# Rollup levels: block sizes 16, 32, 64, ..., 32768 steps (level i holds blocks of 1 << shift[i]).
# Why these:
# - Ratio 2 between levels. A query picks the coarsest level whose blocks are no wider than a
#   bucket, so a bucket holds at most 2 rollup rows (ratio 4 would mean up to 4, and measured here
#   fetching a row into Python costs ~0.6 us and a GROUP BY sort ~0.4 us per row, so rows read is
#   the cost). The price is more levels to maintain (12), but rows are written once, when their
#   block closes (see ``RunStore._advance``): ~2 rows per 16 steps per series, all levels together.
# - Smallest 16: ranges with fewer than 16 steps per bucket are downsampled from the raw rows,
#   which costs ~0.2 us per row, so that fallback never reads more than 16 x buckets rows.
# - Largest 32768: keeps buckets at <= 2 rows up to 32768 x buckets steps (16M steps at
#   max_points=1000); longer series still read only 1/32768 of their rows per bucket.
# Rollup storage is ~1/8 of a row per stored point (~10 B/point against ~41 B for the raw row).
_ROLLUP_SHIFTS: tuple[int, ...] = tuple(range(4, 16))

ROLLUP_BLOCK_SIZES: tuple[int, ...] = tuple(1 << s for s in _ROLLUP_SHIFTS)
"""Block sizes (steps) of the rollup levels, finest first; level ``i`` has ``ROLLUP_BLOCK_SIZES[i]``.
Block ``b`` of a level covers steps ``[b * size, (b + 1) * size - 1]``."""

# One row per closed (series, level, block) holding at least one stored step, see
# ``RunStore._advance`` for why only closed ones (those that end at or before the series' last
# stored step; the open ones, one per level, live in the writer's memory). Each row: the count, its
# first and last stored steps, and its min and max points (step, value, wall). NaN is stored as
# NULL: min_* are all NULL when every value in the block is NaN; max_value NULL is a NaN max (NaN
# ranks as +inf, ties go to the earliest step, as in the raw-row downsampling).
_ROLLUP_SCHEMA = """CREATE TABLE rollup(
    series_id INTEGER NOT NULL,
    level INTEGER NOT NULL,
    block INTEGER NOT NULL,
    n INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    min_step INTEGER,
    min_value REAL,
    min_wall REAL,
    max_step INTEGER NOT NULL,
    max_value REAL,
    max_wall REAL,
    PRIMARY KEY (series_id, level, block)
) WITHOUT ROWID"""

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
    _ROLLUP_SCHEMA,
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

# A range's count (up to :n), first and last step, in one statement.
_RANGE = """SELECT
(SELECT count(*) FROM (SELECT 1 FROM scalars
                       WHERE series_id = :sid AND step BETWEEN :a AND :b LIMIT :n)),
(SELECT step FROM scalars WHERE series_id = :sid AND step BETWEEN :a AND :b ORDER BY step LIMIT 1),
(SELECT step FROM scalars WHERE series_id = :sid AND step BETWEEN :a AND :b
 ORDER BY step DESC LIMIT 1)"""

_NAN = float("nan")
_END = (float("inf"),)  # a sentinel piece after every real one (see _query_rollups)
_INF = float("inf")
_SERIES_ID = operator.itemgetter(0)

_ROLLUP_COLS = (
    "series_id, level, block, n, first_step, last_step, "
    "min_step, min_value, min_wall, max_step, max_value, max_wall"
)
_ROLLUP_REPLACE = (
    f"INSERT OR REPLACE INTO rollup({_ROLLUP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BLOCK_COLS = _ROLLUP_COLS.removeprefix("series_id, level, ")

# A rollup block in memory: [block, n, first_step, last_step, min_step, min_value, min_wall,
# max_step, max_value, max_wall], the rollup row without (series_id, level). Values: None = NaN.
_Block = list


def _aggregate(points: Iterable[Sequence[Any]], shift: int) -> list[_Block] | None:
    """Blocks of ``1 << shift`` steps from ``(step, value, wall, ...)`` points in step order.

    Returns None when the steps are not strictly increasing (the caller then rebuilds from the
    stored rows, where INSERT OR REPLACE has already settled which value a repeated step keeps).
    """
    out: list[_Block] = []
    blk: _Block = [None]
    last = -_INF
    for step, v, wall, *_ in points:
        if step <= last:
            return None
        last = step
        b = step >> shift
        if b != blk[0]:
            if v is None:
                blk = [b, 1, step, step, None, None, None, step, None, wall]
            else:
                blk = [b, 1, step, step, step, v, wall, step, v, wall]
            out.append(blk)
            continue
        blk[1] += 1
        blk[3] = step
        if v is None:  # NaN: ranks as +inf on the max side, the earliest of a tie stays
            mx = blk[8]
            if mx is not None and mx < _INF:
                blk[7], blk[8], blk[9] = step, None, wall
        else:
            mn = blk[5]
            if mn is None or v < mn:
                blk[4], blk[5], blk[6] = step, v, wall
            mx = blk[8]
            if mx is not None and v > mx:
                blk[7], blk[8], blk[9] = step, v, wall
    return out


def _aggregate_batch(
    rows: Sequence[tuple[int, int, float, float, float]], shift: int
) -> list[_Block] | None:
    """``_aggregate`` for one series' ``(series_id, step, epoch, wall, value)`` rows of a flush,
    about 4x faster: min()/max()/index() per block run in C instead of a Python loop per point.
    Returns None when the steps are not strictly increasing."""
    steps = [r[1] for r in rows]
    if len(set(steps)) != len(steps) or steps != sorted(steps):
        return None
    values = [r[4] for r in rows]
    out: list[_Block] = []
    i, n = 0, len(steps)
    while i < n:
        b = steps[i] >> shift
        j = bisect.bisect_left(steps, (b + 1) << shift, i)
        seg = values[i:j]
        total = sum(seg)
        if total != total:  # a NaN (or +inf and -inf): NaN ranks apart, take the slow loop
            pts = [(s, None if v != v else v, w) for _, s, _, w, v in rows[i:j]]
            out += _aggregate(pts, shift) or []
        else:
            # min()/max() return the first of equal items and index() finds the first equal
            # one: the earliest step wins a tie, as everywhere else.
            lo, hi = min(seg), max(seg)
            k, m = i + seg.index(lo), i + seg.index(hi)
            # fmt: off
            out.append([b, j - i, steps[i], steps[j - 1],
                        steps[k], lo, rows[k][3], steps[m], hi, rows[m][3]])
            # fmt: on
        i = j
    return out


def _merge_into(p: _Block, c: Sequence[Any]) -> None:
    """Fold block ``c``, whose steps all come after ``p``'s, into ``p`` (ties keep ``p``'s)."""
    p[1] += c[1]
    p[3] = c[3]
    mn = c[5]
    if mn is not None and (p[5] is None or mn < p[5]):
        p[4:7] = c[4:7]
    mx, pmx = c[8], p[8]
    if pmx is not None and (pmx < _INF if mx is None else mx > pmx):
        p[7:10] = c[7:10]


def _combine(children: Iterable[Sequence[Any]], d: int) -> list[_Block]:
    """Parent blocks (``2**d`` children each) from child blocks in block order."""
    out: list[_Block] = []
    p: _Block = [None]
    for c in children:
        b = c[0] >> d
        if b != p[0]:
            p = [b, *c[1:]]
            out.append(p)
        else:
            _merge_into(p, c)
    return out


def _runs(blocks: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in a sorted sequence."""
    i = 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        yield blocks[i], blocks[j]
        i = j + 1


def _cover(lo: int, hi: int, top: int) -> list[tuple[int, int, int]]:
    """Cut steps ``[lo, hi]`` into aligned rollup blocks no coarser than level ``top``.

    Returns ``(level, first_block, last_block)`` runs in step order; level -1 means raw steps
    ``first..last`` (fewer than the smallest block, at the two ends only). Each piece is the
    largest aligned block that fits, so the ends cost at most one block per level, which is what
    makes a window's edges exact at a cost independent of its length.
    """
    out: list[tuple[int, int, int]] = []
    s = lo
    while s <= hi:
        for lv in range(top, -1, -1):
            shift = _ROLLUP_SHIFTS[lv]
            if s & ((1 << shift) - 1) == 0 and s + (1 << shift) - 1 <= hi:
                first = s >> shift
                count = (hi + 1 - s) >> shift if lv == top else 1
                out.append((lv, first, first + count - 1))
                s += count << shift
                break
        else:
            end = min(hi, s | ((1 << _ROLLUP_SHIFTS[0]) - 1))
            out.append((-1, s, end))
            s = end + 1
    return out


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
        self._rollups = not readonly  # False: a version-1 file, downsample from the raw rows
        # Writer only: per series, (last stored step, the open block of each level), see flush.
        self._tails: dict[int, tuple[int, list[_Block]]] = {}
        self._data_version: int | None = None  # PRAGMA data_version when _tails was right

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
        self._rollups = version >= 2
        return version

    def _create_schema(self) -> None:
        with self._tx():
            version = self._check_version()
            if version == 0:
                for statement in _SCHEMA:
                    self._con.execute(statement)
                self._con.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('created', ?)",
                    (repr(time.time()),),
                )
            elif version == 1:
                # Migration: one pass over each series' rows (~2 s per million rows here). In the
                # same transaction as the version bump, so readers see v1 or a complete v2.
                self._con.execute(_ROLLUP_SCHEMA)
                for (sid,) in self._con.execute("SELECT id FROM series").fetchall():
                    self._build_rollups(sid)
            if version < SCHEMA_VERSION:
                self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True
        self._rollups = True

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
            self._tails.clear()  # and the open rollup blocks may hold rolled-back points
            raise
        self._tx_depth = 0
        try:
            self._con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._con.execute("ROLLBACK")
            self._series_ids.clear()
            self._tails.clear()
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
        """Write the buffered scalars and their rollups in one transaction.

        On failure the buffer is kept (and nothing of it is written).
        """
        if not self._buffer:
            return
        with self._tx():
            ids = self._series_ids
            rows = []
            for step, epoch, wall, values in self._buffer:
                step = int(step)
                for name, value in values.items():
                    sid = ids.get(name)
                    if sid is None:
                        sid = self._series_id(name, create=True)
                    # sqlite3 binds NaN as NULL itself; read back as NaN.
                    rows.append((sid, step, epoch, wall, float(value)))
            # Grouped by series, each in submission order (the sort is stable), so a step
            # logged twice still ends with its last value. (sid, step, epoch, wall, value) rows.
            rows.sort(key=_SERIES_ID)
            per_series = {sid: list(g) for sid, g in itertools.groupby(rows, _SERIES_ID)}
            con = self._con
            version = con.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection wrote since our last flush
                self._tails.clear()
                self._data_version = version
            closed: list[tuple] = []
            rebuild: dict[int, set[int]] = {}
            for sid, pts in per_series.items():
                known = self._tails.get(sid)
                if known is None:
                    last = con.execute(
                        "SELECT max(step) FROM scalars WHERE series_id = ?", (sid,)
                    ).fetchone()[0]
                    tails = None if last is None else self._load_tails(sid, last)
                else:
                    last, tails = known
                # The common case, appending after the last stored step, extends the open
                # blocks in memory. Anything else (a step logged again, steps out of order)
                # rebuilds the touched blocks from the stored rows after the insert, so a
                # replaced value can never leave a stale min or max behind.
                new = None
                if last is None or pts[0][1] > last:
                    new = _aggregate_batch(pts, _ROLLUP_SHIFTS[0])
                if new is not None:
                    closed += self._advance(sid, last, tails, new, pts[-1][1])
                    continue
                dirty = rebuild[sid] = {p[1] >> _ROLLUP_SHIFTS[0] for p in pts}
                if last is not None:
                    dirty.add(last >> _ROLLUP_SHIFTS[0])  # the blocks that were open
            con.executemany(
                "INSERT OR REPLACE INTO scalars(series_id, step, epoch, wall, value) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            con.executemany(_ROLLUP_REPLACE, closed)
            for sid, dirty in rebuild.items():
                self._rebuild_rollups(sid, dirty)
        self._buffer.clear()

    # Rollup rows are written when their block closes: once the series has a step at or after
    # the block's last step (its end), nothing appended can change it. Open blocks (end after the
    # last stored step: one per level, the ones holding that step) stay in memory, in _tails,
    # and a query never needs them, because it only reads blocks that end at or before the last
    # point of its range (``_cover``). Upserting the open blocks on every batch instead dirtied a
    # page per level per series in every commit: measured, ingest fell to ~2.2x below the
    # raw-only rate, against ~1.5x this way.

    def _advance(
        self,
        sid: int,
        last: int | None,
        tails: list[_Block] | None,
        new: list[_Block],
        new_last: int,
    ) -> list[tuple]:
        """Fold appended level-0 blocks ``new`` into the open blocks ``tails`` of series ``sid``
        (whose last step was ``last``); returns the rollup rows that closed (``last`` < end <=
        ``new_last``). Updates ``_tails``."""
        old_last = -_INF if last is None else last
        rows: list[tuple] = []
        opened: list[_Block] = []
        for lv, shift in enumerate(_ROLLUP_SHIFTS):
            if lv:
                new = _combine(new, shift - _ROLLUP_SHIFTS[lv - 1])
            full = new
            if tails is not None:
                t = tails[lv]
                if t[0] == new[0][0]:
                    t = list(t)
                    _merge_into(t, new[0])
                    full = [t, *new[1:]]
                else:
                    full = [t, *new]
            for b in full:
                end = ((b[0] + 1) << shift) - 1
                if old_last < end <= new_last:
                    rows.append((sid, lv, *b))
            opened.append(full[-1])
        self._tails[sid] = (new_last, opened)
        return rows

    def _load_tails(self, sid: int, last: int) -> list[_Block]:
        """The blocks holding step ``last`` at each level, from the raw rows of the smallest one
        and the closed (so stored) blocks before it in each parent."""
        con = self._con
        shift = _ROLLUP_SHIFTS[0]
        src = con.execute(
            "SELECT step, value, wall FROM scalars WHERE series_id = ? AND step BETWEEN ? AND ? "
            "ORDER BY step",
            (sid, (last >> shift) << shift, last),
        )
        t = (_aggregate(src, shift) or [])[0]
        tails = [t]
        for lv in range(1, len(_ROLLUP_SHIFTS)):
            d = _ROLLUP_SHIFTS[lv] - _ROLLUP_SHIFTS[lv - 1]
            before = con.execute(
                f"SELECT {_BLOCK_COLS} FROM rollup WHERE series_id = ? AND level = ? "
                "AND block BETWEEN ? AND ? ORDER BY block",
                (sid, lv - 1, (t[0] >> d) << d, t[0] - 1),
            ).fetchall()
            t = _combine([*before, t], d)[0]
            tails.append(t)
        return tails

    def _rebuild_rollups(self, sid: int, dirty: Iterable[int]) -> None:
        """Recompute the smallest-level blocks ``dirty`` from the stored rows, then their
        parents at every level from the level below; closed blocks are written, open or empty
        ones deleted. In the caller's transaction."""
        con = self._con
        self._tails.pop(sid, None)
        last = con.execute("SELECT max(step) FROM scalars WHERE series_id = ?", (sid,))
        last = last.fetchone()[0]
        if last is None:
            last = -_INF
        blocks = sorted(set(dirty))
        for lv, shift in enumerate(_ROLLUP_SHIFTS):
            d = shift - _ROLLUP_SHIFTS[lv - 1] if lv else 0
            if lv:
                blocks = sorted({b >> d for b in blocks})
            for b0, b1 in _runs(blocks):
                if lv == 0:
                    src = con.execute(
                        "SELECT step, value, wall FROM scalars WHERE series_id = ? "
                        "AND step BETWEEN ? AND ? ORDER BY step",
                        (sid, b0 << shift, ((b1 + 1) << shift) - 1),
                    )
                    new = _aggregate(src, shift) or []
                else:
                    src = con.execute(
                        f"SELECT {_BLOCK_COLS} FROM rollup WHERE series_id = ? AND level = ? "
                        "AND block BETWEEN ? AND ? ORDER BY block",
                        (sid, lv - 1, b0 << d, ((b1 + 1) << d) - 1),
                    )
                    new = _combine(src, d)
                con.execute(
                    "DELETE FROM rollup WHERE series_id = ? AND level = ? AND block BETWEEN ? AND ?",
                    (sid, lv, b0, b1),
                )
                con.executemany(
                    _ROLLUP_REPLACE,
                    [(sid, lv, *b) for b in new if ((b[0] + 1) << shift) - 1 <= last],
                )

    def _build_rollups(self, sid: int) -> None:
        """Every closed rollup block of a series that has none yet (the version-1 migration)."""
        con = self._con
        src = con.execute(
            "SELECT step, value, wall FROM scalars WHERE series_id = ? ORDER BY step", (sid,)
        )
        blocks = _aggregate(src, _ROLLUP_SHIFTS[0]) or []
        if not blocks:
            return
        last = blocks[-1][3]
        for lv, shift in enumerate(_ROLLUP_SHIFTS):
            if lv:
                blocks = _combine(blocks, shift - _ROLLUP_SHIFTS[lv - 1])
            con.executemany(
                _ROLLUP_REPLACE,
                [(sid, lv, *b) for b in blocks if ((b[0] + 1) << shift) - 1 <= last],
            )

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
                this, it is cut into ``max_points // 2`` buckets of about equal step width and
                each bucket keeps its minimum and its maximum point: stored points, never
                averages (NaN counts as the maximum; a tie keeps the earliest step).
            start_step, end_step: inclusive step bounds (None = open).
            x: ``"step"`` gives (step, value) pairs, ``"wall"`` gives (wall time, value) pairs of
                the same points.

        Returns:
            ``[(x, value), ...]`` sorted by step; stored NULLs come back as NaN.

        Buckets: the range runs from the first to the last stored step inside the bounds. It is
        read from the rollups of the coarsest level whose blocks are no wider than a bucket
        (with finer blocks, and at most 15 raw rows, at the two ends, so the bounds are exact),
        and each block joins the bucket its first stored step falls in. Bucket edges therefore
        sit on block edges: a bucket spans less than two bucket widths and its min and max are
        exact. The cost is about ``max_points`` rollup rows whatever the length of the range.
        When a bucket would be narrower than the smallest block (``ROLLUP_BLOCK_SIZES[0]``
        steps), or the file is a version-1 store opened read-only, the buckets are exactly
        equal-width and are computed from the raw rows.
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
                n, lo, hi = con.execute(
                    _RANGE, {"sid": sid, "a": lo_bound, "b": hi_bound, "n": max_points + 1}
                ).fetchone()
            if max_points is None or n <= max_points:
                rows = con.execute(
                    f"SELECT {x}, value FROM scalars WHERE series_id = ? "
                    "AND step BETWEEN ? AND ? ORDER BY step",
                    (sid, lo_bound, hi_bound),
                ).fetchall()
                return [(a, _NAN if v is None else v) for a, v in rows]
            nb, span = max_points // 2, hi - lo + 1
            if not self._rollups:
                self._check_version()  # a reader of a file migrated since it last looked
            top = -1
            if self._rollups:
                for lv, shift in enumerate(_ROLLUP_SHIFTS):
                    if nb << shift <= span:
                        top = lv
            if top >= 0:
                return self._query_rollups(sid, lo, hi, nb, top, x)
            params = {"sid": sid, "lo": lo, "span": span, "nb": nb}
            rows = con.execute(_BUCKETED.format(x=x), params).fetchall()
            return [(a, _NAN if v is None else v) for a, v in rows]
        finally:
            if own_tx:
                con.execute("COMMIT")

    def _query_rollups(
        self, sid: int, lo: int, hi: int, nb: int, top: int, x: str
    ) -> list[tuple[float, float]]:
        """Min/max of ``nb`` buckets over steps ``[lo, hi]`` from the rollups (see ``query``).

        Reading the rows is most of the cost (~1 us per row here), so this reads the fewest:
        one range of level ``top`` plus one UNION ALL for the pieces at the two ends, and only
        the columns ``x`` needs.
        """
        wall = x == "wall"
        # Pieces: (first_step, min_step, min_value, max_step, max_value[, min_wall, max_wall]),
        # rollup rows, or raw rows at the ragged ends shaped like one-point blocks.
        cols = "first_step, min_step, min_value, max_step, max_value" + (
            ", min_wall, max_wall" if wall else ""
        )
        raw = "step, CASE WHEN value IS NULL THEN NULL ELSE step END, value, step, value" + (
            ", wall, wall" if wall else ""
        )
        con = self._con
        main: list[tuple] = []
        ends: list[str] = []
        args: list[int] = []
        for lv, a, b in _cover(lo, hi, top):
            if lv == top:
                main = con.execute(
                    f"SELECT {cols} FROM rollup WHERE series_id = ? AND level = ? "
                    "AND block BETWEEN ? AND ? ORDER BY block",
                    (sid, lv, a, b),
                ).fetchall()
            elif lv >= 0:  # below the top level, _cover gives one block at a time
                ends.append(
                    f"SELECT {cols} FROM rollup WHERE series_id = ? AND level = ? AND block = ?"
                )
                args += (sid, lv, a)
            else:
                ends.append(
                    f"SELECT {raw} FROM scalars WHERE series_id = ? AND step BETWEEN ? AND ?"
                )
                args += (sid, a, b)
        pieces = main
        if ends:
            extra = sorted(con.execute(" UNION ALL ".join(ends), args).fetchall())
            i = bisect.bisect_left(extra, (main[0][0],)) if main else len(extra)
            pieces = extra[:i] + main + extra[i:]
        out: list[tuple[float, float]] = []
        if not pieces:
            return out
        nxi, xxi = (5, 6) if wall else (1, 3)  # where the x of the min and of the max are
        span = hi - lo + 1
        lo_piece = hi_piece = pieces[0]
        # Bucket k holds the pieces whose first step f has (f - lo) * nb // span == k; the next
        # bucket starts at lo + ceil((k + 1) * span / nb).
        edge = lo - (-((pieces[0][0] - lo) * nb // span + 1) * span // nb)
        pieces.append(_END)  # closes the last bucket
        for p in itertools.islice(pieces, 1, None):
            if p[0] >= edge:  # a new bucket: write out the last one (inline: ~500 per query)
                v = hi_piece[4]
                mx = (hi_piece[xxi], _NAN if v is None else v)
                v, ns, xs = lo_piece[2], lo_piece[1], hi_piece[3]
                if v is None or ns == xs:
                    out.append(mx)
                elif ns < xs:
                    out += ((lo_piece[nxi], v), mx)
                else:
                    out += (mx, (lo_piece[nxi], v))
                if p is _END:
                    break
                lo_piece = hi_piece = p
                edge = lo - (-((p[0] - lo) * nb // span + 1) * span // nb)
                continue
            v = p[2]
            if v is not None:
                m = lo_piece[2]
                if m is None or v < m:
                    lo_piece = p
            m = hi_piece[4]
            if m is not None:
                v = p[4]
                if (m < _INF) if v is None else (v > m):  # NULL: NaN, ranks as +inf
                    hi_piece = p
        return out

    def query_many(self, names: Iterable[str], **kw: Any) -> dict[str, list[tuple[float, float]]]:
        """``query`` for several series with the same options, from one snapshot."""
        con = self._con
        own_tx = not con.in_transaction
        if own_tx:
            con.execute("BEGIN")
        try:
            return {name: self.query(name, **kw) for name in names}
        finally:
            if own_tx:
                con.execute("COMMIT")

    def truncate_after(self, step: int) -> None:
        """Delete scalars and events after ``step`` (a run resuming from a checkpoint at ``step``).

        Anything buffered is written first, so a truncate also applies to earlier ``add_scalars``.
        Rollup blocks wholly after ``step`` go; the blocks holding ``step`` are recomputed.
        """
        step = int(step)
        with self._tx():
            self.flush()
            con = self._con
            for (sid,) in con.execute("SELECT id FROM series").fetchall():
                last = con.execute(
                    "SELECT max(step) FROM scalars WHERE series_id = ?", (sid,)
                ).fetchone()[0]
                if last is None or last <= step:
                    continue
                # Per series, so each delete is a primary-key range instead of a full-table scan.
                con.execute("DELETE FROM scalars WHERE series_id = ? AND step > ?", (sid, step))
                con.executemany(
                    "DELETE FROM rollup WHERE series_id = ? AND level = ? AND block > ?",
                    [(sid, lv, step >> shift) for lv, shift in enumerate(_ROLLUP_SHIFTS)],
                )
                # The blocks holding ``step`` lost points; the ones holding the new last step
                # are open again (their rows go: the table holds closed blocks only).
                dirty = [step >> _ROLLUP_SHIFTS[0]]
                new_last = con.execute(
                    "SELECT max(step) FROM scalars WHERE series_id = ?", (sid,)
                ).fetchone()[0]
                if new_last is not None:
                    dirty.append(new_last >> _ROLLUP_SHIFTS[0])
                self._rebuild_rollups(sid, dirty)
            con.execute("DELETE FROM events WHERE step > ?", (step,))

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
