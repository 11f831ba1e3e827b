"""The writing side of a run's store: ``RunStore``, a ``RunReader`` that also writes.

Scalars are buffered by ``add_scalars`` and written, with their rollups (``rollups.py``), by
``flush`` in one transaction; events, checkpoints, meta and matrices are written at once. Several
writes share one transaction inside ``batch()``, which is how ``StoreWriter`` commits a batch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import operator
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from podium.engine.metrics import Matrix
from podium.engine.store.reader import CheckpointRecord, RunReader
from podium.engine.store.rollups import (
    _ROLLUP_SHIFTS,
    _aggregate,
    _aggregate_batch,
    _Block,
    _combine,
    _merge_into,
    _runs,
)
from podium.engine.store.schema import (
    _MATRICES_SCHEMA,
    _ROLLUP_SCHEMA,
    _SCHEMA,
    SCHEMA_VERSION,
)

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


class RunStore(RunReader):
    """One connection to a run's metrics database, writable unless opened ``readonly``. Use from
    the thread that opened it."""

    def __init__(self, con: sqlite3.Connection, path: Path, readonly: bool) -> None:
        super().__init__(con, path, readonly)
        self._buffer: list[tuple[int, float, float, Mapping[str, float]]] = []
        self._tx_depth = 0
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
            return super().open(path, busy_timeout=busy_timeout)
        con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        return cls._start(con, path, False, busy_timeout)

    def _prepare(self) -> None:
        if self.readonly:
            super()._prepare()
            return
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")
        self._create_schema()

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
            else:
                # Migrations, in the same transaction as the version bump, so readers see the old
                # version or a complete new one.
                if version < 2:
                    # One pass over each series' rows (~2 s per million rows here).
                    self._con.execute(_ROLLUP_SCHEMA)
                    for (sid,) in self._con.execute("SELECT id FROM series").fetchall():
                        self._build_rollups(sid)
                if version < 3:
                    self._con.execute(_MATRICES_SCHEMA)
            if version < SCHEMA_VERSION:
                self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True
        self._rollups = True
        self._matrices = True

    def close(self) -> None:
        """Write what is buffered and close the connection; a second call does nothing."""
        if self._con is None:
            return
        try:
            if not self.readonly:
                self.flush()
        finally:
            super().close()

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
        if create and name not in self._series_ids:
            self._con.execute("INSERT OR IGNORE INTO series(name) VALUES (?)", (name,))
        return super()._series_id(name)

    def truncate_after(self, step: int) -> None:
        """Delete scalars, events and matrices after ``step`` (a run resuming
        from a checkpoint at ``step``).

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
            con.execute("DELETE FROM matrices WHERE step > ?", (step,))

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

    # -- meta ------------------------------------------------------------------------------

    def meta_set(self, key: str, value: str) -> None:
        """Store a small string (run-level facts such as the profile hash)."""
        with self._tx():
            self._con.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value))
            )

    # -- matrices --------------------------------------------------------------------------

    def add_matrices(self, step: int, wall: float, matrices: Mapping[str, Matrix]) -> None:
        """Store one step's matrices (name -> ``Matrix``) now, one row per name; a name already
        stored at ``step`` is replaced.

        Values are stored as ``Matrix.to_dict`` gives them, so non-finite ones read back as NaN.

        Raises:
            TypeError: a value is not a ``Matrix`` (nothing is written).
        """
        rows = [(str(name), _matrix_json(m)) for name, m in matrices.items()]
        self._insert_matrices(int(step), float(wall), rows)

    def _insert_matrices(self, step: int, wall: float, rows: Sequence[tuple[str, str]]) -> None:
        """``add_matrices`` of already serialised ``(name, json)`` rows (``StoreWriter``'s)."""
        with self._tx():
            self._con.executemany(
                "INSERT OR REPLACE INTO matrices(name, step, wall, data) VALUES (?, ?, ?, ?)",
                [(name, step, wall, data) for name, data in rows],
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"event payload: {type(obj).__name__} is not JSON serialisable")


def _matrix_json(matrix: Any) -> str:
    """A matrix's stored JSON; raises TypeError for anything but a ``Matrix`` of numbers."""
    if not isinstance(matrix, Matrix):
        raise TypeError(f"matrix: expected a Matrix, got {type(matrix).__name__}")
    return json.dumps(matrix.to_dict(), allow_nan=False)
