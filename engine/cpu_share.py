"""How many CPU threads a run may use on a shared host, and how its threads wait.

A shared server runs several jobs at once. Measured on a 2-core VM with the demo profile: alone
21.1k tokens/s; two runs at once 8.3k + 6.1k; the same pair with ``OMP_WAIT_POLICY=PASSIVE``
10.7k + 10.9k; with one thread each 12.5k + 12.9k; and with three torch processes on the two
cores one run fell from 15.8k to ~400 tokens/s, its OpenMP threads spin-waiting against the
others'. So a run sizes its intra-op threads from the CPUs it may use (affinity, the cgroup's
quota), and its OpenMP threads sleep while they wait (passive) unless the profile asks for
spinning (a machine of its own). Dividing the CPUs among the podium runs already on the host is
a profile choice (``cpu_share``), not the default: the thread count would then follow the host's
load, and on CPU a different count changes results in their last bits, so a resume or a rerun
would no longer repeat the numbers of the run it continues.

The wait policy is read by OpenMP when torch is imported, so ``apply_wait_policy`` runs before
that (``podium train``/``resume`` load the profile without torch); a process that has imported
torch already keeps the policy it started with, and says so.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

WaitPolicy = Literal["passive", "active"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
_TRAINING_WORDS = ("train", "resume")


@dataclass(frozen=True)
class CpuPlan:
    """The CPU share a run took: what it saw and what it chose."""

    usable: float
    """CPUs this process may run on: its affinity, capped by its cgroup's quota."""
    others: int
    """Other podium training processes on this host when the run started."""
    threads: int
    """Intra-op threads (torch.set_num_threads) for each rank of this run."""
    ranks: int
    wait_policy: str
    """The OpenMP wait policy in force ("passive", "active", or as the environment set it)."""
    note: str = ""
    """Why the wait policy is not the profile's, when it is not."""

    def describe(self) -> str:
        """One line for the dashboard and the start of a headless run."""
        usable = f"{self.usable:g}" if self.usable != int(self.usable) else str(int(self.usable))
        others = {0: "no other run", 1: "1 other run"}.get(self.others, f"{self.others} other runs")
        per = f" per rank x {self.ranks}" if self.ranks > 1 else ""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}{per}"
        return f"{threads} of {usable} CPUs ({others}) · {self.wait_policy} wait"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def usable_cpus(
    cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = PROC / "self" / "cgroup"
) -> float:
    """The CPUs this process may use: ``sched_getaffinity``, capped by a cgroup CPU quota (v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us``), which containers and Slurm set."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(cpus, 1.0)


def _cgroup_quota(root: Path, self_cgroup: Path) -> float | None:
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: cpu.max along the path, the tightest wins
            here = root / rel
            while True:
                quotas += _v2_quota(here / "cpu.max")
                if here == root or root not in here.parents:
                    break
                here = here.parent
        elif "cpu" in controllers.split(","):
            for base in (root / "cpu,cpuacct", root / "cpu"):
                quota = _v1_quota(base / rel)
                if quota is not None:
                    quotas.append(quota)
                    break
    return min(quotas) if quotas else None


def _v2_quota(path: Path) -> list[float]:
    try:
        words = path.read_text().split()
    except OSError:
        return []
    if len(words) != 2 or words[0] == "max":
        return []
    try:
        return [int(words[0]) / int(words[1])]
    except (ValueError, ZeroDivisionError):
        return []


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def other_podium_runs(proc: Path = PROC, me: int | None = None) -> int:
    """How many podium runs train on this host besides this process's (``training_pids``)."""
    return len(training_pids(proc, me))


def training_pids(proc: Path = PROC, me: int | None = None) -> list[int]:
    """Podium processes training on this host (``podium train``/``resume``; a DDP run counts
    once, by its rank 0), other than this one, its ancestors and its children: read from
    ``/proc/*/cmdline``, which every user can read on a stock Linux (with ``hidepid`` only
    one's own show)."""
    me = os.getpid() if me is None else me
    mine = _ancestors(proc, me)
    found: list[int] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if _is_training(argv) and not _is_descendant(proc, int(entry.name), me):
            found.append(int(entry.name))
    return sorted(found)


