"""The run store's SQLite schema and its version."""

from __future__ import annotations

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of the schema this package writes; a newer file is refused.

1: scalars, events, checkpoints, meta. 2: adds the ``rollup`` table (migrated on writable open).
3: adds the ``matrices`` table (created on writable open; a reader of an older file sees none)."""

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

# One row per (matrix name, step): the latest matrix logged for that step (a second write of the
# same name and step replaces it). ``data`` is ``Matrix.to_dict()`` as JSON: non-finite values are
# stored as null and read back as NaN.
_MATRICES_SCHEMA = """CREATE TABLE matrices(
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    wall REAL,
    data TEXT NOT NULL,
    PRIMARY KEY (name, step)
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
    _MATRICES_SCHEMA,
)
