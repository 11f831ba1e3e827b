"""Training under a launcher that starts every rank itself: torchrun (one agent per node) or
Slurm's srun (one task per rank).

    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --master-addr HOST0 --master-port 29500 \\
        -m podium train profiles/X.toml --headless          # the same line on each node
    srun podium train profiles/X.toml --headless            # MASTER_ADDR/PORT set by the batch script

podium then reads the launcher's environment (``detect_world``) instead of starting its own
workers (``podium.engine.distributed.start_ranks``):

- torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` (the
  node), ``MASTER_ADDR``/``MASTER_PORT``; ``TORCHELASTIC_RUN_ID`` names it torchrun. The
  rendezvous (``torch.distributed.rendezvous("env://")``) then uses torchrun's agent store.
- Slurm: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (or ``SLURM_NTASKS``), ``SLURM_LOCALID``,
  ``SLURM_NODEID``, ``SLURM_STEP_TASKS_PER_NODE`` (or ``SLURM_TASKS_PER_NODE``) and the node
  list; Slurm sets no rendezvous address, so the batch script exports ``MASTER_ADDR`` (the first
  host of the allocation) and ``MASTER_PORT``, and rank 0 hosts the store there.

Every rank joins one store (``join_world``). Rank 0 is podium's usual rank 0: it creates or
resumes the run, owns the run directory, the store, checkpoints, the control socket and the
events, and publishes a ``LaunchJob`` (the resolved profile, the checkpoint resumed, the run id,
the backend) in the store; the other ranks wait for it (``podium.engine.rank_worker.follow``)
and train exactly like the workers podium starts itself (the same ``train_follower``), writing
nothing. A
rank 0 that fails before the job is out says why in the store, and every other rank exits with
that reason instead of waiting.

GPUs: each node's first local rank chooses and leases the node's GPUs (one per local rank, never
a reserved one: ``podium.engine.gpus``) before CUDA starts anywhere on the node, and publishes
their UUIDs; every local rank hides the others from CUDA and trains on ``cuda:LOCAL_RANK``.

The run directory's ``world.json`` records each session's world: launcher, nodes, hosts, ranks.

Limits: every node must see the runs directory, the profile's data and the cache at the same
paths (a shared file system, as usual under Slurm): the other ranks read the checkpoint being
resumed from rank 0's path. No elastic membership: a rank that fails ends the run (resume it,
with any world size).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from podium.engine.errors import RunError

if TYPE_CHECKING:
    import torch.distributed as dist

    from podium.engine.distributed import WorkerJob
    from podium.engine.gpus.select import Placement

LauncherKind = Literal["torchrun", "env", "slurm"]

JOIN_TIMEOUT = timedelta(minutes=10)
"""How long a rank waits for the others to reach the rendezvous."""

NODE_GPUS_TIMEOUT_S = 600.0
"""How long a node's other ranks wait for its first local rank to choose the node's GPUs."""

WORLD_FILE = "world.json"
"""In the run directory: one entry per session (start, each resume) that ran with a world."""


@dataclass(frozen=True, kw_only=True)
class LauncherWorld:
    """This process's place in a world a launcher started (read from its environment)."""

    kind: LauncherKind
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    nodelist: str = ""
    """Slurm's node list as Slurm writes it (``node[01-04]``); empty under torchrun."""
    restart: int = 0
    """torchrun's restart count: a restarted group must not read the last attempt's keys."""

    @property
    def is_lead(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        return {"torchrun": "torchrun", "env": "RANK/WORLD_SIZE", "slurm": "srun"}[self.kind]


def _int(env: Mapping[str, str], name: str, where: str, *, low: int = 0) -> int:
    text = env.get(name, "").strip()
    if not text:
        raise RunError(f"{where}: {name} is not set; the launcher's environment is incomplete")
    if not text.isdigit() or int(text) < low:
        raise RunError(f"{where}: {name}={text!r} must be a whole number >= {low}")
    return int(text)


def _master(env: Mapping[str, str], where: str, fix: str) -> tuple[str, int]:
    addr = env.get("MASTER_ADDR", "").strip()
    if not addr:
        raise RunError(f"{where}: MASTER_ADDR is not set; {fix}")
    port = _int(env, "MASTER_PORT", where, low=1)
    if port > 65535:
        raise RunError(f"{where}: MASTER_PORT={port} is not a TCP port (1-65535)")
    return addr, port


def tasks_per_node(text: str) -> list[int]:
    """Slurm's compact task counts per node: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``.

    Raises:
        ValueError: not in Slurm's format.
    """
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            raise ValueError(part)
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


SLURM_FIX = (
    "export it in the batch script before srun, e.g. "
    "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) (see README)"
)


def detect_world(environ: Mapping[str, str] | None = None) -> LauncherWorld | None:
    """The launcher's world, or None when podium was not started by one (or as its only rank).

    ``RANK``/``WORLD_SIZE`` (torchrun, or set by hand) win over ``SLURM_*``: torchrun started
    inside a Slurm job is torchrun's world.

    Raises:
        RunError: the environment names a world but is incomplete or inconsistent (one line
            naming the variable).
    """
    env = os.environ if environ is None else environ
    if env.get("RANK", "").strip() or env.get("WORLD_SIZE", "").strip():
        kind: LauncherKind = "torchrun" if env.get("TORCHELASTIC_RUN_ID") else "env"
        where = "torchrun" if kind == "torchrun" else "RANK/WORLD_SIZE environment"
        world = _int(env, "WORLD_SIZE", where, low=1)
        rank = _int(env, "RANK", where)
        if world == 1:
            return None
        local_rank = _int(env, "LOCAL_RANK", where)
        local_world = _int(env, "LOCAL_WORLD_SIZE", where, low=1)
        node = (
            _int(env, "GROUP_RANK", where)
            if env.get("GROUP_RANK", "").strip()
            else rank // local_world
        )
        addr, port = _master(env, where, "set MASTER_ADDR and MASTER_PORT (torchrun sets them)")
        restart = _int(env, "TORCHELASTIC_RESTART_COUNT", where) if kind == "torchrun" else 0
        nodelist = ""
    elif env.get("SLURM_PROCID", "").strip():
        where = "srun (SLURM_* environment)"
        name = "SLURM_STEP_NUM_TASKS" if env.get("SLURM_STEP_NUM_TASKS") else "SLURM_NTASKS"
        world = _int(env, name, where, low=1)
        if world == 1:
            return None  # one task (an interactive srun shell): podium as usual
        kind, rank = "slurm", _int(env, "SLURM_PROCID", where)
        local_rank = _int(env, "SLURM_LOCALID", where)
        node = _int(env, "SLURM_NODEID", where)
        per_node_name = next(
            (n for n in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if env.get(n)), None
        )
        if per_node_name is None:
            raise RunError(f"{where}: SLURM_STEP_TASKS_PER_NODE is not set; start podium with srun")
        try:
            counts = tasks_per_node(env[per_node_name])
        except ValueError:
            raise RunError(
                f"{where}: {per_node_name}={env[per_node_name]!r} is not Slurm's tasks-per-node "
                "list (e.g. 2(x3),1)"
            ) from None
        if node >= len(counts):
            raise RunError(
                f"{where}: SLURM_NODEID={node} but {per_node_name}={env[per_node_name]!r} lists "
                f"{len(counts)} node(s)"
            )
        local_world = counts[node]
        addr, port = _master(env, where, SLURM_FIX)
        restart = 0
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    else:
        return None
    if rank >= world:
        raise RunError(f"{where}: rank {rank} is not below the world size {world}")
    if local_rank >= local_world:
        raise RunError(
            f"{where}: local rank {local_rank} is not below the ranks on its node ({local_world})"
        )
    return LauncherWorld(
        kind=kind,
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=node,
        master_addr=addr,
        master_port=port,
        nodelist=nodelist,
        restart=restart,
    )


# ----------------------------------------------------------------------------------------------
# Joining


@dataclass
class Launched:
    """A launcher's world that this process has joined: its place and the shared store."""

    world: LauncherWorld
    store: dist.Store

    def abort(self, reason: str) -> None:
        """Rank 0: it failed before (or while) publishing the job; the others exit with this."""
        with contextlib.suppress(Exception):
            self.store.set("abort", reason.splitlines()[0] if reason else "rank 0 failed")

    def publish_job(self, job: LaunchJob) -> None:
        self.store.set("job", job.to_json())

    def publish_node_gpus(self, uuids: tuple[str, ...]) -> None:
        """A node's first local rank: the GPUs of this node, in cuda:LOCAL_RANK order."""
        self.store.set(f"gpus/node/{self.world.node_rank}", json.dumps(list(uuids)))

    def wait_key(self, key: str, what: str, timeout: float | None = None) -> str:
        """Wait for ``key``; rank 0's abort (or losing the store) ends the wait with its reason.

        No ``timeout``: as long as it takes (rank 0 may prepare a large dataset first); a rank 0
        that dies takes the store with it (srun), or torchrun ends every rank.

        Raises:
            RunError: rank 0 aborted, the store went away, or the key did not come in time.
        """
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            try:
                if self.store.check([key]):
                    return self.store.get(key).decode()
                if self.store.check(["abort"]):
                    reason = self.store.get("abort").decode()
                    raise RunError(f"rank 0 failed, so rank {self.world.rank} stops: {reason}")
            except RunError:
                raise
            except Exception as exc:  # the store's host (rank 0, or torchrun's agent) is gone
                raise RunError(
                    f"rank {self.world.rank}: lost the rendezvous store at "
                    f"{self.world.master_addr}:{self.world.master_port} while waiting for {what} "
                    f"({type(exc).__name__})"
                ) from None
            if timeout is not None and time.monotonic() > deadline:
                raise RunError(
                    f"rank {self.world.rank}: no {what} from rank 0 within {timeout:.0f} s"
                )
            time.sleep(0.1)


def join_world(world: LauncherWorld) -> Launched:
    """Meet every other rank at the launcher's rendezvous (before any data, model or CUDA).

    Raises:
        RunError: the others did not come within ``JOIN_TIMEOUT``, or the address is unusable.
    """
    import torch.distributed as dist

    url = f"env://?rank={world.rank}&world_size={world.world_size}"
    # env:// reads MASTER_ADDR/PORT from the environment; under Slurm nobody else set them
    # there for torch, so make sure they hold what was checked.
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = world.master_addr, str(world.master_port)
    try:
        store, _, _ = next(dist.rendezvous(url, timeout=JOIN_TIMEOUT))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunError(
            f"{world.label}: rank {world.rank} of {world.world_size} could not meet the others at "
            f"{world.master_addr}:{world.master_port} ({first}); check MASTER_ADDR/MASTER_PORT "
            "and that every rank was started (under Slurm: with srun)"
        ) from None
    # From here on the store serves the collectives' setup, as in podium's own worlds.
    from podium.engine.distributed import COLLECTIVE_TIMEOUT

    store.set_timeout(COLLECTIVE_TIMEOUT)
    # Our own key space: torchrun's agent store also holds the agents' keys, and a restarted
    # group must not find the previous attempt's.
    return Launched(world=world, store=dist.PrefixStore(f"podium/{world.restart}/", store))


@dataclass(frozen=True, kw_only=True)
class LaunchJob:
    """What rank 0 tells the other ranks of a launched world (through the store)."""

    job: WorkerJob
    run_id: str
    backend: str
    gpus: str | None = None
    """The ``--gpus`` spec; each node chooses its own GPUs with it."""
    share_gpu: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LaunchJob:
        from podium.engine.distributed import WorkerJob

        raw = json.loads(text)
        return cls(job=WorkerJob.from_dict(raw.pop("job")), **raw)


# ----------------------------------------------------------------------------------------------
# GPUs of a node


def node_gpu_spec(spec: str | None, local_world: int, device: str) -> str:
    """The ``--gpus`` spec a node claims with: one GPU per local rank.

    ``auto`` (or nothing) means as many GPUs as the node has ranks; a count or a list must match
    that number.

    Raises:
        RunError: the spec asks for another number of GPUs than the node has ranks.
    """
    from podium.engine.gpus.select import parse_spec

    text = spec if spec is not None else ("cpu" if device == "cpu" else "auto")
    parsed = parse_spec(text)
    if parsed.kind == "cpu":
        return text
    if parsed.kind == "auto":
        return str(local_world)
    if parsed.count != local_world:
        raise RunError(
            f"--gpus {text}: {parsed.count} GPU(s) for {local_world} rank(s) on this node; "
            f"each rank trains on one GPU: pass {local_world} GPUs, or leave --gpus out"
        )
    return text


def claim_node_gpus(
    spec: str | None,
    *,
    local_world: int,
    device: str,
    run_id: str,
    share: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Placement:
    """A node's first local rank: choose and lease this node's GPUs (never a reserved one).

    ``auto`` falls back to the CPU on a node without NVIDIA GPUs, as it does without a launcher.

    Raises:
        GpuSelectionError, LeaseError, RunError: as ``claim_gpus`` and ``node_gpu_spec``.
    """
    from podium.engine.gpus.nvml import read_snapshot
    from podium.engine.gpus.select import Placement, Selection, claim_gpus, parse_spec

    text = node_gpu_spec(spec, local_world, device)
    wanted = parse_spec(spec if spec is not None else ("cpu" if device == "cpu" else "auto"))
    if wanted.kind == "auto":
        snapshot = read_snapshot(None, processes=False)
        if not snapshot.available:
            return Placement(Selection(spec=wanted, gpus=(), note=snapshot.state), ())
    return claim_gpus(text, run_id=run_id, share=share, environ=environ)


# ----------------------------------------------------------------------------------------------
# The world's record


def describe_rank(rank: int, device: str, world: LauncherWorld | None = None) -> dict[str, Any]:
    """One rank's line in ``world.json`` (each rank says it itself, through the store)."""
    return {
        "rank": rank,
        "local_rank": world.local_rank if world else rank,
        "node": world.node_rank if world else 0,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
    }


@dataclass
class WorldRecord:
    """A session's world as ``world.json`` keeps it."""

    launcher: str
    """torchrun, srun, RANK/WORLD_SIZE, podium (its own workers) or none (one process)."""
    world_size: int
    ranks: list[dict[str, Any]]
    step: int = 0
    """The step the session started from."""
    started: float = field(default_factory=time.time)
    master: str = ""
    nodelist: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "nodes": len({r["node"] for r in self.ranks}) or 1,
            "hosts": list(dict.fromkeys(r["host"] for r in self.ranks)),
        }


def record_world(run_dir: Path, record: WorldRecord) -> None:
    """Append this session's world to the run's ``world.json`` (written atomically)."""
    from podium.engine.checkpoints import write_json_atomic

    path = run_dir / WORLD_FILE
    sessions = read_worlds(run_dir)
    sessions.append(record.to_dict())
    write_json_atomic(path, {"sessions": sessions})


def read_worlds(run_dir: Path) -> list[dict[str, Any]]:
    """The sessions recorded in ``world.json`` (empty when there is none or it is unreadable)."""
    try:
        data = json.loads((run_dir / WORLD_FILE).read_text(encoding="utf-8"))
        sessions = data["sessions"]
        return list(sessions) if isinstance(sessions, list) else []
    except (OSError, ValueError, KeyError, TypeError):
        return []
