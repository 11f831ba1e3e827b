"""The per-run metrics store on real SQLite files: round trips, concurrent readers (another
connection, another process), min/max downsampling from the rollups (checked against slow
references: the rollup table against one recomputed from the raw rows, query results against the
documented bucket rule), truncation on resume, replaced steps, NaN, the version-1 migration, matrix
metrics (latest per step, replaced, truncated, the version-2 migration) and the writer thread's
batching and error propagation."""

from __future__ import annotations

import bisect
import json
import math
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from podium.engine.errors import RunError
from podium.engine.metrics import Matrix
from podium.engine.store import (
    ROLLUP_BLOCK_SIZES,
    SCHEMA_VERSION,
    CheckpointRecord,
    RunReader,
    RunStore,
    StoreWriter,
)

ROOT = Path(__file__).resolve().parents[1]


def ckpt(name: str, step: int, val_loss: float | None = 1.5, **kw) -> CheckpointRecord:
    fields = dict(
        path=f"/runs/x/checkpoints/{name}.pt", epoch=step / 10, size=1234, wall=1e9 + step
    )
    fields.update(kw)
    return CheckpointRecord(name=name, step=step, val_loss=val_loss, kind="latest", **fields)


def wait_until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "metrics.db"


# -- RunStore --------------------------------------------------------------------------------


