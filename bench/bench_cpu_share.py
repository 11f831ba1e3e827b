"""Two demo runs sharing the CPU, against one alone: podium's CPU share vs spinning threads.

Each scenario starts real ``podium train profiles/demo.toml --headless`` processes (a fixed
number of steps each) and reads their median tokens/s from their stores:

* alone: one run, podium's defaults (every usable CPU, passive OpenMP wait);
* passive: two runs started together, podium's defaults;
* shared: two runs started together with ``cpu_share = true`` (each takes its fair share);
* spinning: two runs started together, every CPU on each and spinning waits
  (``cpu_wait = "active"``: torch's own behaviour).

Prints the tokens/s of each run and the ratios (total of two runs / one alone). Run it alone on
the machine: another process's load is in every figure.

    .venv/bin/python bench/bench_cpu_share.py [--steps 120]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_rows import Row, row

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "profiles" / "demo.toml"


def _start(runs: Path, name: str, steps: int, env: dict[str, str], sets: list[str]):
    args = [sys.executable, "-m", "podium", "train", str(DEMO), "--headless", "--name", name]
    args += ["--runs-dir", str(runs), "--max-steps", str(steps)]
    for item in ["train.val_every_steps=0", *sets]:
        args += ["--set", item]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _tokens_per_s(runs: Path, name: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "podium", "metrics", name, "--json", "--runs-dir", str(runs),
         "--series", "throughput/tokens_per_s"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    points = json.loads(out)["series"]["throughput/tokens_per_s"]
    values = [v for _, v in points[len(points) // 5 :]]  # past the first steps' warm-up
    return statistics.median(values)


def _scenario(base: Path, label: str, runs_n: int, steps: int, sets: list[str]) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PODIUM_CACHE"] = str(base / "cache")
    runs = base / label
    procs = [_start(runs, f"{label}-{i}", steps, env, sets) for i in range(runs_n)]
    lines = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{label}: a run failed:\n{out}")
        lines += [ln for ln in out.splitlines() if ln.startswith("podium: CPU ")]
    rates = [_tokens_per_s(runs, f"{label}-{i}", env) for i in range(runs_n)]
    shown = " + ".join(f"{r:,.0f}" for r in rates)
    print(f"{label:<9} {shown:>18} tokens/s   ({'; '.join(line[12:] for line in lines)})")
    return rates


SMALL = ["data.n_pieces=48", "data.seq_len=96", "model.max_len=96", "train.batch_size=4"]
"""The shrunk demo of the tests: the suite measures sharing, not the model."""

SUITE_SIZES = {
    "tiny": (4, ("passive",)),
    "quick": (15, ("passive",)),
    "full": (20, ("passive", "shared", "spinning")),
}
"""Per suite size: (steps per run, the two-run scenarios measured against one alone)."""

SCENARIOS = {
    "passive": ([], "podium's defaults"),
    "shared": (["train.cpu_share=true"], "cpu_share = true"),
    "spinning": (['train.cpu_wait="active"'], 'every CPU each, cpu_wait = "active"'),
}


def bench_rows(size: str = "full") -> list[Row]:
    """Total tokens/s of two runs started together over one run alone (real ``podium train``
    processes, their median tokens/s read from their stores)."""
    steps, scenarios = SUITE_SIZES[size]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        base = Path(tmp)
        _scenario(base, "warm-up", 1, 3, SMALL)  # the demo corpus, generated once
        one = _scenario(base, "alone", 1, steps, SMALL)[0]
        for label in scenarios:
            sets, what = SCENARIOS[label]
            pair = _scenario(base, label, 2, steps, [*SMALL, *sets])
            rows.append(
                row(
                    f"two concurrent runs vs one alone, {label}, demo (shrunk)"
                    + ("" if size == "full" else f" ({size})"),
                    sum(pair),
                    one,
                    a_is=f"total tokens/s of two runs started together, {what}",
                    b_is="tokens/s of one run alone, podium's defaults",
                    unit="tok/s",
                    command=f"python bench/bench_cpu_share.py --steps {steps}",
                    note=f"the two: {pair[0]:,.0f} + {pair[1]:,.0f} tok/s",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs, {args.steps} steps of the demo per run, {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        base = Path(tmp)
        _scenario(base, "warm-up", 1, 5, [])  # the demo corpus, generated once
        alone = _scenario(base, "alone", 1, args.steps, [])
        passive = _scenario(base, "passive", 2, args.steps, [])
        shared = _scenario(base, "shared", 2, args.steps, ["train.cpu_share=true"])
        spinning = _scenario(base, "spinning", 2, args.steps, ['train.cpu_wait="active"'])
    one = alone[0]
    for label, pair in (("passive", passive), ("shared", shared), ("spinning", spinning)):
        total = sum(pair)
        print(f"two runs, {label:<8}: total {total / one:.2f} x one alone, "
              f"{total / sum(spinning):.2f} x spinning")  # fmt: skip


if __name__ == "__main__":
    main()
