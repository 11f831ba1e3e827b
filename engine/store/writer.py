"""``StoreWriter``: the trainer's non-blocking way into a run's store, a queue and a thread.

Every ``submit_*`` call validates and converts on the caller's thread, appends to an in-memory
queue and returns at once; a daemon thread with its own ``RunStore`` writes the queue in batches,
one transaction each. ``flush`` waits until everything submitted so far is committed; errors in
the thread are re-raised there.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from podium.engine.metrics import Matrix
from podium.engine.store.reader import CheckpointRecord
from podium.engine.store.runstore import RunStore, _json_default, _matrix_json

# Queue entries: (op, *args). Submitting validates and converts on the caller's thread, so
# the writer thread only ever fails on database/disk errors, which are worth retrying.
_SCALARS, _EVENT, _CHECKPOINT, _DELETE_CHECKPOINT, _TRUNCATE, _META, _MATRICES = range(7)


def _op_rows(op: tuple) -> int:
    """How many rows a queue entry counts for (``max_pending``, ``max_backlog``, ``dropped``)."""
    if op[0] == _SCALARS:
        return len(op[4])
    if op[0] == _MATRICES:
        return len(op[3])
    return 1


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

    def submit_matrices(self, step: int, wall: float, matrices: Mapping[str, Matrix]) -> None:
        """Queue one step's matrices (name -> ``Matrix``); they are serialised now, so anything
        but a ``Matrix`` raises TypeError here. One row per matrix, as ``RunStore.add_matrices``."""
        rows = [(str(k), _matrix_json(m)) for k, m in matrices.items()]
        self._submit((_MATRICES, int(step), float(wall), rows), len(rows))

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
            n = _op_rows(op)
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
                    elif kind == _MATRICES:
                        store._insert_matrices(op[1], op[2], op[3])
                store.flush()
        except Exception as exc:
            store._buffer.clear()  # the ops are requeued; their buffered copies must not linger
            return exc
        return None
