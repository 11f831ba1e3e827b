"""Data-parallel training over several processes (DDP): gloo on the CPU, nccl on CUDA GPUs.

How a user gets it:

- GPUs: ask for more than one (``--gpus 2``, ``--gpus 0,1``, UUIDs). The world size is the number
  of GPUs chosen; rank r trains on ``cuda:r`` of the GPUs ``session.apply_visibility`` left
  visible (CUDA_VISIBLE_DEVICES holds their UUIDs before CUDA starts, and the workers inherit it).
- CPU: set ``PODIUM_CPU_RANKS=N`` (or pass ``cpu_ranks=N`` to ``new_session``/``resume_session``)
  on a run placed on the CPU. The rank count is a property of where a run trains, like
  ``--gpus``, not of the profile: it is not a profile key, so it is not in the profile hash, and
  a run can be resumed with another rank count (or on one process) from the same checkpoint.
  It is meant for tests and for checking a multi-GPU setup on a laptop; on a two-core machine
  it is slower than one process.

- Several servers: start podium under ``torchrun`` or ``srun``; it then joins the launcher's
  world instead of starting workers (``podium.engine.launcher``, ``join_ranks``). Everything
  below holds there too, except that the launcher starts the processes and hosts (torchrun) or
  lets rank 0 host (srun) the store.

Process layout: the podium process that builds the session is rank 0. It owns everything a user
sees: the store, checkpoints, the control socket, the log and the events; it also validates.
Ranks 1..N-1 are fresh interpreters it starts as ``python -m podium.engine.rank_worker`` with a JSON job
on stdin: never a fork (a forked child would inherit rank 0's threads, locks and CUDA state),
and not multiprocessing's "spawn" either, which re-imports the parent's ``__main__`` (the
dashboard, or an unguarded user script) in every worker. They rebuild the same data and model
from the resolved profile, read the checkpoint being resumed, and train; they write nothing (a
worker that crashes leaves its traceback in the run's log, and its one-line reason reaches rank
0, which reports it). They meet rank 0 through a TCPStore that rank 0 hosts on 127.0.0.1 (port
chosen by the OS, so two runs never race for a port), and exit when rank 0 goes away, even by
kill -9.

Commands: rank 0 receives pause/resume/stop/save/set_lr as in a single-process run. At every
step boundary it broadcasts three numbers (stop, pause, the schedule's peak lr, which is all the
state ``set_lr`` changes) to the other ranks: one tiny collective per step. A pause must not
leave the other ranks inside a collective (it would time out after a long pause), so on a pause
the workers wait on a store key instead, which rank 0 sets when the pause ends (with the stop
flag and the lr chosen meanwhile). Saves are rank 0's alone: every rank holds the same weights
and optimizer state, and the workers' random numbers are a pure function of (seed, rank, step),
so rank 0's checkpoint is the whole state of the run.

Data: ``train.batch_size`` is the GLOBAL batch. The data order is the single-process order; each
global micro-batch is cut into W contiguous slices (the first ``batch_size % W`` ranks take one
example more), and rank r trains on slice r.

Loss weighting: every model returns masked means (per head, over the valid tokens of its batch).
DDP averages gradients over ranks, and the mean of per-rank means is not the global masked mean
when ranks hold different numbers of valid tokens. So each rank scales its loss by
``W * n_r / N`` (n_r its valid tokens, N the all-reduced sum over ranks, per micro-batch) before
backward: the averaged gradient is then ``sum_r n_r/N * grad(mean_r) = grad(global mean)``, the
single-process gradient. Models without a ``mask`` count examples instead of tokens. The losses
reported to the dashboard are summed the same way, so they are the global batch's losses too.

Per step this costs, besides DDP's gradient all-reduce: the command broadcast (3 numbers), one
all-reduce of the token and example counts (2 per micro-batch) and one of the reported losses
(heads + 1), which also makes the non-finite check agree on every rank.

Limits: the weights match a single-process run (within float rounding) only without dropout,
since each rank draws its own masks; a DDP resume with the same rank count repeats the
uninterrupted run exactly, dropout included. Validation runs on rank 0 alone while the others
wait. DDP is built with ``find_unused_parameters=False``: a family whose forward leaves
parameters unused needs that changed. The nccl path follows the gloo one line for line but was
only run on CPU here (no multi-GPU machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import IO, Literal

import torch
import torch.distributed as dist
from torch import nn

from podium.engine.errors import DataError, RunError

CPU_RANKS_ENV = "PODIUM_CPU_RANKS"
"""Environment variable: how many gloo ranks a run placed on the CPU trains with (default 1)."""

STARTUP_TIMEOUT_S = 600.0
"""How long rank 0 waits for the workers to build their data and model."""

COLLECTIVE_TIMEOUT = timedelta(minutes=30)
"""A collective that waits longer fails the run. Rank 0 validates alone while the others wait
at the next step's broadcast, so this bounds a validation pass; pauses do not count (the workers
wait on the store then)."""

Backend = Literal["gloo", "nccl"]


def cpu_ranks_from_env(environ: dict[str, str] | None = None) -> int:
    """``PODIUM_CPU_RANKS`` as a rank count (1 when unset).

    Raises:
        RunError: the value is not a whole number >= 1.
    """
    env = os.environ if environ is None else environ
    text = env.get(CPU_RANKS_ENV, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise RunError(
            f"{CPU_RANKS_ENV}={text!r}: must be a whole number >= 1 (the gloo ranks of a CPU run); "
            f"unset it for one process"
        )
    return int(text)


def check_world(world: int, batch_size: int) -> None:
    """Every rank needs at least one example of each global batch.

    Raises:
        DataError: ``batch_size`` is smaller than the world size.
    """
    if batch_size < world:
        raise DataError(
            f"train.batch_size: {batch_size} is the global batch and cannot be split over "
            f"{world} ranks; set train.batch_size to at least {world} or use fewer ranks"
        )


def shard_sizes(n: int, world: int) -> list[int]:
    """Sizes of the W contiguous slices of an n-example batch (the first n % W get one more)."""
    base, extra = divmod(n, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


@dataclass(frozen=True, kw_only=True)
class WorkerJob:
    """What every worker needs to rebuild rank 0's run (sent as JSON)."""

    profile_toml: str
    """The resolved profile; it loads back to an equal profile with the same hash."""
    source: str
    """Where the profile came from (for messages)."""
    resume_from: str | None = None
    """Checkpoint file the run continues from; None for a fresh run."""
    max_steps: int | None = None
    max_epochs: int | None = None
    uuids: tuple[str, ...] = ()
    """The run's GPUs (empty on the CPU); rank r trains on cuda:r."""

    @classmethod
    def from_dict(cls, raw: dict) -> WorkerJob:
        """Back from ``asdict`` through JSON (which made the tuple of GPUs a list)."""
        return cls(**{**raw, "uuids": tuple(raw["uuids"])})


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    job: WorkerJob
    rank: int
    world: int
    backend: Backend
    port: int
    parent_pid: int
    threads: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        raw = json.loads(text)
        return cls(job=WorkerJob.from_dict(raw.pop("job")), **raw)


