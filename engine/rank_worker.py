"""The ranks that are not rank 0: they rebuild rank 0's run and train; they write nothing.

Two ways in, one body (``train_follower``):

- podium's own workers, fresh interpreters that rank 0 starts::

      python -m podium.engine.rank_worker    # reads its WorkerSpec as JSON on stdin

  They meet rank 0 in the TCPStore it hosts on 127.0.0.1.
- the ranks != 0 of a world that torchrun or srun started (``train_launched``, reached from
  ``podium.engine.launcher.follow``): they read rank 0's job from the launcher's store.

Either way the run is rebuilt from the resolved profile through the same assembly as rank 0
(``podium.engine.build``). See ``podium.engine.distributed`` for the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

import torch
import torch.distributed as dist

from podium.engine.build import assemble, build_trainer
from podium.engine.checkpoints import load_state
from podium.engine.config import Profile, load_profile_text
from podium.engine.distributed import COLLECTIVE_TIMEOUT, RankGroup, WorkerJob, WorkerSpec
from podium.engine.errors import PodiumError, RunError
from podium.engine.events import EventBus
from podium.engine.launcher import describe_rank

if TYPE_CHECKING:
    from podium.engine.launcher import Launched


def _watch_parent(parent_pid: int) -> None:
    """A worker whose rank 0 died (even by kill -9) exits instead of training on alone."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, name="podium-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _report_failure(
    store: dist.Store, rank: int, lead_gone: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Hand rank 0 the one-line reason (it reports it), and leave the traceback in the log."""
    try:
        yield
    except BaseException as exc:
        if lead_gone():
            os._exit(3)  # rank 0 is gone: a "connection reset" traceback would only be noise
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        with contextlib.suppress(Exception):
            store.set(f"error/{rank}", reason)
        if not isinstance(exc, PodiumError):
            traceback.print_exc()
        raise


def leave(code: int) -> NoReturn:
    """End a rank that is not rank 0, skipping interpreter teardown.

    The work is done and the group left. Teardown would now destroy the c10d store's and gloo's
    C++ threads in whatever order it likes, and about one exit in seven died of "terminate
    called without an active exception" (SIGABRT) after a clean stop; nothing is left to clean
    up, so leave without running those destructors."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _worker_main(spec: WorkerSpec) -> None:
    """Entry point of ranks 1..N-1 (a fresh interpreter, ``python -m podium.engine.rank_worker``)."""
    # Ctrl-C and a closing terminal are rank 0's to interpret (a clean stop, or training on
    # detached); it tells the workers at a step boundary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _watch_parent(spec.parent_pid)
    torch.set_num_threads(spec.threads)
    store = dist.TCPStore(
        "127.0.0.1", spec.port, spec.world, is_master=False, timeout=COLLECTIVE_TIMEOUT
    )
    with _report_failure(store, spec.rank, lambda: os.getppid() != spec.parent_pid):
        job = spec.job
        profile = load_profile_text(job.profile_toml, source=job.source)
        if job.uuids:
            from podium.engine.gpus.select import check_visible_devices

            torch.cuda.set_device(spec.rank)
            check_visible_devices(job.uuids)
            device = torch.device("cuda", spec.rank)
        else:
            device = torch.device("cpu")
        train_follower(
            profile,
            job,
            rank=spec.rank,
            world=spec.world,
            backend=spec.backend,
            store=store,
            device=device,
            member=describe_rank(spec.rank, str(device)),
        )
    leave(0)


def train_follower(
    profile: Profile,
    job: WorkerJob,
    *,
    rank: int,
    world: int,
    backend: str,
    store: dist.Store,
    device: torch.device,
    member: dict,
) -> None:
    """Rebuild rank 0's run, say ready (with this rank's line of ``world.json``), join the
    group, train until rank 0 ends the run, and leave the group."""
    assembly = assemble(profile, log=lambda line: None)  # the same data and weights as rank 0
    state = load_state(job.resume_from) if job.resume_from else None
    store.set(f"world/{rank}", json.dumps(member))
    store.set(f"ready/{rank}", "1")
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    group = RankGroup(rank=rank, world=world, backend=backend, device=device, store=store)
    try:
        trainer = build_trainer(
            assembly,
            device=device,
            bus=EventBus(),
            checkpointer=None,
            max_steps=job.max_steps,
            max_epochs=job.max_epochs,
            group=group,
        )
        if state is not None:
            trainer.load_state_dict(state)
        trainer.train()
        store.set(f"done/{rank}", "1")  # rank 0 (maybe the store's host) may leave now
    finally:
        group.close()


def train_launched(launched: Launched) -> None:
    """A rank != 0 of a world torchrun or srun started: rank 0's job, this node's GPUs, train.

    Raises:
        RunError (and other PodiumErrors): rank 0 failed first, this node has no usable GPUs,
            or the run cannot be rebuilt here; the reason also reaches rank 0.
    """
    from podium.engine.cpu_share import share_cpus
    from podium.engine.launcher import LaunchJob

    # Stopping is rank 0's to decide (Ctrl-C, a hang-up, scancel's or torchrun's SIGTERM): it
    # saves and tells every rank at the next step boundary. A rank 0 that dies instead ends
    # this rank through the failed collective.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    world, store = launched.world, launched.store
    with _report_failure(store, world.rank):
        launch = LaunchJob.from_json(launched.wait_key("job", "the run's job"))
        job = launch.job
        profile = load_profile_text(job.profile_toml, source=job.source)
        share_cpus(
            profile.train.cpu_wait,
            threads=profile.train.cpu_threads,
            ranks=world.local_world_size,
            share=profile.train.cpu_share,
        )
        device = torch.device("cpu")
        if launch.backend == "nccl":
            device = _node_gpu(launched, launch)
        train_follower(
            profile,
            job,
            rank=world.rank,
            world=world.world_size,
            backend=launch.backend,
            store=store,
            device=device,
            member=describe_rank(world.rank, str(device), world),
        )


_HELD: list[object] = []
"""The node's GPU leases, held by its first local rank until it exits."""


def _node_gpu(launched: Launched, launch: object) -> torch.device:
    """cuda:LOCAL_RANK of this node's GPUs, which its first local rank chose and leased before
    any rank of the node started CUDA."""
    from podium.engine.gpus.select import apply_visibility, check_visible_devices
    from podium.engine.launcher import NODE_GPUS_TIMEOUT_S, LaunchJob, claim_node_gpus

    assert isinstance(launch, LaunchJob)
    world = launched.world
    key = f"gpus/node/{world.node_rank}"
    if world.local_rank == 0:
        try:
            placement = claim_node_gpus(
                launch.gpus,
                local_world=world.local_world_size,
                device="cuda",
                run_id=launch.run_id,
                share=launch.share_gpu,
            )
            if not placement.uuids:
                raise RunError(
                    f"node {world.node_rank} ({socket.gethostname()}) has no usable GPU "
                    f"({placement.selection.note}) but rank 0 trains on GPUs"
                )
        except PodiumError as exc:
            launched.store.set(key, json.dumps({"error": str(exc)}))
            raise
        _HELD.append(placement)  # its leases last as long as this process
        uuids = placement.uuids
        launched.publish_node_gpus(uuids)
    else:
        got = json.loads(launched.wait_key(key, "this node's GPUs", NODE_GPUS_TIMEOUT_S))
        if isinstance(got, dict):
            raise RunError(f"node {world.node_rank}'s GPUs: {got['error']}")
        uuids = tuple(got)
    apply_visibility(uuids)
    torch.cuda.set_device(world.local_rank)
    check_visible_devices(uuids)
    return torch.device("cuda", world.local_rank)


def follow(launched: Launched, say: Callable[[str], None] | None = None) -> int:
    """Ranks != 0: wait for rank 0's job, claim this node's GPUs, train; write nothing.

    Returns the exit code: 0, 2 for a reason podium explains (printed as one line), 1 else.
    """
    world = launched.world
    say = say or (lambda line: sys.stderr.write(line + "\n"))
    try:
        train_launched(launched)
    except PodiumError as exc:
        say(f"podium: error: rank {world.rank}: {exc}")
        leave(exc.exit_code)
    except KeyboardInterrupt:
        leave(130)
    except BaseException:
        import traceback

        traceback.print_exc()
        leave(1)
    leave(0)
    return 0  # not reached: leave() ends the process


if __name__ == "__main__":
    _worker_main(WorkerSpec.from_json(sys.stdin.read()))