def test_round_trip_and_reopen(db: Path):
    store = RunStore.open(db)
    for step in range(5):
        store.add_scalars(step, step / 5, 100.0 + step, {"train/loss": 2.0 - step / 10, "lr": 1e-3})
    store.add_scalars(4, 0.8, 104.0, {"val/loss": 1.7})
    store.flush()
    e1 = store.add_event("state", {"state": "running"}, step=0, wall=100.0)
    e2 = store.add_event("eval", {"loss": 1.7, "heads": ["pitch"]}, step=4, wall=104.0)
    store.upsert_checkpoint(ckpt("latest", 2))
    store.upsert_checkpoint(ckpt("latest", 4, val_loss=1.2))  # same name: replaced
    store.upsert_checkpoint(ckpt("best", 3, val_loss=None, keep=True))
    store.upsert_checkpoint(ckpt("epoch-1", 1))
    store.delete_checkpoint("epoch-1")
    store.meta_set("profile_hash", "abc123")
    store.close()
    store.close()  # idempotent

    with RunStore.open(db) as again:
        assert again.series_names() == ["lr", "train/loss", "val/loss"]
        assert again.query("train/loss") == [(s, 2.0 - s / 10) for s in range(5)]
        assert again.query("train/loss", x="wall") == [(100.0 + s, 2.0 - s / 10) for s in range(5)]
        assert again.last("val/loss") == (4, 1.7)
        assert again.last("nope") is None and again.query("nope") == []
        events = again.events()
        assert [(e.id, e.kind, e.step) for e in events] == [(e1, "state", 0), (e2, "eval", 4)]
        assert events[1].payload == {"loss": 1.7, "heads": ["pitch"]}
        assert [e.id for e in again.events(since_id=e1)] == [e2]
        assert [e.kind for e in again.events(kinds=["eval"])] == ["eval"]
        assert len(again.events(limit=1)) == 1
        assert again.checkpoints() == [
            ckpt("best", 3, val_loss=None, keep=True),
            ckpt("latest", 4, val_loss=1.2),
        ]
        assert again.meta_get("profile_hash") == "abc123"
        assert again.meta_get("missing", "dflt") == "dflt"
        assert again.meta_get("created") is not None
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_reader_connection_sees_flushed_data_only_and_never_blocks_the_writer(db: Path):
    writer = RunStore.open(db, busy_timeout=0.2)
    writer.add_scalars(1, 0.0, 1.0, {"train/loss": 3.0})
    writer.flush()
    reader = RunStore.open(db, readonly=True)
    assert reader.query("train/loss") == [(1, 3.0)]

    writer.add_scalars(2, 0.0, 2.0, {"train/loss": 2.5})  # buffered, not yet visible
    assert reader.last("train/loss") == (1, 3.0)
    # A reader in the middle of a long read transaction must not hold up the writer (WAL).
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    raw.execute("BEGIN")
    assert raw.execute("SELECT count(*) FROM scalars").fetchone() == (1,)
    t0 = time.monotonic()
    writer.flush()
    writer.add_event("state", {"state": "paused"}, step=2, wall=2.0)
    assert time.monotonic() - t0 < 0.2
    assert raw.execute("SELECT count(*) FROM scalars").fetchone() == (1,)  # its snapshot
    raw.execute("COMMIT")
    raw.close()
    assert reader.last("train/loss") == (2, 2.5)
    assert [e.kind for e in reader.events()] == ["state"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.meta_set("x", "y")
    reader.close()
    writer.close()


def test_reader_in_another_process_sees_flushed_data_while_the_writer_stays_open(db: Path):
    writer = StoreWriter(db, flush_interval=60.0)
    for step in range(50):
        writer.submit_scalars(step, step / 50, 10.0 + step, {"train/loss": 1.0 / (step + 1)})
    writer.submit_event("checkpoint", {"name": "latest"}, step=49, wall=59.0)
    writer.submit_checkpoint(ckpt("latest", 49))
    writer.flush()
    code = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from podium.engine.store import RunStore
        s = RunStore.open(Path({str(db)!r}), readonly=True)
        print(json.dumps({{"pts": s.query("train/loss", max_points=10), "last": s.last("train/loss"),
                          "events": [e.kind for e in s.events()],
                          "ckpts": [c.name for c in s.checkpoints()]}}))
        s.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["last"] == [49, 1.0 / 50]
    assert 0 < len(got["pts"]) <= 10 and got["pts"][0] == [0, 1.0]
    assert got["events"] == ["checkpoint"] and got["ckpts"] == ["latest"]
    # Still writable after the other process read it.
    writer.submit_scalars(50, 1.0, 60.0, {"train/loss": 0.01})
    writer.close()
    with RunStore.open(db, readonly=True) as r:
        assert r.last("train/loss") == (50, 0.01)


def _rank_max(p: tuple[int, float]) -> tuple[float, int]:
    """Max side: NaN ranks as +inf; of equal ranks the earliest step wins."""
    return (math.inf if math.isnan(p[1]) else p[1], -p[0])


def _reference_query(
    points: list[tuple[int, float]],
    max_points: int,
    start: int | None = None,
    end: int | None = None,
    blocks: tuple[int, ...] = ROLLUP_BLOCK_SIZES,
) -> list[tuple[int, float]]:
    """``query(max_points=...)`` as its docstring specifies it, the slow obvious way.

    Each point goes to the largest aligned block (of the sizes no wider than a bucket) that lies
    inside [lo, hi], or stays on its own when none does; each block joins the bucket of its
    first point; each bucket keeps its min point and its max point. No bucket narrower than the
    smallest block (or ``blocks=()``, a version-1 file read-only): equal-width buckets.
    """
    pts = [p for p in points if (start is None or p[0] >= start) and (end is None or p[0] <= end)]
    if len(pts) <= max_points:
        return pts
    lo, hi = pts[0][0], pts[-1][0]
    nb, span = max_points // 2, hi - lo + 1
    sizes = [size for size in blocks if size * nb <= span]

    def piece(step: int) -> tuple[int, int]:
        for size in reversed(sizes):
            a = step // size * size
            if a >= lo and a + size - 1 <= hi:
                return size, a
        return 0, step

    first: dict[tuple[int, int], int] = {}
    for step, _ in pts:
        first.setdefault(piece(step), step)
    buckets: dict[int, list[tuple[int, float]]] = {}
    for p in pts:
        start_step = first[piece(p[0])] if sizes else p[0]
        buckets.setdefault((start_step - lo) * nb // span, []).append(p)
    keep = set()
    for group in buckets.values():
        numbers = [p for p in group if not math.isnan(p[1])]
        if numbers:
            keep.add(min(numbers, key=lambda p: (p[1], p[0])))
        keep.add(max(group, key=_rank_max))
    return sorted(keep)


def _same(a: list, b: list) -> bool:
    """Point lists equal, NaN equal to NaN."""
    key = lambda pts: [(x, "nan" if math.isnan(v) else v) for x, v in pts]  # noqa: E731
    return key(a) == key(b)


def _expected_rollup(db: Path) -> list[tuple]:
    """The rollup table recomputed from the raw rows, the slow obvious way: a row per block
    that holds a point and is closed (ends at or before the series' last step)."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT series_id, step, value, wall FROM scalars ORDER BY 1, 2").fetchall()
    con.close()
    last = {sid: step for sid, step, _, _ in rows}
    groups: dict[tuple[int, int, int], list[tuple[int, float, float]]] = {}
    for level, size in enumerate(ROLLUP_BLOCK_SIZES):
        for sid, step, value, wall in rows:
            v = math.nan if value is None else value
            groups.setdefault((sid, level, step // size), []).append((step, v, wall))
    out = []
    for key, pts in sorted(groups.items()):
        sid, level, block = key
        if (block + 1) * ROLLUP_BLOCK_SIZES[level] - 1 > last[sid]:
            continue
        numbers = [p for p in pts if not math.isnan(p[1])]
        lo = min(numbers, key=lambda p: (p[1], p[0])) if numbers else (None, None, None)
        hi = max(pts, key=lambda p: _rank_max(p[:2]))
        hi = (hi[0], None if math.isnan(hi[1]) else hi[1], hi[2])
        out.append((*key, len(pts), pts[0][0], pts[-1][0], *lo, *hi))
    return out


def _stored_rollup(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT series_id, level, block, n, first_step, last_step, min_step, min_value, "
        "min_wall, max_step, max_value, max_wall FROM rollup ORDER BY 1, 2, 3"
    ).fetchall()
    con.close()
    return rows


def test_downsampling_keeps_spikes_dips_and_every_bucket_of_a_100k_series(db: Path):
    rng = random.Random(0)
    n, spike_at, dip_at = 100_000, 61_234, 7_777
    values = [2.0 + math.sin(i / 3000) + rng.random() * 0.01 for i in range(n)]
    values[spike_at], values[dip_at] = 50.0, -50.0
    store = RunStore.open(db)
    for step in range(n):
        store.add_scalars(step, step / 1000, 1e9 + step * 0.5, {"train/loss": values[step]})
    store.flush()

    pts = store.query("train/loss", max_points=200)
    assert len(pts) <= 200
    steps = [s for s, _ in pts]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert (spike_at, 50.0) in pts and (dip_at, -50.0) in pts
    assert steps[0] < 1000 and steps[-1] >= n - 1000  # first and last buckets (width 1000) present
    assert pts == _reference_query(list(enumerate(values)), 200)

    # Same selection with wall-clock x; a step window is bucketed on its own range.
    assert store.query("train/loss", max_points=200, x="wall") == [
        (1e9 + s * 0.5, v) for s, v in pts
    ]
    window = store.query("train/loss", max_points=50, start_step=60_000, end_step=70_000)
    assert len(window) <= 50 and (spike_at, 50.0) in window
    assert window == _reference_query(list(enumerate(values)), 50, 60_000, 70_000)
    assert window[0][0] >= 60_000 and window[-1][0] <= 70_000  # exact edges, not block edges
    # Buckets of 20 steps read the 16-step blocks; of 13 steps, the raw rows (equal widths).
    for mp in (2000, 3000):
        got = store.query("train/loss", max_points=mp, end_step=19_999)
        assert got == _reference_query(list(enumerate(values)), mp, None, 19_999)
        assert (dip_at, -50.0) in got and len(got) <= mp
    # No downsampling asked, or few enough points: everything, in order.
    assert len(store.query("train/loss")) == n
    assert store.query("train/loss", max_points=200, start_step=10, end_step=209) == [
        (s, values[s]) for s in range(10, 210)
    ]
    with pytest.raises(ValueError, match="max_points"):
        store.query("train/loss", max_points=1)
    store.close()


def _check_envelope(pts: list, points: list[tuple[int, float]], max_points: int) -> None:
    """What a plot needs, whatever the level: every stored point has a returned point at most as
    low and one at least as high (NaN: a NaN) less than two bucket widths away."""
    lo, hi = points[0][0], points[-1][0]
    reach = 2 * (hi - lo + 1) / (max_points // 2)
    xs = [q[0] for q in pts]
    for step, v in points:
        near = pts[bisect.bisect_right(xs, step - reach) : bisect.bisect_left(xs, step + reach)]
        if math.isnan(v):
            assert any(math.isnan(q[1]) for q in near), step
        else:
            assert any(q[1] <= v for q in near) and any(not q[1] < v for q in near), step


def test_rollup_queries_match_the_reference_on_sparse_series_and_windows(db: Path):
    rng = random.Random(1)
    # Steps with gaps, starting off any block edge; a spike, a dip, a NaN and infinities.
    steps, step = [], 1_000_003
    while len(steps) < 30_000:
        steps.append(step)
        step += rng.choice((1, 1, 1, 2, 7, 100)) if rng.random() < 0.98 else 5000
    values = [math.sin(i / 700) + rng.gauss(0, 0.1) for i in range(len(steps))]
    values[12_345], values[23_456], values[5_000] = 40.0, -40.0, math.nan
    values[7_000], values[7_001] = math.inf, -math.inf
    points = list(zip(steps, values, strict=True))
    store = RunStore.open(db)
    for i, (step, v) in enumerate(points):
        store.add_scalars(step, 0.0, step * 0.25, {"loss": v})
        if i % 997 == 0:
            store.flush()
    store.flush()
    assert _stored_rollup(db) == _expected_rollup(db)

    cases = [(None, None, mp) for mp in (4, 11, 200, 1000, 5000)]
    for _ in range(12):
        a, b = sorted(rng.sample(range(steps[0] - 10, steps[-1] + 10), 2))
        cases.append((a, b, rng.choice((6, 50, 300))))
    for start, end, mp in cases:
        got = store.query("loss", max_points=mp, start_step=start, end_step=end)
        want = _reference_query(points, mp, start, end)
        assert _same(got, want), (start, end, mp)
        assert len(got) <= mp and [s for s, _ in got] == sorted({s for s, _ in got})
        inside = [
            p for p in points if (start is None or p[0] >= start) and (end is None or p[0] <= end)
        ]
        if len(inside) > mp and start is None:
            _check_envelope(got, inside, mp)
    full = store.query("loss", max_points=1000)
    assert (steps[12_345], 40.0) in full and (steps[23_456], -40.0) in full
    assert any(s == steps[5_000] and math.isnan(v) for s, v in full)
    assert _same(store.query("loss", max_points=1000, x="wall"), [(s * 0.25, v) for s, v in full])
    store.close()


def test_rollups_stay_exact_through_replaced_steps_out_of_order_writes_and_truncation(db: Path):
    store = RunStore.open(db)
    rng = random.Random(2)

    def check() -> None:
        assert _stored_rollup(db) == _expected_rollup(db)

    for step in range(6000):  # appended in batches of odd sizes, blocks split across batches
        v = 100.0 if step == 2500 else -100.0 if step == 4100 else rng.random()
        store.add_scalars(step, 0.0, float(step), {"loss": v, "lr": 0.1})
        if step % 250 == 0:
            store.add_scalars(step, 0.0, float(step), {"val/loss": rng.random()})
        if step % 37 == 0:
            store.flush()
    store.flush()
    check()
    pts = store.query("loss", max_points=100)
    assert (2500, 100.0) in pts and (4100, -100.0) in pts

    # A step logged again with a smaller value: the old max must not survive in any level.
    store.add_scalars(2500, 0.0, 2500.0, {"loss": 0.5})
    store.flush()
    check()
    assert max(v for _, v in store.query("loss", max_points=100)) < 1.0
    # Out of order and repeated inside one batch (the later value wins), NaN and a whole NaN block.
    for step in (5000, 10, 9000, 4100, 4100, 4101, 6500):
        store.add_scalars(step, 0.0, 1.0, {"loss": 0.25 if step != 4101 else math.nan})
    store.add_scalars(4100, 0.0, 1.0, {"loss": 0.75})
    for step in range(7008, 7024):
        store.add_scalars(step, 0.0, 1.0, {"loss": math.nan})
    store.flush()
    check()
    pts = store.query("loss", max_points=100)
    assert min(v for _, v in pts) >= 0.0 and (4100, 0.75) not in pts  # the dip went too
    assert any(s in range(7008, 7024) and math.isnan(v) for s, v in pts)

    store.truncate_after(3333)
    check()
    assert store.query("loss", max_points=10_000)[-1][0] == 3333
    assert store.last("val/loss") == (3250, store.query("val/loss")[-1][1])
    for step in range(3334, 4000):  # resumed: the merge path continues the recomputed block
        store.add_scalars(step, 0.0, 0.0, {"loss": 2.0 + step / 1e4})
    store.flush()
    check()
    assert store.query("loss", max_points=20)[-1] == (3999, 2.0 + 3999 / 1e4)
    store.close()


def test_open_rollup_blocks_continue_exactly_across_reopens_and_a_second_writer(db: Path):
    rng = random.Random(4)
    first = RunStore.open(db)
    for step in range(1001):  # stops inside a block of every level: all of them still open
        first.add_scalars(step, 0.0, float(step), {"loss": rng.random()})
    first.close()
    second = RunStore.open(db)  # knows none of the open blocks: rebuilds them from the file
    for step in range(1001, 3000):
        second.add_scalars(step, 0.0, float(step), {"loss": rng.random() * 2})
        if step % 100 == 0:
            second.flush()
    second.flush()
    assert _stored_rollup(db) == _expected_rollup(db)
    # Two writable connections taking turns (their open blocks go stale in between).
    third = RunStore.open(db)
    for step in range(3000, 9000):
        store = second if step // 700 % 2 else third
        store.add_scalars(step, 0.0, float(step), {"loss": math.sin(step) * (1 + step % 13)})
        store.flush()
    assert _stored_rollup(db) == _expected_rollup(db)
    third.close()
    second.close()
    with RunStore.open(db, readonly=True) as r:
        pts = [(s, v) for s, v in r.query("loss")]
        assert r.query("loss", max_points=64) == _reference_query(pts, 64)


# The version-1 layout, frozen: what podium wrote before the rollups.
_V1_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE series(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE scalars(series_id INTEGER NOT NULL, step INTEGER NOT NULL, epoch REAL, wall REAL,
    value REAL, PRIMARY KEY (series_id, step)) WITHOUT ROWID;
CREATE TABLE events(id INTEGER PRIMARY KEY, wall REAL, step INTEGER, kind TEXT, payload TEXT);
CREATE TABLE checkpoints(name TEXT PRIMARY KEY, path TEXT, step INTEGER, epoch REAL,
    val_loss REAL, size INTEGER, wall REAL, kind TEXT, keep INTEGER DEFAULT 0);
PRAGMA user_version = 1;
"""

_V2_ROLLUP = """CREATE TABLE rollup(series_id INTEGER NOT NULL, level INTEGER NOT NULL,
    block INTEGER NOT NULL, n INTEGER NOT NULL, first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL, min_step INTEGER, min_value REAL, min_wall REAL,
    max_step INTEGER NOT NULL, max_value REAL, max_wall REAL,
    PRIMARY KEY (series_id, level, block)) WITHOUT ROWID"""


def test_a_version_1_file_is_read_from_raw_rows_and_migrated_on_writable_open(db: Path):
    rng = random.Random(3)
    points = [(s, rng.random()) for s in range(20_000)]
    points[777] = (777, 9.0)
    con = sqlite3.connect(db)
    con.executescript(_V1_SCHEMA)
    con.execute("INSERT INTO series(id, name) VALUES (1, 'loss'), (2, 'empty')")
    con.executemany(
        "INSERT INTO scalars VALUES (1, ?, 0.0, ?, ?)", [(s, s / 2, v) for s, v in points]
    )
    con.execute("INSERT INTO meta VALUES ('created', '1.0')")
    con.commit()
    con.close()

    reader = RunStore.open(db, readonly=True)  # an old file: equal-width buckets from raw rows
    got = reader.query("loss", max_points=100)
    assert got == _reference_query(points, 100, blocks=())
    assert (777, 9.0) in got

    with RunStore.open(db) as writer:  # builds the rollups, bumps the version
        assert writer.query("loss", max_points=100) == _reference_query(points, 100)
        writer.add_scalars(20_000, 0.0, 10_000.0, {"loss": -1.0})
    assert _stored_rollup(db) == _expected_rollup(db)
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert _tables(raw) >= {"rollup", "matrices"}
    raw.close()
    points.append((20_000, -1.0))
    # The reader that opened the old file now reads the rollups too; nothing else changed.
    assert reader.query("loss", max_points=100) == _reference_query(points, 100)
    assert reader.query("loss", max_points=100, x="wall") == [
        (s / 2, v) for s, v in reader.query("loss", max_points=100)
    ]
    assert reader.meta_get("created") == "1.0" and reader.query("empty", max_points=10) == []
    reader.close()


def test_nan_and_inf_are_stored_and_never_lose_a_row(db: Path):
    store = RunStore.open(db)
    seq = [1.0, math.nan, math.inf, -math.inf, 0.5]
    for step, v in enumerate(seq):
        store.add_scalars(step, 0.0, float(step), {"train/loss": v})
    store.add_scalars(5, 0.0, 5.0, {"grad_norm": math.nan})
    store.flush()
    store.upsert_checkpoint(ckpt("latest", 4, val_loss=math.nan))
    got = store.query("train/loss")
    assert [s for s, _ in got] == [0, 1, 2, 3, 4]
    assert got[0][1] == 1.0 and math.isnan(got[1][1]) and got[2][1] == math.inf
    assert got[3][1] == -math.inf and got[4][1] == 0.5
    step, v = store.last("grad_norm")
    assert step == 5 and math.isnan(v)
    assert store.checkpoints()[0].val_loss is None
    store.close()


def test_downsampling_shows_a_bucket_that_went_nan(db: Path):
    store = RunStore.open(db)
    for step in range(1000):
        v = math.nan if step == 900 else 1.0 + (step % 7) / 10
        store.add_scalars(step, 0.0, 0.0, {"train/loss": v})
    store.flush()
    pts = store.query("train/loss", max_points=20)
    assert len(pts) <= 20
    assert any(s == 900 and math.isnan(v) for s, v in pts)
    store.close()


def test_truncate_after_removes_later_scalars_and_events_only(db: Path):
    store = RunStore.open(db)
    for step in range(10):
        store.add_scalars(step, 0.0, float(step), {"train/loss": float(step), "lr": 0.1})
        store.add_event("tick", {"i": step}, step=step, wall=float(step))
    store.flush()
    store.upsert_checkpoint(ckpt("latest", 8))
    store.add_scalars(10, 0.0, 10.0, {"train/loss": 10.0})  # buffered: truncated too
    store.truncate_after(5)
    assert store.query("train/loss") == [(s, float(s)) for s in range(6)]
    assert store.last("lr") == (5, 0.1)
    assert [e.step for e in store.events()] == list(range(6))
    assert [c.name for c in store.checkpoints()] == ["latest"]  # files on disk decide those
    # The resumed run continues the series with no duplicate or backwards step.
    store.add_scalars(6, 0.0, 60.0, {"train/loss": -6.0})
    store.flush()
    assert store.query("train/loss")[-2:] == [(5, 5.0), (6, -6.0)]
    store.close()


def test_readonly_open_errors_and_an_empty_file(tmp_path: Path, db: Path):
    with pytest.raises(FileNotFoundError):
        RunStore.open(tmp_path / "missing.db", readonly=True)
    sqlite3.connect(db).close()  # a file the writer has not given a schema yet
    with RunStore.open(db, readonly=True) as r:
        assert r.series_names() == [] and r.query("train/loss") == [] and r.events() == []
        assert r.checkpoints() == [] and r.last("train/loss") is None
        assert r.matrix_names() == [] and r.latest_matrix("m") is None and r.matrices("m") == []
    RunStore.open(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(RunError, match=r"schema version 99 is newer"):
        RunStore.open(db, readonly=True)


def test_a_store_belongs_to_the_thread_that_opened_it(db: Path):
    store = RunStore.open(db)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            store.series_names()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)
    store.close()


# -- matrices --------------------------------------------------------------------------------

CONFUSION = Matrix.of(("C", "D", "E"), ("C", "D", "E"), [[5, 1, 0], [2, 3, 1], [0, 0, 6]])


def confusion(k: float) -> Matrix:
    return Matrix.of(("C", "D"), ("C", "D"), [[k, 1.0 - k], [1.0 - k, k]])


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_matrices_round_trip_latest_per_step_and_a_same_step_write_replaces(db: Path):
    store = RunStore.open(db)
    assert store.matrix_names() == [] and store.latest_matrix("val/confusion") is None
    assert store.matrices("val/confusion") == []
    store.add_matrices(10, 100.0, {"val/confusion": confusion(0.5), "val/pitch": CONFUSION})
    store.add_matrices(20, 200.0, {"val/confusion": confusion(0.75)})
    store.add_matrices(10, 101.0, {"val/confusion": confusion(0.6)})  # same step: replaced
    nan = Matrix.of(("a",), ("x", "y"), [[math.nan, 2.0]])
    store.add_matrices(30, 300.0, {"val/nan": nan})
    with pytest.raises(TypeError, match="expected a Matrix"):
        store.add_matrices(40, 400.0, {"val/ok": CONFUSION, "val/bad": [[1, 2]]})  # type: ignore[dict-item]
    store.close()

    with RunStore.open(db, readonly=True) as r:
        assert r.matrix_names() == ["val/confusion", "val/nan", "val/pitch"]
        assert r.series_names() == []  # matrices are not series
        assert r.matrices("val/confusion") == [(10, confusion(0.6)), (20, confusion(0.75))]
        assert r.latest_matrix("val/confusion") == (20, confusion(0.75))
        assert r.latest_matrix("val/confusion", end_step=19) == (10, confusion(0.6))
        assert r.latest_matrix("val/confusion", end_step=10) == (10, confusion(0.6))
        assert r.latest_matrix("val/confusion", end_step=9) is None
        assert r.latest_matrix("val/pitch") == (10, CONFUSION)
        assert r.latest_matrix("val/ok") is None  # the rejected call wrote nothing
        assert r.latest_matrix("nope") is None and r.matrices("nope") == []
        step, got = r.latest_matrix("val/nan")
        assert step == 30 and got.rows == ("a",) and got.cols == ("x", "y")
        assert math.isnan(got.values[0][0]) and got.values[0][1] == 2.0
    with RunReader.open(db) as r:  # the read side alone reads the same
        assert r.matrices("val/pitch") == [(10, CONFUSION)]


def test_truncate_after_drops_later_matrices(db: Path):
    with RunStore.open(db) as store:
        for step in (5, 10, 15, 20):
            store.add_matrices(step, float(step), {"m": confusion(step / 20), "n": CONFUSION})
        store.truncate_after(10)
        assert store.matrices("m") == [(5, confusion(0.25)), (10, confusion(0.5))]
        assert store.latest_matrix("n") == (10, CONFUSION)
        store.add_matrices(11, 11.0, {"m": confusion(0.0)})  # the resumed run carries on
        assert [s for s, _ in store.matrices("m")] == [5, 10, 11]
        store.truncate_after(0)
        assert store.matrix_names() == []


def _make_version_2(db: Path) -> list[tuple]:
    """A store as podium wrote it before the matrices table (scalars, events, rollups); returns
    its rollup rows."""
    with RunStore.open(db) as store:
        for step in range(1000):
            store.add_scalars(step, 0.0, float(step), {"train/loss": 1.0 / (step + 1)})
        store.add_event("state", {"state": "running"}, step=0, wall=0.0)
    con = sqlite3.connect(db)
    con.execute("DROP TABLE matrices")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    return _stored_rollup(db)


def test_a_version_2_file_reads_with_no_matrices_and_gains_the_table_on_writable_open(db: Path):
    rollup = _make_version_2(db)
    reader = RunStore.open(db, readonly=True)
    assert reader.matrix_names() == [] and reader.latest_matrix("m") is None
    assert reader.matrices("m") == []
    assert reader.last("train/loss") == (999, 1.0 / 1000)
    raw = sqlite3.connect(db)
    assert "matrices" not in _tables(raw)  # reading changed nothing
    assert raw.execute("PRAGMA user_version").fetchone() == (2,)

    with RunStore.open(db) as writer:  # the migration: the table, the version bump
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "matrices" in _tables(raw)
        assert writer.matrix_names() == []
        writer.add_matrices(999, 1.0, {"m": CONFUSION})
        writer.add_scalars(1000, 0.0, 1000.0, {"train/loss": 0.5})
    raw.close()
    # Nothing else changed: step 1000 closes no block, so the rollups are the old file's.
    assert _stored_rollup(db) == rollup == _expected_rollup(db)
    # The reader that opened the old file sees the matrices now, and the rest as before.
    assert reader.matrix_names() == ["m"] and reader.latest_matrix("m") == (999, CONFUSION)
    assert [e.kind for e in reader.events()] == ["state"] and reader.last("train/loss") == (
        1000,
        0.5,
    )
    reader.close()
    with RunStore.open(db) as again:  # a second writable open: nothing to migrate
        assert again.latest_matrix("m") == (999, CONFUSION)


def test_a_file_with_the_version_2_create_statements_migrates(db: Path):
    con = sqlite3.connect(db)
    con.executescript(_V1_SCHEMA)
    con.execute(_V2_ROLLUP)
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    with RunStore.open(db, readonly=True) as r:
        assert r.matrix_names() == [] and r.series_names() == []
    with RunStore.open(db) as w:
        w.add_matrices(1, 1.0, {"m": CONFUSION})
    with RunStore.open(db, readonly=True) as r:
        assert r.matrices("m") == [(1, CONFUSION)]


# -- StoreWriter -----------------------------------------------------------------------------


def test_writer_batches_until_flush_then_everything_is_on_disk(db: Path):
    writer = StoreWriter(db, flush_interval=60.0)
    reader = RunStore.open(db, readonly=True)
    values = {"train/loss": 1.0}
    for step in range(20):
        values["train/loss"] = 1.0 / (step + 1)
        writer.submit_scalars(step, 0.0, float(step), values)  # the dict is reused by the caller
    writer.submit_event("eval", {"loss": 0.3}, step=19, wall=19.0)
    writer.submit_checkpoint(ckpt("latest", 19))
    writer.submit_delete_checkpoint("nonexistent")
    writer.submit_meta("family", "remi")
    time.sleep(0.2)
    assert reader.last("train/loss") is None  # 22 rows < max_pending, interval not reached
    writer.flush(timeout=10)
    assert reader.query("train/loss") == [(s, 1.0 / (s + 1)) for s in range(20)]
    assert [e.kind for e in reader.events()] == ["eval"]
    assert [c.name for c in reader.checkpoints()] == ["latest"]
    assert reader.meta_get("family") == "remi"
    writer.flush()  # nothing pending: returns at once
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit_scalars(99, 0.0, 0.0, {"train/loss": 0.0})
    reader.close()


def test_writer_flushes_on_its_own_by_size_and_by_interval(tmp_path: Path):
    by_size = StoreWriter(tmp_path / "a.db", flush_interval=60.0, max_pending=100)
    reader = RunStore.open(tmp_path / "a.db", readonly=True)
    for step in range(10):
        by_size.submit_scalars(step, 0.0, 0.0, {f"s{i}": float(i) for i in range(10)})
    assert wait_until(lambda: reader.last("s9") == (9, 9.0))
    by_size.close()
    reader.close()

    by_time = StoreWriter(tmp_path / "b.db", flush_interval=0.05)
    reader = RunStore.open(tmp_path / "b.db", readonly=True)
    by_time.submit_scalars(7, 0.0, 0.0, {"lr": 0.5})
    assert wait_until(lambda: reader.last("lr") == (7, 0.5))
    by_time.close()
    reader.close()


def test_writer_truncate_applies_in_submission_order(db: Path):
    with StoreWriter(db, flush_interval=60.0) as writer:
        for step in range(10):
            writer.submit_scalars(step, 0.0, 0.0, {"train/loss": float(step)})
        writer.submit_truncate(4)
        for step in range(5, 8):
            writer.submit_scalars(step, 0.0, 0.0, {"train/loss": -float(step)})
    with RunStore.open(db, readonly=True) as r:
        assert r.query("train/loss") == [(s, float(s)) for s in range(5)] + [
            (s, -float(s)) for s in range(5, 8)
        ]


def test_writer_error_is_raised_on_flush_and_the_rows_are_retried(db: Path):
    writer = StoreWriter(db, flush_interval=0.05, busy_timeout=0.05)
    # Another connection takes the write lock (a second writer process would): the writer's
    # transactions fail with "database is locked" until it lets go.
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    t0 = time.monotonic()
    for step in range(100):
        writer.submit_scalars(step, 0.0, 0.0, {"train/loss": float(step)})
    assert time.monotonic() - t0 < 0.5  # submitting never waits for the locked database
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.flush(timeout=10)
    other.execute("ROLLBACK")
    other.close()
    writer.flush(timeout=10)  # the error was reported once; the retry wrote every row
    writer.close()
    assert writer.dropped == 0
    with RunStore.open(db, readonly=True) as r:
        assert r.query("train/loss") == [(s, float(s)) for s in range(100)]


def test_writer_backlog_is_capped_while_writes_keep_failing(db: Path):
    writer = StoreWriter(db, flush_interval=0.05, busy_timeout=0.05, max_backlog=5)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for step in range(10):
        writer.submit_scalars(step, 0.0, 0.0, {"train/loss": float(step)})
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.flush(timeout=10)
    assert writer.dropped == 5  # the oldest rows went; memory stays bounded
    other.execute("ROLLBACK")
    other.close()
    writer.close()
    with RunStore.open(db, readonly=True) as r:
        assert [s for s, _ in r.query("train/loss")] == [5, 6, 7, 8, 9]


def test_writer_error_at_close_is_raised_once_and_counts_the_lost_rows(db: Path):
    writer = StoreWriter(db, flush_interval=60.0, busy_timeout=0.05)
    writer.submit_scalars(1, 0.0, 0.0, {"a": 1.0, "b": 2.0})
    writer.submit_event("state", {"state": "finished"}, step=1, wall=0.0)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.close()
    other.execute("ROLLBACK")
    other.close()
    assert writer.dropped == 3
    writer.close()  # idempotent: the error was already raised


def test_writer_rejects_bad_input_on_the_callers_thread(tmp_path: Path, db: Path):
    with pytest.raises(sqlite3.OperationalError):
        StoreWriter(tmp_path / "no-such-dir" / "metrics.db")
    with StoreWriter(db) as writer:
        with pytest.raises(TypeError):
            writer.submit_event("x", {"obj": object()}, step=0, wall=0.0)
        with pytest.raises(TypeError):
            writer.submit_checkpoint({"name": "latest"})  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            writer.submit_scalars(0, 0.0, 0.0, {"loss": "high"})  # type: ignore[dict-item]
        writer.submit_scalars(0, 0.0, 0.0, {"loss": 1.0})
        writer.flush(timeout=10)  # the rejected submissions did not poison the queue
    with RunStore.open(db, readonly=True) as r:
        assert r.query("loss") == [(0, 1.0)] and r.events() == []


def test_writer_matrices_apply_in_submission_order_with_truncate(db: Path):
    with StoreWriter(db, flush_interval=60.0) as writer:
        for step in range(1, 5):
            writer.submit_matrices(step, float(step), {"val/confusion": confusion(step / 4)})
        writer.submit_truncate(2)
        writer.submit_matrices(3, 30.0, {"val/confusion": CONFUSION})
        with pytest.raises(TypeError, match="expected a Matrix"):
            writer.submit_matrices(9, 0.0, {"val/confusion": {"rows": []}})  # type: ignore[dict-item]
        writer.flush(timeout=10)
        with RunStore.open(db, readonly=True) as r:
            assert r.matrices("val/confusion") == [
                (1, confusion(0.25)),
                (2, confusion(0.5)),
                (3, CONFUSION),
            ]


def test_writer_counts_matrix_rows_it_drops(db: Path):
    writer = StoreWriter(db, flush_interval=60.0, busy_timeout=0.05)
    writer.submit_matrices(1, 0.0, {"a": CONFUSION, "b": CONFUSION})
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.close()
    other.execute("ROLLBACK")
    other.close()
    assert writer.dropped == 2


# -- podium metrics RUN --json ---------------------------------------------------------------


def test_podium_metrics_json_gives_the_series_and_the_latest_of_each_matrix(tmp_path: Path, capsys):
    from podium.engine.cli.main import main

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    with RunStore.open(run / "metrics.db") as store:
        for step in (1, 2):
            store.add_scalars(step, 0.0, float(step), {"train/loss": 1.0 / step, "lr": 0.1})
        store.add_matrices(1, 1.0, {"val/confusion": confusion(0.5)})
        store.add_matrices(2, 2.0, {"val/confusion": confusion(0.75), "val/pitch": CONFUSION})
        store.add_matrices(2, 2.0, {"val/nan": Matrix.of(("a",), ("b",), [[math.nan]])})
    argv = ["metrics", "r", "--json", "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["series"] == {"lr": [[1, 0.1], [2, 0.1]], "train/loss": [[1, 1.0], [2, 0.5]]}
    assert out["matrices"] == {
        "val/confusion": {"step": 2, **confusion(0.75).to_dict()},
        "val/nan": {"step": 2, "rows": ["a"], "cols": ["b"], "values": [[None]]},
        "val/pitch": {"step": 2, **CONFUSION.to_dict()},
    }
    assert main([*argv, "--series", "lr"]) == 0  # --series filters the series only
    out = json.loads(capsys.readouterr().out)
    assert list(out["series"]) == ["lr"] and len(out["matrices"]) == 3
    assert main(["metrics", "r", "--csv", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "series,step,value",
        "lr,1,0.1",
        "lr,2,0.1",
        "train/loss,1,1.0",
        "train/loss,2,0.5",
    ]
    (run / "metrics.db").unlink()  # a run that has not written its store yet
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"series": {}, "matrices": {}}
