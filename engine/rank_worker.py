"""A DDP worker: ranks 1..N-1 of a run, each a fresh interpreter started by rank 0.

    python -m podium.engine.rank_worker    # reads its WorkerSpec as JSON on stdin

It rebuilds the run from the resolved profile through the same assembly as rank 0
(``podium.engine.build``), meets rank 0 in its TCPStore and trains; it writes nothing. See
``podium.engine.distributed`` for the protocol.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import torch
import torch.distributed as dist

from podium.engine.build import assemble, build_trainer
from podium.engine.checkpoints import load_state
from podium.engine.config import load_profile_text
from podium.engine.distributed import COLLECTIVE_TIMEOUT, RankGroup, WorkerSpec
from podium.engine.events import EventBus


def _watch_parent(parent_pid: int) -> None:
    """A worker whose rank 0 died (even by kill -9) exits instead of training on alone."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, name="podium-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _report_failure(store: dist.Store, spec: WorkerSpec) -> Iterator[None]:
    """Hand rank 0 the one-line reason (it reports it), and leave the traceback in the log."""
    try:
        yield
    except BaseException as exc:
        if os.getppid() != spec.parent_pid:
            os._exit(3)  # rank 0 is gone: a "connection reset" traceback would only be noise
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        with contextlib.suppress(Exception):
            store.set(f"error/{spec.rank}", reason)
        traceback.print_exc()
        raise


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
    with _report_failure(store, spec):
        _run_worker(spec, store)
    # The work is done and the group left. Interpreter teardown would now destroy the c10d
    # store's and gloo's C++ threads in whatever order it likes, and about one exit in seven
    # died of "terminate called without an active exception" (SIGABRT) after a clean stop;
    # nothing is left to clean up, so leave without running those destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_worker(spec: WorkerSpec, store: dist.Store) -> None:
    job = spec.job
    profile = load_profile_text(job.profile_toml, source=job.source)
    if job.uuids:
        from podium.engine.gpus.select import check_visible_devices

        torch.cuda.set_device(spec.rank)
        check_visible_devices(job.uuids)
        device = torch.device("cuda", spec.rank)
    else:
        device = torch.device("cpu")
    assembly = assemble(profile, log=lambda line: None)  # the same data and weights as rank 0
    state = load_state(job.resume_from) if job.resume_from else None
    store.set(f"ready/{spec.rank}", "1")
    dist.init_process_group(
        spec.backend,
        store=store,
        rank=spec.rank,
        world_size=spec.world,
        timeout=COLLECTIVE_TIMEOUT,
    )
    group = RankGroup(
        rank=spec.rank, world=spec.world, backend=spec.backend, device=device, store=store
    )
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
    finally:
        group.close()


if __name__ == "__main__":
    _worker_main(WorkerSpec.from_json(sys.stdin.read()))
