"""Sharing a CPU politely: the CPUs a run may use, the podium runs already on the host, the
threads it takes, and an OpenMP wait policy set before torch loads."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.engine.cpu_share import (
    CpuPlan,
    other_podium_runs,
    plan_threads,
    training_pids,
    usable_cpus,
)
from tests.podium_cli import ROOT, podium


def _cgroup_v2(tmp_path: Path, cpu_max: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, value in cpu_max.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cpu.max").write_text(value + "\n")
    me = tmp_path / "self-cgroup"
    me.write_text("0::/user.slice/job\n")
    return root, me


def test_a_cgroup_quota_caps_the_usable_cpus(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    root, me = _cgroup_v2(tmp_path, {"user.slice/job": "max 100000"})
    assert usable_cpus(root, me) == affinity  # no quota: the affinity
    root, me = _cgroup_v2(tmp_path / "a", {"user.slice/job": "50000 100000", "user.slice": "max"})
    assert usable_cpus(root, me) == 1.0  # half a CPU is still one thread's worth
    if affinity >= 2:
        root, me = _cgroup_v2(
            tmp_path / "b", {"user.slice/job": "max 100000", "user.slice": "150000 100000"}
        )
        assert usable_cpus(root, me) == 1.5  # a parent's quota binds its children
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "slurm").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "slurm" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "slurm" / "cpu.cfs_period_us").write_text("100000\n")
    me1 = tmp_path / "self-v1"
    me1.write_text("4:cpu,cpuacct:/slurm\n")
    assert usable_cpus(v1, me1) == 1.0


def test_threads_are_a_fair_share_and_never_zero():
    assert plan_threads(2, 0) == 2
    assert plan_threads(2, 1) == 1
    assert plan_threads(2, 5) == 1
    assert plan_threads(16, 3) == 4
    assert plan_threads(16, 1, ranks=2) == 4
    assert plan_threads(1.5, 0) == 1


def _orphan(argv: list[str]) -> int:
    """Start ``argv`` detached from this process (its shell parent exits), as another user's
    run would be: not this process's child, which the count leaves out as its own."""
    quoted = " ".join(shlex.quote(a) for a in argv)
    out = subprocess.run(
        ["sh", "-c", f"{quoted} >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    return int(out.stdout.strip())


def test_podium_runs_on_the_host_are_counted_from_their_command_lines():
    # Real processes whose command lines read as podium's would (they only sleep).
    sleeper = "import time; time.sleep(60)"
    looks = [
        [sys.executable, "-c", sleeper, "-m", "podium", "train", "profiles/demo.toml"],
        [sys.executable, "-c", sleeper, "-m", "podium", "resume", "demo-1"],
        [sys.executable, "-c", sleeper, "-m", "podium", "attach", "demo-1"],  # not training
        [sys.executable, "-c", sleeper, "-m", "podium.engine.rank_worker"],  # a run's worker
    ]
    pids = [_orphan(argv) for argv in looks]
    mine = subprocess.Popen(looks[0])  # this process's own child: part of its own run
    try:
        found = training_pids()
        assert [pid in found for pid in pids] == [True, True, False, False]
        assert mine.pid not in found and os.getpid() not in found
        assert other_podium_runs() >= 2
    finally:
        mine.kill()
        mine.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while set(pids) & set(training_pids()) and time.monotonic() < deadline:
        time.sleep(0.05)  # init reaps them
    assert not set(pids) & set(training_pids())


def test_the_plan_reads_as_one_line():
    plan = CpuPlan(usable=2.0, others=1, threads=1, ranks=1, wait_policy="passive")
    assert plan.describe() == "1 thread of 2 CPUs (1 other run) · passive wait"
    many = CpuPlan(usable=1.5, others=3, threads=1, ranks=2, wait_policy="active")
    assert many.describe() == "1 thread per rank x 2 of 1.5 CPUs (3 other runs) · active wait"


def _policy_in_child(env: dict[str, str], policy: str) -> str:
    code = (
        "import os, sys\n"
        "from podium.engine.cpu_share import apply_wait_policy\n"
        f"print(apply_wait_policy({policy!r}), os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_wait_policy_is_set_before_torch_and_the_environment_wins():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_in_child(env, "passive") == "passive PASSIVE"
    assert _policy_in_child(env, "active") == "active ACTIVE"
    assert _policy_in_child({**env, "OMP_WAIT_POLICY": "active"}, "passive") == "active active"


@pytest.mark.slow
def test_a_run_says_the_share_it_took(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PODIUM_CACHE"] = str(tmp_path / "cache")
    toy = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
    common = ["--headless", "--runs-dir", str(tmp_path / "runs"), "--max-steps", "2"]
    out = podium("train", toy, *common, "--set", "train.cpu_threads=1", env=env).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("podium: CPU "))
    assert line.startswith("podium: CPU 1 thread of ") and line.endswith("· passive wait"), line
    pattern = r"podium: CPU (\d+) threads? of ([\d.]+) CPUs \((no|\d+) other runs?\)"
    # By default every usable CPU, whatever else runs: the same count on a busy host or a
    # quiet one, so a rerun or a resume repeats the numbers.
    out = podium("train", toy, *common, "--set", 'train.cpu_wait="active"', env=env).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("podium: CPU "))
    m = re.match(pattern, line)
    assert m and line.endswith("· active wait"), line
    assert float(m[2]) == usable_cpus() and int(m[1]) == plan_threads(usable_cpus(), 0), line
    # cpu_share: a fair share of the host among the podium runs training on it.
    out = podium("train", toy, *common, "--set", "train.cpu_share=true", env=env).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("podium: CPU "))
    m = re.match(pattern, line)
    assert m, line
    threads, usable, others = int(m[1]), float(m[2]), 0 if m[3] == "no" else int(m[3])
    assert usable == usable_cpus() and threads == plan_threads(usable, others), line