class RankGroup:
    """This process's place in a DDP run, and the few collectives the trainer needs.

    Rank 0's group also owns the worker processes and the rendezvous store; ``close()`` ends
    them. Methods are called from the training thread only.
    """

    def __init__(
        self,
        *,
        rank: int,
        world: int,
        backend: Backend,
        device: torch.device,
        store: dist.Store,
        processes: Sequence[subprocess.Popen] = (),
        restore_threads: int | None = None,
        launched: bool = False,
    ) -> None:
        self.rank = rank
        self.world = world
        self.backend = backend
        self.device = device
        self.store = store
        self.processes = list(processes)
        self._restore_threads = restore_threads
        self.launched = launched
        """The world was started by torchrun or srun (``podium.engine.launcher``): rank 0 owns
        no processes, and on close it waits for the others to say they are done instead."""
        self._pauses = 0
        self._closed = False
        self.ended_together = False
        """Set by the trainer when every rank agreed to end (a stop, a limit, the schedule's
        end): the workers are then exiting on their own and ``close`` waits for them."""

    @property
    def is_lead(self) -> bool:
        """Rank 0: the one rank that writes, validates and serves commands."""
        return self.rank == 0

    # -- model and data ---------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """The DDP wrapper the loop trains through; checkpoints keep using the bare model.

        Buffers are not synced before each forward: the families' buffers are constants
        (position tables, masks), so that would only cost time.
        """
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        params = inspect.signature(DistributedDataParallel).parameters
        no_sync = (  # the name changed in torch 2.13; the old one warns there
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in params
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(
            model, device_ids=ids, output_device=ids[0] if ids else None, **no_sync
        )

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's contiguous slice of one global micro-batch."""
        sizes = shard_sizes(len(indices), self.world)
        start = sum(sizes[: self.rank])
        return list(indices[start : start + sizes[self.rank]])

    def no_sync(self, net: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on every micro-batch but the last of a step."""
        if last or not hasattr(net, "no_sync"):
            return contextlib.nullcontext()
        return net.no_sync()

    def reseed(self, seed: int, step: int) -> None:
        """Workers draw dropout from a stream that is a pure function of (seed, rank, step), so
        a resumed run reproduces them without checkpointing every rank's generators."""
        torch.manual_seed((seed * 1_000_003 + self.rank * 7_919 + step) % 2**63)

    # -- collectives ------------------------------------------------------------------------

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def share_commands(
        self, *, stop: bool, pause: bool, base_lr: float
    ) -> tuple[bool, bool, float]:
        """Rank 0's (stop, pause, peak lr) on every rank: the per-step command broadcast."""
        t = torch.tensor(
            [float(stop), float(pause), base_lr] if self.is_lead else [0.0, 0.0, 0.0],
            dtype=torch.float64,
            device=self.device,
        )
        dist.broadcast(t, src=0)
        s, p, lr = t.tolist()
        return s > 0.5, p > 0.5, lr

    def end_pause(self, *, stop: bool, base_lr: float) -> None:
        """Rank 0: the pause is over; tell the waiting workers how it ended."""
        self._pauses += 1
        self.store.set(f"pause_end/{self._pauses}", f"{int(stop)} {base_lr!r}")

    def wait_pause_end(self) -> tuple[bool, float]:
        """Workers: wait (on the store, not in a collective) until rank 0 ends the pause."""
        self._pauses += 1
        key = f"pause_end/{self._pauses}"
        while not self.store.check([key]):  # raises when rank 0 (the store's host) is gone
            time.sleep(0.2)
        stop, lr = self.store.get(key).decode().split()
        return stop == "1", float(lr)

    def worker_errors(self) -> list[str]:
        """Rank 0: the one-line reasons of workers that failed, as they reported them."""
        out = []
        for r in range(1, self.world):
            key = f"error/{r}"
            with contextlib.suppress(Exception):
                if self.store.check([key]):
                    out.append(f"rank {r}: {self.store.get(key).decode()}")
        return out

    def members(self) -> list[dict]:
        """Rank 0: every rank's line of ``world.json``, as each rank said it when ready."""
        out = []
        for r in range(1, self.world):
            with contextlib.suppress(Exception):
                if self.store.check([f"world/{r}"]):
                    out.append(json.loads(self.store.get(f"world/{r}").decode()))
        return out

    def exitcodes(self) -> list[int | None]:
        """Rank 0: the workers' exit codes (None while one runs)."""
        return [p.poll() for p in self.processes]

    def close(self, timeout: float = 20.0) -> None:
        """End this rank's part: rank 0 waits for the workers (ending them when they hang),
        then leaves the process group. Safe to call twice.

        After a failure or an abort the workers wait in a collective for a rank 0 that will
        not come: they get 2 s, then leaving the group makes their collective fail."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + (timeout if self.ended_together else 2.0)
        if self.launched and self.is_lead:
            # Under Slurm rank 0 hosts the store: let the others finish with it first.
            done = [f"done/{r}" for r in range(1, self.world)]
            with contextlib.suppress(Exception):
                while not self.store.check(done) and time.monotonic() < deadline:
                    time.sleep(0.05)
        for p in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(deadline - time.monotonic(), 0.1))
        if any(p.poll() is None for p in self.processes) and dist.is_initialized():
            # Leaving the group makes workers stuck in a collective fail instead of waiting.
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        for p in self.processes:
            _end_process(p)
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        if self._restore_threads is not None:
            torch.set_num_threads(self._restore_threads)


def _end_process(p: subprocess.Popen, grace: float = 5.0) -> None:
    for action in (None, p.terminate, p.kill):
        if action is not None:
            action()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(grace)
            return


def backend_for(device: torch.device) -> Backend:
    return "nccl" if device.type == "cuda" else "gloo"


def _threads_per_rank(world: int, device: torch.device) -> int:
    """CPU ranks share the cores: W ranks each using every core would thrash."""
    cores = os.cpu_count() or 1
    return max(1, cores // world) if device.type == "cpu" else torch.get_num_threads()


def start_ranks(
    *,
    world: int,
    device: torch.device,
    job: WorkerJob,
    say: Callable[[str], None] = lambda line: None,
    stderr: IO[str] | int | None = None,
    threads: int | None = None,
) -> RankGroup:
    """Rank 0: start workers 1..world-1, wait until each has built its model, join the group.

    Call after rank 0 has built its data (the workers then find the prepared data in the cache
    instead of preparing it concurrently) and before the Trainer (whose DDP wrapper is the
    first collective). ``stderr`` receives the workers' stderr (rank 0 passes the run's log).
    ``threads``: intra-op threads per rank (default: the cores divided among the ranks).

    Raises:
        RunError: a worker failed or did not start in time (with its reason).
    """
    backend = backend_for(device)
    if backend == "nccl" and not dist.is_nccl_available():
        raise RunError("multi-GPU training needs NCCL, which this torch build lacks")
    store = dist.TCPStore(
        "127.0.0.1", 0, world, is_master=True, wait_for_workers=False, timeout=COLLECTIVE_TIMEOUT
    )
    threads = threads if threads is not None else _threads_per_rank(world, device)
    previous_threads = torch.get_num_threads()
    processes: list[subprocess.Popen] = []
    try:
        for rank in range(1, world):
            spec = WorkerSpec(
                job=job,
                rank=rank,
                world=world,
                backend=backend,
                port=store.port,
                parent_pid=os.getpid(),
                threads=threads,
            )
            p = subprocess.Popen(
                [sys.executable, "-m", "podium.engine.rank_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                # Its own session: terminal signals (Ctrl-C, hang-up) are rank 0's to interpret.
                start_new_session=True,
            )
            assert p.stdin is not None
            p.stdin.write(spec.to_json())
            p.stdin.close()
            processes.append(p)
        say(
            f"podium: DDP over {world} ranks ({backend}); started workers {[p.pid for p in processes]}"
        )
        _wait_ready(store, processes, world)
        torch.set_num_threads(threads)
        dist.init_process_group(
            backend, store=store, rank=0, world_size=world, timeout=COLLECTIVE_TIMEOUT
        )
    except BaseException:
        for p in processes:
            _end_process(p, grace=0.0)
        torch.set_num_threads(previous_threads)
        raise
    return RankGroup(
        rank=0,
        world=world,
        backend=backend,
        device=device,
        store=store,
        processes=processes,
        restore_threads=previous_threads,
    )


def join_ranks(
    *,
    world: int,
    device: torch.device,
    store: dist.Store,
    publish: Callable[[], None],
    say: Callable[[str], None] = lambda line: None,
) -> RankGroup:
    """Rank 0 of a world that torchrun or srun started (``podium.engine.launcher``): publish the
    job (``publish``), wait until every other rank has built its model, join the group.

    The counterpart of ``start_ranks``, called at the same point; it starts no process.

    Raises:
        RunError: a rank failed or did not come in time (with its reason).
    """
    backend = backend_for(device)
    if backend == "nccl" and not dist.is_nccl_available():
        raise RunError("multi-GPU training needs NCCL, which this torch build lacks")
    publish()
    say(f"podium: DDP over {world} ranks ({backend}), started by the launcher")
    _wait_ready(store, (), world)
    dist.init_process_group(
        backend, store=store, rank=0, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    return RankGroup(
        rank=0, world=world, backend=backend, device=device, store=store, launched=True
    )


def _wait_ready(store: dist.Store, processes: Sequence[subprocess.Popen], world: int) -> None:
    """Until every rank says ready; a rank's reported error (or, for podium's own workers, its
    exit) ends the wait with its reason."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    waiting = set(range(1, world))
    while waiting:
        for rank in sorted(waiting):
            if store.check([f"ready/{rank}"]):
                waiting.discard(rank)
                continue
            key = f"error/{rank}"
            code = processes[rank - 1].poll() if processes else None
            if code is not None or (not processes and store.check([key])):
                reason = store.get(key).decode() if store.check([key]) else "no reason given"
                how = f" (exit {code})" if code is not None else ""
                raise RunError(f"DDP rank {rank} failed while starting{how}: {reason}")
        if waiting and time.monotonic() > deadline:
            raise RunError(
                f"DDP ranks {sorted(waiting)} did not start within {STARTUP_TIMEOUT_S:.0f} s"
            )
        if waiting:
            time.sleep(0.05)
