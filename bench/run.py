"""podium's benchmark suite: every benchmark of bench/, one table of ratios measured side by side.

Each suite below is one ``bench_*.py`` script's ``bench_rows(size)``, run in a fresh interpreter
of its own (so one benchmark's threads, OpenMP team and allocator state never reach the next),
returning rows: two figures measured in that one run, their ratio, the target and the command
that reproduces it (``report_rows.py``). This runner adds the machine, torch version, device, git
commit and date, prints one table, and with ``--json`` writes the report so that two commits can
be compared.

    python bench/run.py [--quick] [--json OUT] [--only SUITE...]      (or: podium bench ...)
    python bench/run.py --compare A.json B.json
    python bench/run.py --list

``--quick`` (smaller sizes, fewer rounds; rows say "(quick)" where the size differs) is meant to
finish in under 5 minutes on a 2-core machine, the full suite in under 15. ``--tiny`` is for the
runner's own tests: sizes so small the figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCHEMA = 1

SUITES: dict[str, tuple[str, str]] = {
    "engine": ("bench_trainer", "engine step vs a bare torch loop, per family"),
    "dashboard": ("bench_dashboard", "training with the dashboard attached vs headless"),
    "telemetry": ("bench_telemetry", "training with the GPU telemetry thread on vs off"),
    "store": ("bench_store", "metrics store ingest and downsampled queries"),
    "attention": ("bench_linear_attention", "attention backends forward+backward"),
    "generation": ("bench_generate", "generation with recurrent state / KV caches vs recompute"),
    "prepare": ("bench_prepare", "podium prepare vs miditok"),
    "cpu_share": ("bench_cpu_share", "two concurrent runs vs one"),
}
"""Suite name -> (module in bench/, what it measures), in the order they run."""

SIZES = ("tiny", "quick", "full")


class BenchError(Exception):
    """Bad input to the runner (a report file, a suite name): one line, exit 2."""


# -- the machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        out = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Where the figures were measured: every report carries it (a ratio means little without)."""
    from podium.engine.cpu_share import usable_cpus

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return {
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores_usable": usable_cpus(),
        "cores_online": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch_version,
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# -- running suites ----------------------------------------------------------------------------


OWN_THREADS = {"cpu_share"}
"""Suites that measure podium's own thread choice (their runs start with podium's defaults)."""


def _child(suite: str, size: str, out: Path, threads: int) -> None:
    """In a fresh interpreter: one suite's rows (and the device it ran on) as JSON into ``out``."""
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(SUITES[suite][0])
    if threads and suite not in OWN_THREADS and "torch" in sys.modules:  # store needs no torch
        import torch

        torch.set_num_threads(threads)
    rows = module.bench_rows(size)
    device, threads_used = "cpu", None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        threads_used = torch.get_num_threads()
    for r in rows:
        r["device"], r["torch_threads"] = device, threads_used
    out.write_text(json.dumps({"rows": rows, "device": device}))


def run_suite(
    suite: str, size: str, timeout: float, threads: int
) -> tuple[list[dict[str, Any]], str, float]:
    """(rows, device, wall seconds) of one suite; a failure becomes one row that says so."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", suite, "--size", size]
        cmd += ["--child-out", str(out), "--threads", str(threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            failure = "" if proc.returncode == 0 and out.exists() else _last_line(proc.stderr)
        except subprocess.TimeoutExpired:
            failure = f"did not finish in {timeout:.0f} s"
        wall = time.perf_counter() - t0
        if failure:
            return [_failed_row(suite, size, failure)], "", wall
        got = json.loads(out.read_text())
    return got["rows"], got["device"], wall


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "failed without a message"


def _failed_row(suite: str, size: str, why: str) -> dict[str, Any]:
    from report_rows import skipped

    row = skipped(f"{suite}: FAILED", why, command=_command(size, [suite]))
    row["ok"] = False
    return row


def _command(size: str, only: list[str]) -> str:
    flag = {"quick": " --quick", "tiny": " --tiny", "full": ""}[size]
    return f"podium bench{flag} --only {' '.join(only)}"


# -- the table ----------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _verdict(ok: bool | None) -> str:
    return {True: "ok", False: "MISS", None: ""}[ok]


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"podium bench ({report['size']}): {m['hostname']}, {m['cpu']}, {m['cores_usable']} usable "
        f"cores (load {m['load_average']}), torch {m['torch']}, device {report['device']} "
        f"(torch threads: {report['torch_threads']}), "
        f"commit {m['git_commit']}, {m['date']}"
    )
    rows = report["rows"]
    w = max([len(r["name"]) for r in rows] + [4])
    print(
        f"{'name':<{w}}  {'a':>10}  {'b':>10}  {'unit':<7} {'ratio':>8}  {'target':<7} ok    note"
    )
    for r in rows:
        if r["ratio"] is None:
            print(f"{r['name']:<{w}}  {r['note']}  {_verdict(r['ok'])}")
            continue
        print(
            f"{r['name']:<{w}}  {_fmt(r['a']):>10}  {_fmt(r['b']):>10}  {r['unit']:<7} "
            f"{_fmt(r['ratio']):>8}  {r['target'] or '':<7} {_verdict(r['ok']):<4}  {r['note']}"
        )
    walls = ", ".join(f"{k} {v:.0f} s" for k, v in report["wall_s"].items())
    print(f"wall time {report['total_wall_s']:.0f} s ({walls})")


# -- comparing two reports ----------------------------------------------------------------------


def load_report(path: Path) -> dict[str, Any]:
    """A report written by ``--json``; BenchError (one line) for anything else."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BenchError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BenchError(f"{path}: not a podium bench report (no 'rows' list)")
    for i, r in enumerate(data["rows"]):
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or "ratio" not in r:
            raise BenchError(f"{path}: row {i} is not a bench row (needs 'name' and 'ratio')")
        if r["ratio"] is not None and not isinstance(r["ratio"], (int, float)):
            raise BenchError(f"{path}: row {r['name']!r}: ratio must be a number or null")
    return data


def compare(a_path: Path, b_path: Path) -> None:
    """Two reports side by side, rows matched by name, with the change of each ratio."""
    a, b = load_report(a_path), load_report(b_path)
    for tag, path, rep in (("A", a_path, a), ("B", b_path, b)):
        m = rep.get("machine", {})
        print(
            f"{tag}: {path} ({rep.get('size', '?')}), commit {m.get('git_commit', '?')}, "
            f"{m.get('hostname', '?')}, torch {m.get('torch', '?')}, {rep.get('device', '?')}, "
            f"{m.get('date', '?')}"
        )
    rows_a = {r["name"]: r for r in a["rows"]}
    rows_b = {r["name"]: r for r in b["rows"]}
    names = list(rows_a) + [n for n in rows_b if n not in rows_a]
    w = max([len(n) for n in names] + [4])
    print(f"{'name':<{w}}  {'ratio A':>9}  {'ratio B':>9}  {'change':>8}  target   ok A/B")
    for name in names:
        ra, rb = rows_a.get(name), rows_b.get(name)
        x = ra["ratio"] if ra else None
        y = rb["ratio"] if rb else None
        if ra is None:
            change = "only in B"
        elif rb is None:
            change = "only in A"
        elif x is None or y is None or x == 0:
            change = "-"
        else:
            change = f"{100 * (y / x - 1):+.1f}%"
        target = (rb or ra).get("target") or ""
        oks = f"{_verdict(ra.get('ok')) if ra else '-'}/{_verdict(rb.get('ok')) if rb else '-'}"
        print(f"{name:<{w}}  {_fmt(x):>9}  {_fmt(y):>9}  {change:>8}  {target:<7}  {oks}")


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="podium bench", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (< 5 min on 2 cores)")
    size.add_argument(
        "--tiny", action="store_true", help="smoke sizes for tests; figures mean nothing"
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON to OUT")
    p.add_argument(
        "--only", nargs="+", metavar="SUITE", help=f"run only these: {', '.join(SUITES)}"
    )
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    p.add_argument("--list", action="store_true", help="list the suites")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per suite")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the in-process suites (default 1: a shared machine skews the "
        "ratios less; 0 = torch's default); cpu_share keeps podium's own",
    )
    p.add_argument("--child", choices=sorted(SUITES), help=argparse.SUPPRESS)
    p.add_argument("--size", choices=SIZES, default="full", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.size, args.child_out, args.threads)
        return 0
    if args.list:
        for name, (module, what) in SUITES.items():
            print(f"{name:<11} {what} (bench/{module}.py)")
        return 0
    if args.compare:
        compare(*args.compare)
        return 0
    only = args.only or list(SUITES)
    unknown = [s for s in only if s not in SUITES]
    if unknown:
        raise BenchError(f"--only: no suite {', '.join(unknown)} (suites: {', '.join(SUITES)})")
    if args.json is not None and not args.json.parent.is_dir():
        raise BenchError(f"--json {args.json}: no directory {args.json.parent}")
    chosen = "quick" if args.quick else "tiny" if args.tiny else "full"
    report: dict[str, Any] = {"schema": SCHEMA, "size": chosen, "machine": machine()}
    rows: list[dict[str, Any]] = []
    walls: dict[str, float] = {}
    devices: list[str] = []
    t0 = time.perf_counter()
    for i, suite in enumerate(only, 1):
        print(f"[{i}/{len(only)}] {suite}: {SUITES[suite][1]} ...", file=sys.stderr, flush=True)
        got, device, walls[suite] = run_suite(suite, chosen, args.timeout, args.threads)
        if device and device not in devices:
            devices.append(device)
        for r in got:
            r.setdefault("suite", suite)
            r["suite_command"] = _command(chosen, [suite])
            # Every row names where it was measured, so a row copied out of the report still says.
            r["machine"] = f"{report['machine']['hostname']} ({report['machine']['cpu']})"
            r["torch"] = report["machine"]["torch"]
        rows += got
        print(f"      {walls[suite]:.0f} s, {len(got)} rows", file=sys.stderr, flush=True)
    report |= {
        "device": "; ".join(devices) or "cpu",
        "torch_threads": ", ".join(
            f"{s} {t}"
            for s, t in dict.fromkeys((r["suite"], r.get("torch_threads")) for r in rows)
            if t is not None
        ),
        "rows": rows,
        "wall_s": walls,
        "total_wall_s": time.perf_counter() - t0,
        "command": "podium bench" + _command(chosen, only)[len("podium bench") :],
    }
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.json}")
    # A target missed on a loaded machine is a figure to read, not a failure; a crash is.
    return 1 if any(r["name"].endswith(": FAILED") for r in rows) else 0


def entry() -> int:
    try:
        return main()
    except BenchError as exc:
        sys.stderr.write(f"podium bench: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("podium bench: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(entry())
