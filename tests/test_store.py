"""The per-run metrics store on real SQLite files: round trips, concurrent readers (another
connection, another process), min/max downsampling, truncation on resume, NaN, and the writer
thread's batching and error propagation."""

from __future__ import annotations

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

from engine.errors import RunError
from engine.store import CheckpointRecord, RunStore, StoreWriter

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
    assert raw.execute("PRAGMA user_version").fetchone() == (1,)
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
        from engine.store import RunStore
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


def _brute_force_minmax(
    points: list[tuple[int, float]], max_points: int
) -> list[tuple[int, float]]:
    """The specification, written the slow obvious way."""
    lo, hi = points[0][0], points[-1][0]
    nb, span = max_points // 2, hi - lo + 1
    buckets: dict[int, list[tuple[int, float]]] = {}
    for step, v in points:
        buckets.setdefault((step - lo) * nb // span, []).append((step, v))
    keep = set()
    for pts in buckets.values():
        keep.add(min(pts, key=lambda p: p[1]))
        keep.add(max(pts, key=lambda p: p[1]))
    return sorted(keep)


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
    assert pts == _brute_force_minmax(list(enumerate(values)), 200)

    # Same selection with wall-clock x; a step window is bucketed on its own range.
    assert store.query("train/loss", max_points=200, x="wall") == [
        (1e9 + s * 0.5, v) for s, v in pts
    ]
    window = store.query("train/loss", max_points=50, start_step=60_000, end_step=70_000)
    assert len(window) <= 50 and (spike_at, 50.0) in window
    assert window == _brute_force_minmax([(s, values[s]) for s in range(60_000, 70_001)], 50)
    # No downsampling asked, or few enough points: everything, in order.
    assert len(store.query("train/loss")) == n
    assert store.query("train/loss", max_points=200, start_step=10, end_step=209) == [
        (s, values[s]) for s in range(10, 210)
    ]
    with pytest.raises(ValueError, match="max_points"):
        store.query("train/loss", max_points=1)
    store.close()


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
