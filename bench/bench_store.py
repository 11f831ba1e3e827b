"""Metrics store: ingest rate, and downsampled against full queries of a 1M-point series.

Everything is measured in this one run, on fresh SQLite files under ``--tmp``:

1. ingest through ``StoreWriter`` as the trainer feeds it: one ``submit_scalars`` per step with
   10 series per step, then ``flush()``; reports rows/s end to end and the submitting thread's
   cost per call (what the training loop pays);
2. ingest of one series of ``--points`` rows through ``RunStore.add_scalars`` + ``flush`` every
   1000 rows (the writer thread's batch size); this series is the one queried next;
3. from a read-only connection (as the dashboard reads): ``query(series, max_points=2000)``
   (median of ``--repeats``), a full ``query(series)``, their ratio, and, for reference, the
   textbook ``GROUP BY bucket`` with min()/max() that ``engine/store.py`` does not use.

    .venv/bin/python bench/bench_store.py [--points 1000000] [--tmp DIR] [--repeats 10]
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

from engine.store import RunStore, StoreWriter

N_SERIES = 10

# The obvious SQL for min/max per bucket; SQLite sorts every row into a temp b-tree for it.
_GROUP_BY = """
SELECT step, value FROM (
    SELECT (step - :lo) * :nb / :span AS b, step, min(value) AS value FROM scalars
    WHERE series_id = :sid GROUP BY b
) UNION SELECT step, value FROM (
    SELECT (step - :lo) * :nb / :span AS b, step, max(value) AS value FROM scalars
    WHERE series_id = :sid GROUP BY b
) ORDER BY step
"""


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def walk(n: int, seed: int) -> list[float]:
    """A noisy decaying loss curve with one spike, like a real one."""
    rng = random.Random(seed)
    vals = [2.0 * math.exp(-i / (n / 3)) + 0.5 + rng.gauss(0, 0.02) for i in range(n)]
    vals[n * 2 // 3] = 25.0
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


def ingest_direct(path: Path, n: int) -> float:
    """rows/s for one series of ``n`` rows via add_scalars, flushed every 1000 rows."""
    curve = walk(n, 99)
    store = RunStore.open(path)
    t0 = time.perf_counter()
    for step in range(n):
        store.add_scalars(step, step / 1000, 1.7e9 + step * 0.1, {"train/loss": curve[step]})
        if step % 1000 == 999:
            store.flush()
    store.flush()
    rate = n / (time.perf_counter() - t0)
    store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--tmp", type=Path, default=None, help="directory for the databases")
    parser.add_argument("--repeats", type=int, default=10, help="runs of the downsampled query")
    parser.add_argument("--max-points", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-store-", dir=args.tmp))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    n = args.points
    print(
        f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, "
        f"{n:,} points, databases in {tmp}"
    )
    w_rate, per_submit = ingest_writer(tmp / "writer.db", n // N_SERIES)
    d_rate = ingest_direct(tmp / "direct.db", n)

    reader = RunStore.open(tmp / "direct.db", readonly=True)
    ds_time, ds = timed(
        lambda: reader.query("train/loss", max_points=args.max_points), args.repeats
    )
    full_time, full = timed(lambda: reader.query("train/loss"), max(3, args.repeats // 3))
    con = sqlite3.connect(f"file:{tmp / 'direct.db'}?mode=ro", uri=True)
    params = {"sid": 1, "lo": 0, "span": n, "nb": args.max_points // 2}
    gb_time, gb = timed(lambda: con.execute(_GROUP_BY, params).fetchall(), 3)
    con.close()
    reader.close()
    assert len(full) == n and len(ds) <= args.max_points
    assert max(v for _, v in ds) == 25.0  # the spike survived
    assert ds == [(s, v) for s, v in gb], "store and reference GROUP BY disagree"

    size = (tmp / "direct.db").stat().st_size
    rows = [
        ("ingest StoreWriter", f"{N_SERIES} x {n // N_SERIES:,}", f"{w_rate:,.0f} rows/s"),
        ("  submit_scalars call", "10 values", f"{per_submit * 1e6:.1f} us"),
        ("ingest add_scalars", f"1 x {n:,}", f"{d_rate:,.0f} rows/s"),
        (f"query max_points={args.max_points}", f"{len(ds)} pts", f"{ds_time * 1e3:.1f} ms"),
        ("query full", f"{len(full):,} pts", f"{full_time * 1e3:.1f} ms"),
        ("ref: GROUP BY min/max", f"{len(gb)} pts", f"{gb_time * 1e3:.1f} ms"),
    ]
    w = max(len(r[0]) for r in rows) + 2
    print(f"{'what':<{w}}{'rows':>16}{'result':>20}")
    for a, b, c in rows:
        print(f"{a:<{w}}{b:>16}{c:>20}")
    print(
        f"full / downsampled = {full_time / ds_time:.1f}x; GROUP BY / downsampled = "
        f"{gb_time / ds_time:.1f}x; db {size / 1e6:.1f} MB ({size / n:.0f} B/row)"
    )


if __name__ == "__main__":
    main()