def _is_training(argv: list[bytes]) -> bool:
    words = [a.decode(errors="replace") for a in argv if a]
    if "podium.engine.rank_worker" in words:
        return False  # a worker of some run: its run's rank 0 is counted already
    for i, word in enumerate(words):
        if (
            word == "podium"
            or word.endswith("/podium")
            or (word == "-m" and i + 1 < len(words) and words[i + 1] == "podium")
        ):
            rest = words[i + 1 :]
            rest = rest[1:] if rest[:1] == ["podium"] else rest
            return bool(rest) and rest[0] in _TRAINING_WORDS
    return False


def _parent(proc: Path, pid: int) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def _ancestors(proc: Path, pid: int) -> set[int]:
    seen = {pid}
    current: int | None = pid
    while current and current > 1 and len(seen) < 256:
        current = _parent(proc, current)
        if current is None or current in seen:
            break
        seen.add(current)
    return seen


def _is_descendant(proc: Path, pid: int, ancestor: int) -> bool:
    return ancestor in _ancestors(proc, pid) - {pid}


def plan_threads(usable: float, others: int, ranks: int = 1) -> int:
    """Intra-op threads per rank: this run's fair share of the usable CPUs, at least one."""
    share = usable / (max(others, 0) + 1)
    return max(1, math.floor(share / max(ranks, 1)))


_APPLIED_NOTE = ""


def apply_wait_policy(policy: WaitPolicy) -> str:
    """Set ``OMP_WAIT_POLICY`` for this process before torch loads OpenMP. The user's own
    environment wins; returns the policy in force."""
    global _APPLIED_NOTE
    env = os.environ.get("OMP_WAIT_POLICY")
    if env:
        if env.lower() != policy:
            _APPLIED_NOTE = f"OMP_WAIT_POLICY={env} in the environment"
        return env.lower()
    if "torch" in sys.modules:
        _APPLIED_NOTE = "torch was loaded before the profile (OpenMP's default applies)"
        return "openmp default"
    os.environ["OMP_WAIT_POLICY"] = policy.upper()
    _APPLIED_NOTE = ""
    return policy


_CURRENT: CpuPlan | None = None


def _env_threads() -> int | None:
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def share_cpus(
    policy: WaitPolicy, *, threads: int = 0, ranks: int = 1, share: bool = False
) -> CpuPlan:
    """Choose and apply this run's intra-op threads: the profile's fixed number (``threads``
    > 0), else ``OMP_NUM_THREADS`` when the user set it, else the usable CPUs divided among the
    ranks and, with ``share``, among the podium runs already training here. Call with torch
    importable; the wait policy was applied before it loaded."""
    global _CURRENT
    import torch

    usable = usable_cpus()
    others = other_podium_runs()
    asked = _env_threads()
    if threads > 0:
        chosen = threads
    elif asked is not None:  # the user's own OMP_NUM_THREADS
        chosen = asked
    else:  # a fair share of the host only when asked: it makes the count depend on the load
        chosen = plan_threads(usable, others if share else 0, ranks)
    torch.set_num_threads(chosen)
    env = os.environ.get("OMP_WAIT_POLICY", "")
    in_force = env.lower() if env else "openmp default"
    _CURRENT = CpuPlan(
        usable=usable,
        others=others,
        threads=chosen,
        ranks=ranks,
        wait_policy=in_force,
        note=_APPLIED_NOTE if in_force != policy else "",
    )
    return _CURRENT


def current_plan() -> CpuPlan | None:
    """The plan of the run this process trains (None before one started)."""
    return _CURRENT


MAX_AUTO_LOADER_WORKERS = 4
"""A GPU run's data comes from prepared token arrays: a few workers keep it fed; more only
take CPUs other runs on the host could use."""


def loader_workers(requested: int, device_type: str, plan: CpuPlan | None = None) -> int:
    """DataLoader workers for ``train.num_workers`` (-1 = auto) on a ``device_type`` run.

    Auto is 0 on the CPU, where every usable CPU already runs an intra-op thread, and on a GPU
    this rank's share of the usable CPUs (as the run's CPU plan saw them) less the one the
    training thread needs, at most ``MAX_AUTO_LOADER_WORKERS``."""
    if requested >= 0:
        return requested
    if device_type != "cuda":
        return 0
    plan = plan if plan is not None else current_plan()
    usable = plan.usable if plan is not None else usable_cpus()
    ranks = plan.ranks if plan is not None else 1
    return max(0, min(MAX_AUTO_LOADER_WORKERS, int(usable / max(ranks, 1)) - 1))
