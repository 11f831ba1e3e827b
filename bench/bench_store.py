"""Metrics store: ingest rate with rollups against raw-only writes, and rollup against raw-row
downsampled queries on 1M-point series, one and twenty at a time (the dashboard's case).

Everything is measured in this one run, on fresh SQLite files under ``--tmp``:

1. ingest through ``StoreWriter`` as the trainer feeds it: one ``submit_scalars`` per step with
   10 series per step, then ``flush()``; reports rows/s end to end and the submitting thread's
   cost per call (what the training loop pays);
2. ingest through ``RunStore.add_scalars`` + ``flush`` every 1000 rows (the writer thread's batch
   size), rollups maintained, for 1 series x ``--points`` and for 10 series; side by side with the
   version-1 write path (the same rows, the same transaction per batch, no rollups) on a plain
   connection, which is what ingest cost before the rollups;
3. from a read-only connection (as the dashboard reads) on the 1-series file:
   ``query(series, max_points=2000 and 500)`` from the rollups, the same from a copy of the file
   made version 1 (rollup table dropped: the raw-row method readers of old files use), and a full
   ``query(series)``;
4. ``query_many`` of ``--series`` series x ``--points`` points at ``max_points=1000``: the first
   series copied with SQL into the others (raw and rollup rows; the copies hold the same values,
   so their rollups are exact) — what drawing a run screen costs.

    .venv/bin/python bench/bench_store.py [--points 1000000] [--series 20] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report_rows import Row, row

from podium.engine.store import RunStore, StoreWriter

N_SERIES = 10
BATCH_ROWS = 1000


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def walk(n: int, seed: int) -> list[float]:
    """A noisy decaying loss curve with one spike and one dip, like a real one."""
    rng = random.Random(seed)
    vals = [2.0 * math.exp(-i / (n / 3)) + 0.5 + rng.gauss(0, 0.02) for i in range(n)]
    vals[n * 2 // 3] = 25.0
    vals[n // 5] = -25.0
    return vals


def ingest_writer(path: Path, steps: int) -> tuple[float, float]:
    """(rows/s end to end, seconds per submit_scalars call) for ``steps`` x N_SERIES rows."""
    curves = [walk(steps, seed) for seed in range(N_SERIES)]
    names = [f"train/loss/head{i}" for i in range(N_SERIES)]
    writer = StoreWriter(path)
    submit = 0.0
    t0 = time.perf_counter()
    for step in range(steps):
        values = {names[i]: curves[i][step] for i in range(N_SERIES)}
        t1 = time.perf_counter()
        writer.submit_scalars(step, step / 1000, time.time(), values)
        submit += time.perf_counter() - t1
    writer.flush()
    total = time.perf_counter() - t0
    writer.close()
    return steps * N_SERIES / total, submit / steps


def _steps(n: int, series: int) -> tuple[list[str], list[list[float]]]:
    names = ["train/loss"] if series == 1 else [f"loss/head{i}" for i in range(series)]
    return names, [walk(n // series, 99 + i) for i in range(series)]


def ingest_direct(path: Path, n: int, series: int) -> float:
    """rows/s for ``n`` rows over ``series`` series via add_scalars, flushed every 1000 rows."""
    names, curves = _steps(n, series)
    every = BATCH_ROWS // series
    store = RunStore.open(path)
    t0 = time.perf_counter()
    for step in range(n // series):
        values = {names[i]: curves[i][step] for i in range(series)}
        store.add_scalars(step, step / 1000, 1.7e9 + step * 0.1, values)
        if step % every == every - 1:
            store.flush()
    store.flush()
    rate = n / (time.perf_counter() - t0)
    store.close()
    return rate


def ingest_raw_only(path: Path, n: int, series: int) -> float:
    """rows/s for the same rows written the version-1 way: no rollups, one INSERT per row."""
    names, curves = _steps(n, series)
    every = BATCH_ROWS // series
    RunStore.open(path).close()  # the schema; the rollup table stays empty
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous = NORMAL")
    con.executemany("INSERT INTO series(name) VALUES (?)", [(name,) for name in names])
    ids = {name: i + 1 for i, name in enumerate(names)}
    buffer: list = []

    def flush() -> None:  # RunStore.flush before the rollups, line for line
        con.execute("BEGIN IMMEDIATE")
        rows = []
        for step, epoch, wall, values in buffer:
            for name, value in values.items():
                rows.append((ids[name], step, epoch, wall, float(value)))
        con.executemany(
            "INSERT OR REPLACE INTO scalars(series_id, step, epoch, wall, value) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        con.execute("COMMIT")
        buffer.clear()

    t0 = time.perf_counter()
    for step in range(n // series):
        values = {names[i]: curves[i][step] for i in range(series)}
        buffer.append((step, step / 1000, 1.7e9 + step * 0.1, values))
        if step % every == every - 1:
            flush()
    if buffer:
        flush()
    rate = n / (time.perf_counter() - t0)
    con.close()
    return rate


def make_version_1(src: Path, dst: Path) -> None:
    """A copy of ``src`` as podium wrote it before the rollups (and the matrices)."""
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    con.execute("DROP TABLE rollup")
    con.execute("DROP TABLE matrices")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()


def make_many(src: Path, dst: Path, series: int) -> list[str]:
    """A copy of ``src`` whose series 1 is copied into ``series - 1`` more; their names."""
    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    names = ["train/loss"] + [f"train/loss/copy{i}" for i in range(2, series + 1)]
    for sid, name in enumerate(names[1:], start=2):
        con.execute("INSERT INTO series(id, name) VALUES (?, ?)", (sid, name))
        con.execute(
            "INSERT INTO scalars SELECT ?, step, epoch, wall, value FROM scalars "
            "WHERE series_id = 1",
            (sid,),
        )
        con.execute(
            "INSERT INTO rollup SELECT ?, level, block, n, first_step, last_step, min_step, "
            "min_value, min_wall, max_step, max_value, max_wall FROM rollup WHERE series_id = 1",
            (sid,),
        )
    con.commit()
    con.close()
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per series")
    parser.add_argument("--series", type=int, default=20, help="series for query_many")
    parser.add_argument("--tmp", type=Path, default=None, help="directory for the databases")
    parser.add_argument("--repeats", type=int, default=10, help="runs of each downsampled query")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-store-", dir=args.tmp))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Measure everything, print the table, return the figures ``bench_rows`` turns into rows."""
    n, reps = args.points, args.repeats
    print(
        f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, "
        f"{n:,} points per series, databases in {tmp}"
    )
    rows: list[tuple[str, str, str]] = []

    def row(what: str, size: str, result: str) -> None:
        rows.append((what, size, result))

    w_rate, per_submit = ingest_writer(tmp / "writer.db", n // N_SERIES)
    row("ingest StoreWriter (rollups)", f"{N_SERIES} x {n // N_SERIES:,}", f"{w_rate:,.0f} rows/s")
    row("  submit_scalars call", f"{N_SERIES} values", f"{per_submit * 1e6:.1f} us")
    ratios = []
    ingests: dict[int, tuple[float, float]] = {}  # series -> (raw rows/s, rollup rows/s)
    for series in (1, N_SERIES):
        shape = f"{series} x {n // series:,}"
        # Alternate the two so that a busy neighbour on the machine hits both alike.
        raw = ingest_raw_only(tmp / f"raw{series}.db", n, series)
        roll = ingest_direct(tmp / f"direct{series}.db", n, series)
        row("ingest add_scalars (rollups)", shape, f"{roll:,.0f} rows/s")
        row("ingest raw only (version 1)", shape, f"{raw:,.0f} rows/s")
        ratios.append(raw / roll)
        ingests[series] = (raw, roll)

    db = tmp / "direct1.db"
    make_version_1(db, tmp / "v1.db")
    reader = RunStore.open(db, readonly=True)
    old = RunStore.open(tmp / "v1.db", readonly=True)
    q: dict[tuple[str, int], float] = {}
    for mp in (2000, 500):
        q["rollup", mp], pts = timed(lambda mp=mp: reader.query("train/loss", max_points=mp), reps)
        assert len(pts) <= mp and {25.0, -25.0} <= {v for _, v in pts}, "spike or dip lost"
        row(f"query max_points={mp} rollups", f"{len(pts)} pts", f"{q['rollup', mp] * 1e3:.2f} ms")
        q["raw", mp], pts = timed(lambda mp=mp: old.query("train/loss", max_points=mp), 3)
        assert len(pts) <= mp and {25.0, -25.0} <= {v for _, v in pts}, "spike or dip lost"
        row(f"query max_points={mp} raw (v1)", f"{len(pts)} pts", f"{q['raw', mp] * 1e3:.1f} ms")
    win, pts = timed(
        lambda: reader.query("train/loss", max_points=1000, start_step=n // 3, end_step=n // 2),
        reps,
    )
    row("query max_points=1000 window", f"{len(pts)} pts", f"{win * 1e3:.2f} ms")
    full, pts = timed(lambda: reader.query("train/loss"), 3)
    assert len(pts) == n
    row("query full", f"{len(pts):,} pts", f"{full * 1e3:.1f} ms")
    old.close()
    reader.close()

    names = make_many(db, tmp / "many.db", args.series)
    many = RunStore.open(tmp / "many.db", readonly=True)
    shape = f"{args.series} x {n:,}"
    for x in ("step", "wall"):
        t, got = timed(lambda x=x: many.query_many(names, max_points=1000, x=x), reps)
        assert len(got) == args.series and all(0 < len(p) <= 1000 for p in got.values())
        row(f"query_many max_points=1000 x={x}", shape, f"{t * 1e3:.1f} ms")
        q[f"many_{x}", 1000] = t
    many.close()

    w = max(len(r[0]) for r in rows) + 2
    print(f"{'what':<{w}}{'rows':>16}{'result':>20}")
    for a, b, c in rows:
        print(f"{a:<{w}}{b:>16}{c:>20}")
    size_raw, size = (tmp / "raw1.db").stat().st_size, db.stat().st_size
    print(
        f"raw-only / rollup ingest = {ratios[0]:.2f}x (1 series), {ratios[1]:.2f}x "
        f"({N_SERIES} series); raw / rollup query = {q['raw', 2000] / q['rollup', 2000]:.0f}x "
        f"(2000 pts), {q['raw', 500] / q['rollup', 500]:.0f}x (500 pts); db {size / n:.0f} B/point "
        f"with rollups, {size_raw / n:.0f} B/point without"
    )
    return {
        "roll_1": ingests[1][1],
        "raw_1": ingests[1][0],
        f"roll_{N_SERIES}": ingests[N_SERIES][1],
        f"raw_{N_SERIES}": ingests[N_SERIES][0],
        **{f"{kind}_{mp}": secs for (kind, mp), secs in q.items()},
    }


SUITE_SIZES = {"tiny": (2_000, 3, 2), "quick": (100_000, 20, 3), "full": (1_000_000, 20, 10)}
"""Per suite size: (points per series, series for query_many, repeats of each query)."""


def bench_rows(size: str = "full") -> list[Row]:
    """The suite's rows: ingest with rollups vs raw-only, downsampled queries rollups vs raw."""
    points, series, repeats = SUITE_SIZES[size]
    args = argparse.Namespace(points=points, series=series, repeats=repeats, tmp=None)
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-store-"))
    try:
        got = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = f"python bench/bench_store.py --points {points} --series {series} --repeats {repeats}"
    label = f"{points:,} points" + ("" if size == "full" else f" ({size})")
    rows = [
        row(
            f"store ingest with rollups vs raw-only, {s} series, {label}",
            got[f"roll_{s}"],
            got[f"raw_{s}"],
            a_is="add_scalars with rollups",
            b_is="raw rows only (version 1)",
            unit="rows/s",
            command=cmd,
        )
        for s in (1, N_SERIES)
    ]
    rows += [
        row(
            f"store query max_points={mp} raw vs rollups, {label}",
            got[f"raw_{mp}"] * 1e3,
            got[f"rollup_{mp}"] * 1e3,
            a_is="raw-row downsampling (version 1)",
            b_is="rollups",
            unit="ms",
            target=">= 1",
            command=cmd,
        )
        for mp in (2000, 500)
    ]
    rows.append(
        row(
            f"store query_many {series} series max_points=1000 vs 50 ms budget, {label}",
            got["many_step_1000"] * 1e3,
            50.0,
            a_is=f"query_many of {series} series",
            b_is="the run screen's 50 ms budget",
            unit="ms",
            target="<= 1",
            command=cmd,
        )
    )
    return rows


if __name__ == "__main__":
    main()
