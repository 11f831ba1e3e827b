"""The per-run metrics store: one SQLite file, ``runs/<run-id>/metrics.db``, in WAL mode.

The training process writes scalars (one row per series per step), matrices (latest per step),
events and the checkpoint table; the dashboard (in another thread or another process, via
``podium attach``) and CLI commands (``podium metrics RUN --json``) read while it writes. WAL mode
is what makes that work: readers see the last committed transaction and never block the writer,
the writer never blocks readers. ``synchronous=NORMAL`` skips the fsync on every commit (a power
cut may lose the last fraction of a second of metrics, never corrupt the file), which is the right
trade for data that is rewritten every half second.

Three classes:

- ``RunReader`` (``reader.py``): one read-only SQLite connection (``file:...?mode=ro``) and every
  query: series, downsampled points, events, checkpoints, meta, matrices.
- ``RunStore`` (``runstore.py``): a ``RunReader`` that writes. Writable stores create the schema
  (and migrate an older one); ``RunStore.open(path, readonly=True)`` gives a read-only one.
  ``add_scalars`` only buffers; ``flush`` writes the buffer in one transaction.
- ``StoreWriter`` (``writer.py``): what the trainer feeds. Every ``submit_*`` call appends to an
  in-memory queue and returns at once; a daemon thread with its own ``RunStore`` writes batches.
  ``flush`` waits until everything submitted so far is committed; errors in the thread are
  re-raised there.

Thread safety: a store belongs to the thread that opened it (sqlite3 connections must not be
shared across threads; the package enforces this with ``check_same_thread``). Open one store per
reading thread. A ``StoreWriter``'s methods may be called from any thread.

Downsampled reads come from min/max rollups kept at write time (``rollups.py``; see
``_ROLLUP_SHIFTS`` there for the block sizes and why), so ``query(series, max_points=N)`` costs
about the same on a 10k-point and a 10M-point series. Schema version 2 added them; a writable open
of a version-1 file builds them once (in the same transaction as the version bump), and a reader
of a version-1 file falls back to scanning the raw rows. Version 3 added the matrices table
(``schema.py``); a reader of an older file sees no matrices.

Timings (ingest rate, rollup against raw-row queries): ``.venv/bin/python bench/bench_store.py``.
"""

from __future__ import annotations

from podium.engine.store.reader import CheckpointRecord, EventRow, RunReader, ScalarRow
from podium.engine.store.rollups import ROLLUP_BLOCK_SIZES
from podium.engine.store.runstore import RunStore
from podium.engine.store.schema import SCHEMA_VERSION
from podium.engine.store.writer import StoreWriter

__all__ = [
    "ROLLUP_BLOCK_SIZES",
    "SCHEMA_VERSION",
    "CheckpointRecord",
    "EventRow",
    "RunReader",
    "RunStore",
    "ScalarRow",
    "StoreWriter",
]
