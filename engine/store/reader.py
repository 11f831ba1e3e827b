"""The read side of a run's store: ``RunReader``, one read-only connection, and the row types.

``RunStore`` (the writing side, ``runstore.py``) subclasses it, so a writable store reads the same
way. Readers never block the writer (WAL) and follow a file whose writer is still creating it or
migrating it: a file without a schema yet reads as empty, one from before the rollups is
downsampled from the raw rows, one from before the matrices has none. A damaged file (SQLite's
``SQLITE_CORRUPT``/``SQLITE_NOTADB``, whichever call first meets it) raises ``StoreDamaged``, one
line naming the file and what to do, instead of a bare ``sqlite3.DatabaseError``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from podium.engine import series as series_names
from podium.engine.errors import RunError
from podium.engine.metrics import Matrix
from podium.engine.store.health import StoreDamaged, connect_ro, is_damage
from podium.engine.store.rollups import _ROLLUP_SHIFTS, _cover
from podium.engine.store.schema import SCHEMA_VERSION

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


class ScalarRow(NamedTuple):
    """One stored point with everything the store keeps of it (``podium export``'s rows)."""

    series: str
    step: int
    epoch: float | None
    """None in a row written without one."""
    wall: float | None
    """Unix time it was logged; None in a row written without one."""
    value: float
    """NaN where a NaN (stored as NULL) was logged."""


def _value(v: float | None) -> float:
    return _NAN if v is None else v


_R = TypeVar("_R", bound="RunReader")
_F = TypeVar("_F", bound=Callable[..., Any])


def _reports_damage(method: _F) -> _F:
    """``method`` with SQLite's "the file is broken" errors raised as ``StoreDamaged``."""

    @functools.wraps(method)
    def wrapper(self: RunReader, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StoreDamaged(self.path, str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]


class RunReader:
    """One read-only connection to a run's metrics database. Use from the thread that opened it."""

    def __init__(self, con: sqlite3.Connection, path: Path, readonly: bool = True) -> None:
        self._con = con
        self.path = path
        self.readonly = readonly
        self._series_ids: dict[str, int] = {}
        self._ready = not readonly  # a reader may open the file before the schema is committed
        self._rollups = not readonly  # False: a version-1 file, downsample from the raw rows
        self._matrices = not readonly  # False: a file from before the matrices table

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls: type[_R], path: Path, *, busy_timeout: float = 5.0) -> _R:
        """Open the store at ``path`` read-only (dashboard, CLI). Never blocks a writer.

        Args:
            path: the ``metrics.db`` file; it must exist.
            busy_timeout: seconds to wait for a lock held by another connection before failing.

        Raises:
            FileNotFoundError: there is no such file.
            RunError: the file was written by a newer podium (its schema version is higher).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no metrics store")
        try:
            con = connect_ro(path, timeout=busy_timeout)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StoreDamaged(path, str(exc)) from None
            raise
        return cls._start(con, path, True, busy_timeout)

    @classmethod
    def _start(
        cls: type[_R], con: sqlite3.Connection, path: Path, readonly: bool, busy_timeout: float
    ) -> _R:
        """The store on the new connection ``con``, ready (``_prepare``); closes ``con`` on error."""
        try:
            con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            store = cls(con, path, readonly)
            store._prepare()
        except BaseException as exc:
            con.close()
            if is_damage(exc):
                raise StoreDamaged(path, str(exc)) from None
            raise
        return store

    def _prepare(self) -> None:
        self._check_version()

    def _check_version(self) -> int:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunError(
                f"{self.path}: metrics store schema version {version} is newer than this podium "
                f"reads ({SCHEMA_VERSION}); upgrade podium to open this run"
            )
        self._ready = version >= 1
        self._rollups = version >= 2
        self._matrices = version >= 3
        return version

    def _is_ready(self) -> bool:
        """Readers: has the writer committed the schema yet? (Checked until it has.)"""
        return self._ready or self._check_version() >= 1

    def _has_matrices(self) -> bool:
        """Readers: does the file have the matrices table yet? (Checked until it has.)"""
        return self._matrices or self._check_version() >= 3

    def close(self) -> None:
        """Close the connection; a second call does nothing."""
        if self._con is None:
            return
        self._con.close()
        self._con = None  # type: ignore[assignment]

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scalars ---------------------------------------------------------------------------

    def _series_id(self, name: str) -> int | None:
        sid = self._series_ids.get(name)
        if sid is not None:
            return sid
        row = self._con.execute("SELECT id FROM series WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        self._series_ids[name] = row[0]
        return row[0]

    @_reports_damage
    def series_names(self) -> list[str]:
        """Every series with at least a name stored, sorted by name."""
        if not self._is_ready():
            return []
        return [r[0] for r in self._con.execute("SELECT name FROM series ORDER BY name")]

    @_reports_damage
    def last(self, series: str) -> tuple[int, float] | None:
        """The (step, value) of the highest step stored for ``series``, or None."""
        if not self._is_ready() or (sid := self._series_id(series)) is None:
            return None
        row = self._con.execute(
            "SELECT step, value FROM scalars WHERE series_id = ? ORDER BY step DESC LIMIT 1",
            (sid,),
        ).fetchone()
        return None if row is None else (row[0], _value(row[1]))

    @_reports_damage
    def progress(self) -> tuple[int | None, float | None]:
        """(the last training step, the best finite validation loss): a run's line in
        ``podium runs`` and the home screen."""
        last = self.last(series_names.TRAIN_LOSS)
        vals = [v for _, v in self.query(series_names.VAL_LOSS) if math.isfinite(v)]
        return (None if last is None else int(last[0])), (min(vals) if vals else None)

    @_reports_damage
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

    @_reports_damage
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

    def rows(self) -> Iterator[ScalarRow]:
        """Every stored point of every series, series by series (in the order each was first
        written), steps ascending within one, with its epoch and wall time.

        One statement in primary-key order: it streams (a 10M-point run is never held in
        memory, and SQLite sorts nothing) and reads one snapshot while a writer goes on.

        Raises:
            StoreDamaged: the file is broken (possibly after some rows were yielded).
        """
        try:
            if not self._is_ready():
                return
            cursor = self._con.execute(
                "SELECT s.name, c.step, c.epoch, c.wall, c.value FROM scalars c "
                "JOIN series s ON s.id = c.series_id ORDER BY c.series_id, c.step"
            )
            for name, step, epoch, wall, value in cursor:
                yield ScalarRow(name, step, epoch, wall, _NAN if value is None else value)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StoreDamaged(self.path, str(exc)) from None
            raise

    # -- events ----------------------------------------------------------------------------

    @_reports_damage
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

    @_reports_damage
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

    @_reports_damage
    def meta_get(self, key: str, default: str | None = None) -> str | None:
        if not self._is_ready():
            return default
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    # -- matrices --------------------------------------------------------------------------

    @_reports_damage
    def matrix_names(self) -> list[str]:
        """Every matrix with at least one step stored, sorted by name."""
        if not self._has_matrices():  # also: no schema yet
            return []
        return [r[0] for r in self._con.execute("SELECT DISTINCT name FROM matrices ORDER BY name")]

    @_reports_damage
    def latest_matrix(self, name: str, end_step: int | None = None) -> tuple[int, Matrix] | None:
        """The (step, matrix) of ``name`` at the highest stored step (at most ``end_step``), or
        None when there is none."""
        if not self._has_matrices():  # also: no schema yet
            return None
        row = self._con.execute(
            "SELECT step, data FROM matrices WHERE name = ? AND step <= ? "
            "ORDER BY step DESC LIMIT 1",
            (name, 2**63 - 1 if end_step is None else int(end_step)),
        ).fetchone()
        return None if row is None else (row[0], _matrix(row[1]))

    @_reports_damage
    def matrices(self, name: str) -> list[tuple[int, Matrix]]:
        """Every stored (step, matrix) of ``name``, in step order (``[]`` for an unknown name)."""
        if not self._has_matrices():  # also: no schema yet
            return []
        rows = self._con.execute(
            "SELECT step, data FROM matrices WHERE name = ? ORDER BY step", (name,)
        )
        return [(step, _matrix(data)) for step, data in rows]


def _matrix(data: str) -> Matrix:
    return Matrix.from_dict(json.loads(data))
