"""A training session: one process training one run, from creation or from a checkpoint.

This is the engine's public entry point for both the headless CLI and the dashboard: build a
session (``new_session`` / ``resume_session``), subscribe to ``session.bus``, call ``run()`` in the
thread that should train, and send commands through ``session.trainer``. The session owns the
run's lock, its store writer and its log file, and writes the end marker that lets any other
process tell a finished run from an interrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from podium.engine.build import Assembly, assemble, build_trainer
from podium.engine.checkpoints import (
    Checkpointer,
    CheckpointInfo,
    checked_info,
    list_checkpoints,
    load_state,
    newest_good_checkpoint,
    read_info,
    saved_checksum,
)
from podium.engine.config import Profile, load_profile
from podium.engine.control import COMMAND_TIMEOUT, ControlServer, trainer_handlers
from podium.engine.cpu_share import share_cpus
from podium.engine.distributed import (
    RankGroup,
    WorkerJob,
    backend_for,
    check_world,
    cpu_ranks_from_env,
    join_ranks,
    start_ranks,
)
from podium.engine.errors import CheckpointError, ProfileError, RunError
from podium.engine.events import EventBus, Message, QueuedSubscriber
from podium.engine.families.registry import Sample, SampleRequest
from podium.engine.gpus.nvml import FAKE_ENV
from podium.engine.gpus.select import (
    Placement,
    apply_visibility,
    check_visible_devices,
    claim_gpus,
)
from podium.engine.limits import check_fits
from podium.engine.log_sinks import build_mirrors, check_log_config
from podium.engine.resume_history import check_history, start_new_history
from podium.engine.run_access import resolve_access
from podium.engine.runs import RunDir, create_run, new_info
from podium.engine.sinks import LineSink, StoreSink
from podium.engine.store import RunStore, StoreWriter
from podium.engine.store.health import inspect_store
from podium.engine.trainer import Trainer, TrainResult, pick_device

if TYPE_CHECKING:
    from podium.engine.launcher import Launched, LauncherWorld


@dataclass
class Session:
    run: RunDir
    profile: Profile
    trainer: Trainer
    bus: EventBus
    writer: StoreWriter
    assembly: Assembly
    resumed_from: CheckpointInfo | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def run_training(self) -> TrainResult:
        """Train in the calling thread until the run ends; always leaves the run in a clear state."""
        try:
            result = self.trainer.train()
        except KeyboardInterrupt:
            # A second Ctrl-C: no clean end. The run stays resumable from its last checkpoint.
            self.close()
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.run.mark_end("failed", reason, self.trainer.state.step)
            self.close()
            raise
        self.run.mark_end(result.status, result.reason, result.step)
        self.close()
        return result

    def generate(self, checkpoint: str, request: SampleRequest) -> tuple[Sample, Path]:
        """A sample of this run, in this process (see ``generate_here``)."""
        return generate_here(self.run, self.trainer, self.assembly, checkpoint, request)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # closing must finish; report what failed
                print(f"podium: warning: while closing the run: {exc}")
        self._closers.clear()
        self.run.release()


def generate_here(
    run: RunDir, trainer: Trainer, assembly: Assembly, checkpoint: str, request: SampleRequest
) -> tuple[Sample, Path]:
    """A sample in the process that trains ``run``: from a checkpoint, or (``"live"``) from a
    copy of the weights taken between two steps. The sampling model is built like the live one,
    so the run's RNG never moves and training goes on as if nobody had asked."""
    from podium.engine.generate import generate_from_run

    weights, step = None, None
    if checkpoint == "live":
        step, weights = trainer.snapshot_weights().result(timeout=COMMAND_TIMEOUT)
    return generate_from_run(
        run.path,
        checkpoint,
        request,
        weights=weights,
        data_info=assembly.data.model_info,
        like=assembly.model,
        step=step,
    )


def _open_log(run: RunDir) -> TextIO:
    return open(run.log_path, "a", buffering=1, encoding="utf-8")


def _build(
    run: RunDir,
    profile: Profile,
    *,
    max_steps: int | None,
    max_epochs: int | None,
    console: TextIO | None,
    log_interval: float,
    gpus: str | None = None,
    share_gpu: bool = False,
    cpu_ranks: int | None = None,
    resume_from: Path | None = None,
    start_step: int = 0,
    launched: Launched | None = None,
) -> Session:
    """Devices, data, model, trainer, sinks. The caller holds the run's lock.

    ``resume_from`` is the checkpoint the caller will load into the trainer (at ``start_step``):
    in a DDP run the other ranks read it themselves when they start. ``launched``: this process
    is rank 0 of a world torchrun or srun started (``podium.engine.launcher``)."""
    logfile = _open_log(run)
    closers: list[Callable[[], None]] = [logfile.close]

    def say(line: str) -> None:
        logfile.write(line + "\n")
        if console is not None:
            console.write(line + "\n")
            console.flush()

    try:
        return _build_inner(
            run, profile, closers, say, max_steps=max_steps, max_epochs=max_epochs, console=console,
            log_interval=log_interval, gpus=gpus, share_gpu=share_gpu, logfile=logfile,
            cpu_ranks=cpu_ranks, resume_from=resume_from, start_step=start_step,
            launched=launched,
        )  # fmt: skip
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
        raise


def _place(
    run: RunDir,
    profile: Profile,
    gpus: str | None,
    share_gpu: bool,
    say: Callable[[str], None],
    launched: Launched | None = None,
) -> Placement:
    """Choose and lease GPUs, then hide every other GPU from CUDA before anything initialises it.

    Under a launcher this is node 0's claim: one GPU per local rank, published to the node's
    other ranks (``podium.engine.launcher``)."""
    spec = gpus or ("cpu" if profile.train.device == "cpu" else "auto")
    if launched is not None:
        from podium.engine.launcher import claim_node_gpus

        placement = claim_node_gpus(
            gpus,
            local_world=launched.world.local_world_size,
            device=profile.train.device,
            run_id=run.id,
            share=share_gpu,
        )
        launched.publish_node_gpus(placement.uuids)
    else:
        placement = claim_gpus(spec, run_id=run.id, share=share_gpu)
    try:
        for line in placement.selection.describe():
            say(f"podium: {line}")
        # Before any worker starts: the DDP workers inherit these variables.
        apply_visibility(placement.uuids)
    except BaseException:
        placement.release()
        raise
    return placement


MIRROR_DRAIN_S = 30.0
"""How long the end of a run waits for a TensorBoard/W&B mirror to write what it was sent."""


def _build_inner(
    run: RunDir,
    profile: Profile,
    closers: list[Callable[[], None]],
    say: Callable[[str], None],
    *,
    max_steps: int | None,
    max_epochs: int | None,
    console: TextIO | None,
    log_interval: float,
    gpus: str | None,
    share_gpu: bool,
    logfile: TextIO,
    cpu_ranks: int | None,
    resume_from: Path | None,
    start_step: int,
    launched: Launched | None,
) -> Session:
    check_log_config(profile.log, profile.source)  # a missing package: before any lease
    placement = _place(run, profile, gpus, share_gpu, say, launched)
    closers.append(placement.release)
    local_ranks = None  # the ranks on this host (all of them without a launcher)
    if launched is not None:
        world = launched.world.world_size
        local_ranks = launched.world.local_world_size
        if cpu_ranks is not None and cpu_ranks > 1:
            say(f"podium: {cpu_ranks} CPU ranks ignored: {launched.world.label} started {world}")
    elif placement.uuids:
        world = len(placement.uuids)  # one rank per chosen GPU
        if cpu_ranks is not None and cpu_ranks > 1:
            say(f"podium: {cpu_ranks} CPU ranks ignored: training on {world} GPU(s)")
    else:
        world = cpu_ranks if cpu_ranks is not None else cpu_ranks_from_env()
    if world > 1:
        check_world(world, profile.train.batch_size)
    # Before any data or weight exists: a model that cannot fit is one line, not a dead host.
    local_ranks = world if local_ranks is None else local_ranks
    check_fits(profile, placement.selection.gpus, processes=local_ranks)
    cpu = share_cpus(
        profile.train.cpu_wait,
        threads=profile.train.cpu_threads,
        ranks=local_ranks,
        share=profile.train.cpu_share,
    )
    say(f"podium: CPU {cpu.describe()}" + (f" ({cpu.note})" if cpu.note else ""))
    bus = EventBus()
    assembly = assemble(profile, log=say)
    # The fake NVML's GPUs (PODIUM_FAKE_NVML: tests, demos) are no CUDA devices: a run placed on
    # them holds their leases like any other and trains on the CPU.
    on_gpu = bool(placement.uuids) and not os.environ.get(FAKE_ENV)
    device = pick_device("cuda" if on_gpu else "cpu")
    group: RankGroup | None = None
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", 0)  # rank r trains on cuda:r (local rank 0 here)
        job = WorkerJob(
            profile_toml=profile.to_toml(),
            source=profile.source,
            resume_from=str(resume_from) if resume_from is not None else None,
            max_steps=max_steps,
            max_epochs=max_epochs,
            uuids=tuple(placement.uuids) if launched is None else (),
        )
        if launched is not None:
            from podium.engine.launcher import LaunchJob

            launch = LaunchJob(
                job=job,
                run_id=run.id,
                backend=backend_for(device),
                gpus=gpus,
                share_gpu=share_gpu,
            )
            group = join_ranks(
                world=world,
                device=device,
                store=launched.store,
                publish=lambda: launched.publish_job(launch),
                say=say,
            )
        else:
            group = start_ranks(
                world=world, device=device, job=job, say=say, stderr=logfile, threads=cpu.threads
            )
        closers.append(group.close)
    world_record = _record_world(run, group, device, start_step, launched)
    writer = StoreWriter(run.db_path)
    closers.append(writer.close)
    trainer = build_trainer(
        assembly,
        device=device,
        bus=bus,
        checkpointer=Checkpointer(run.checkpoint_dir, profile.checkpoint, profile.hash()),
        max_steps=max_steps,
        max_epochs=max_epochs,
        group=group,
    )
    bundle = assembly.data

    if on_gpu:
        check_visible_devices(placement.uuids)

    def flush_store() -> None:
        try:
            writer.flush(timeout=30)
        except Exception as exc:  # a store problem must not cost the checkpoint
            trainer._message("warning", f"metrics store: {exc}")

    trainer.before_checkpoint = flush_store

    def status() -> dict:
        st = trainer.state
        return {
            "run": run.id,
            "profile": profile.name,
            "family": profile.family,
            "state": trainer.run_state,
            "step": st.step,
            "epoch": st.epoch + st.batch_in_epoch / trainer.steps_per_epoch,
            "total_steps": trainer.total_steps,
            "lr": trainer.schedule.lr_at(st.step),
            "best_val": st.best_val if math.isfinite(st.best_val) else None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": str(trainer.device),
            "ranks": world,
            "nodes": world_record["nodes"] if world_record else 1,
            "hosts": world_record["hosts"] if world_record else [socket.gethostname()],
            "launcher": world_record["launcher"] if world_record else "none",
            "steps_per_epoch": trainer.steps_per_epoch,
            "heads": list(trainer.head_names),
            "metrics": list(assembly.family.metrics),
            "matrices": list(assembly.family.matrices),
            "cuda": _cuda_memory(trainer.device),
            "cpu": cpu.to_dict(),
        }

    def generate(args: dict) -> dict:
        """The socket's ``generate`` (arguments as ``request_from_args`` reads them)."""
        from podium.engine.generate import meta_path, request_from_args, sample_meta

        checkpoint, request = request_from_args(args)
        sample, path = generate_here(run, trainer, assembly, checkpoint, request)
        # What the sidecar says (checkpoint and step, drawn values, why it ended), so a viewer
        # in another process tells the user the same as one in this process.
        meta = sample_meta(run.path, assembly.family.name, request, sample)
        return {"path": str(path), "meta_path": str(meta_path(path)), **meta}

    handlers = trainer_handlers(trainer, status)
    if assembly.family.sampler is not None:
        handlers["generate"] = generate
    server = ControlServer(run.path, handlers=handlers, bus=bus).start()
    closers.append(server.close)
    if console is not None:
        closers.append(run.hold_viewer().release)  # a console watching: not detached
    bus.subscribe(StoreSink(writer))
    for mirror in build_mirrors(
        profile.log,
        run_dir=run.path,
        run_id=run.id,
        profile=profile.to_dict(),
        warn=lambda line: bus.publish(
            Message(step=trainer.state.step, wall=time.time(), level="warning", text=line)
        ),
    ):
        queued = QueuedSubscriber(mirror, name=f"{mirror.name} mirror")
        bus.subscribe(queued)
        closers.append(mirror.close)  # closers run last-first: the queue drains, then it closes
        # A mirror gets a while to catch up when the run ends (W&B's first write starts its
        # service); one that takes longer loses its tail, never the run's exit.
        closers.append(functools.partial(queued.close, timeout=MIRROR_DRAIN_S))
    bus.subscribe(LineSink(logfile, interval=log_interval, total_steps=trainer.total_steps))
    if console is not None:
        bus.subscribe(LineSink(console, interval=log_interval, total_steps=trainer.total_steps))
    cost = assembly.family.cost(profile.model, profile.data)
    nodes = world_record["nodes"] if world_record else 1
    say(
        f"podium: run {run.id}: {profile.name} ({profile.family}), {cost.params / 1e6:.2f}M "
        f"parameters ({cost.flops_per_token / 1e6:.1f} MFLOP/token), "
        f"{len(bundle.train)} train / {len(bundle.val)} val examples, device {device}"
        f"{f' x {world} ranks' if world > 1 else ''}"
        f"{f' on {nodes} nodes' if nodes > 1 else ''}, "
        f"{trainer.total_steps} steps ({trainer.steps_per_epoch}/epoch)"
    )
    return Session(
        run=run,
        profile=profile,
        trainer=trainer,
        bus=bus,
        writer=writer,
        assembly=assembly,
        _closers=closers,
    )


def _record_world(
    run: RunDir,
    group: RankGroup | None,
    device: torch.device,
    start_step: int,
    launched: Launched | None,
) -> dict | None:
    """Append this session's world to the run's ``world.json``: every DDP session, and a
    single-process one of a run that had a world before (so the newest entry is always true).
    Returns what was written (None when nothing was)."""
    from podium.engine.launcher import WORLD_FILE, WorldRecord, describe_rank, record_world

    if group is None and not (run.path / WORLD_FILE).exists():
        return None
    lw = launched.world if launched is not None else None
    ranks = [describe_rank(0, str(device), lw)] + (group.members() if group is not None else [])
    record = WorldRecord(
        launcher=lw.label if lw else ("podium" if group is not None else "none"),
        world_size=group.world if group is not None else 1,
        ranks=ranks,
        step=start_step,
        master=f"{lw.master_addr}:{lw.master_port}" if lw else "",
        nodelist=lw.nodelist if lw else "",
    )
    record_world(run.path, record)
    return record.to_dict()


def new_session(
    profile: Profile,
    *,
    root: Path,
    name: str | None = None,
    max_steps: int | None = None,
    max_epochs: int | None = None,
    console: TextIO | None = None,
    log_interval: float = 3.0,
    parent: dict | None = None,
    gpus: str | None = None,
    share_gpu: bool = False,
    cpu_ranks: int | None = None,
    share_group: str | None = None,
    launched: Launched | None = None,
) -> Session:
    """Create a run directory for ``profile`` and everything needed to train it.

    ``cpu_ranks``: how many gloo ranks train a run placed on the CPU (None: ``PODIUM_CPU_RANKS``,
    else 1); a run on N GPUs always has N ranks (see podium.engine.distributed).
    ``share_group``: a group that may read the run (None: the lab's setting, else nobody else)."""
    run = create_run(root, profile_name=profile.name, name=name, access=resolve_access(share_group))
    run.write_info(
        new_info(
            run, profile=profile.name, family=profile.family, source=profile.source, parent=parent
        )
    )
    run.profile_path.write_text(
        f"# Resolved profile of run {run.id} (from {profile.source}).\n" + profile.to_toml(),
        encoding="utf-8",
    )
    run.acquire()
    try:
        return _build(
            run,
            profile,
            max_steps=max_steps,
            max_epochs=max_epochs,
            console=console,
            log_interval=log_interval,
            gpus=gpus,
            share_gpu=share_gpu,
            cpu_ranks=cpu_ranks,
            launched=launched,
        )
    except BaseException:
        # The run never trained and holds nothing but what this call just wrote: a bad data path
        # or a reserved GPU should not leave a dead run behind (the error says what went wrong).
        run.release()
        shutil.rmtree(run.path, ignore_errors=True)
        raise


def resume_session(
    run: RunDir,
    *,
    max_steps: int | None = None,
    max_epochs: int | None = None,
    console: TextIO | None = None,
    log_interval: float = 3.0,
    checkpoint: str | None = None,
    gpus: str | None = None,
    share_gpu: bool = False,
    cpu_ranks: int | None = None,
    allow_new_history: bool = False,
    launched: Launched | None = None,
) -> Session:
    """Continue ``run`` in place from its newest complete checkpoint (or the one named).

    The rank count may differ from the run's so far: a checkpoint is the same for any.
    A missing, empty or damaged metrics store is refused unless ``allow_new_history``
    (``podium.engine.resume_history``)."""
    run.acquire()  # refuses a live run
    try:
        profile = load_profile(run.profile_path)
        (run.path / BRANCH_ORIGIN).unlink(missing_ok=True)  # a branch killed before it closed
        warnings: list[str] = []
        if checkpoint is None:
            found = newest_good_checkpoint(run.checkpoint_dir)
            info, state, warnings = found.info, found.state, found.warnings()
        else:
            info = read_info(run.checkpoint_dir / f"{checkpoint}.json")
            if info is None:
                raise CheckpointError(f"run {run.id}: no checkpoint named {checkpoint!r}")
            state = load_state(run.checkpoint_dir / f"{checkpoint}.pt")
            info = checked_info(run.checkpoint_dir, info, state)
        if not profile.matches(state.get("profile_hash"), run.profile_path):
            raise CheckpointError(
                f"{run.profile_path}: the profile changed since checkpoint {info.name} was saved; "
                "start a new run instead of resuming this one"
            )
        history_note = check_history(
            run, info.step, checkpoint=info.name, allow_new_history=allow_new_history
        )
        session = _build(
            run,
            profile,
            max_steps=max_steps,
            max_epochs=max_epochs,
            console=console,
            log_interval=log_interval,
            gpus=gpus,
            share_gpu=share_gpu,
            cpu_ranks=cpu_ranks,
            resume_from=run.checkpoint_dir / f"{info.name}.pt",
            start_step=info.step,
            launched=launched,
        )
        session.trainer.load_state_dict(state)
        session.resumed_from = info
        # Series continue from the checkpoint's step: later points were never part of this history.
        session.writer.submit_truncate(info.step)
        run.clear_end()
        meta = run.info()
        meta.pids.append(os.getpid())
        run.write_info(meta)
        if not saved_checksum(state):
            warnings.append(
                f"checkpoint {info.name} has no checksum (saved by an older podium): unverified"
            )
        for text in warnings:  # to the log, the console, the store's event log and the dashboard
            session.bus.publish(
                Message(step=info.step, wall=time.time(), level="warning", text=text)
            )
        session.bus.publish(
            Message(
                step=info.step,
                wall=time.time(),
                level="info",
                text=f"resumed from checkpoint {info.name} at step {info.step}",
                data={"checkpoint": info.name},
            )
        )
        if history_note:
            session.bus.publish(
                Message(step=info.step, wall=time.time(), level="warning", text=history_note)
            )
        return session
    except BaseException:
        run.release()
        raise


def branch_session(
    parent: RunDir,
    checkpoint: str,
    *,
    root: Path,
    name: str | None = None,
    max_steps: int | None = None,
    max_epochs: int | None = None,
    console: TextIO | None = None,
    log_interval: float = 3.0,
    gpus: str | None = None,
    share_gpu: bool = False,
    cpu_ranks: int | None = None,
    allow_new_history: bool = False,
    expect_checksum: str | None = None,
    expect_step: int | None = None,
    launched: Launched | None = None,
) -> Session:
    """Start a new run that continues ``parent`` from one of its checkpoints.

    The parent is left untouched (it may even be live). The new run records its parent and
    checkpoint, and starts with the parent's history up to that checkpoint's step, so its curves
    read as one line. A parent whose store is lost or damaged is refused unless
    ``allow_new_history`` (the new run's history then starts at the checkpoint's step).

    ``expect_checksum`` (else ``expect_step``) is the content the caller promised the user, e.g.
    a dialog's "best (step 250)": a live parent may have saved ``best`` again since, and then the
    branch is refused rather than started from other weights. The file is pinned by a hard link
    into the new run before it is read, so every rank of a DDP run loads the same bytes.
    """
    profile = load_profile(parent.profile_path)
    info = check_branchable(parent, checkpoint)
    run = create_run(root, profile_name=profile.name, name=name)
    try:
        source = parent.checkpoint_dir / f"{checkpoint}.pt"
        pinned = _pin_checkpoint(source, run)
        try:
            state = load_state(pinned)
        except CheckpointError as exc:  # named as the user knows it, not as the pin
            raise CheckpointError(str(exc).replace(str(pinned), str(source))) from None
        info = checked_info(parent.checkpoint_dir, info, state)
        _check_expected(parent, info, state, expect_checksum, expect_step)
        if not profile.matches(state.get("profile_hash"), parent.profile_path):
            raise CheckpointError(
                f"{parent.profile_path}: the profile changed since checkpoint {info.name} was saved"
            )
        copy_history = _parent_history(parent, info, allow_new_history)
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # nothing was started: leave no dead run
        raise
    origin = {
        "run": parent.id,
        "path": str(parent.path.resolve()),
        "checkpoint": info.name,
        "step": info.step,
        "checksum": saved_checksum(state),
    }
    run.write_info(
        new_info(
            run, profile=profile.name, family=profile.family, source=profile.source, parent=origin
        )
    )
    run.profile_path.write_text(
        f"# Resolved profile of run {run.id} (from run {parent.id}, checkpoint {info.name}).\n"
        + profile.to_toml(),
        encoding="utf-8",
    )
    run.acquire()
    try:
        if copy_history:
            _copy_history(parent, run, info.step)
        else:
            start_new_history(run, info.step)
        session = _build(
            run,
            profile,
            max_steps=max_steps,
            max_epochs=max_epochs,
            console=console,
            log_interval=log_interval,
            gpus=gpus,
            share_gpu=share_gpu,
            cpu_ranks=cpu_ranks,
            resume_from=pinned,
            start_step=info.step,
            launched=launched,
        )
        session._closers.insert(0, lambda: pinned.unlink(missing_ok=True))  # the ranks loaded it
        session.trainer.load_state_dict(state)
        session.resumed_from = info
        if not origin["checksum"]:
            session.bus.publish(
                Message(
                    step=info.step,
                    wall=time.time(),
                    level="warning",
                    text=f"checkpoint {info.name} has no checksum (saved by an older podium): "
                    "unverified",
                )
            )
        session.bus.publish(
            Message(
                step=info.step,
                wall=time.time(),
                level="info",
                text=f"branched from run {parent.id}, checkpoint {info.name} at step {info.step}",
                data=origin,
            )
        )
        return session
    except BaseException as exc:
        pinned.unlink(missing_ok=True)
        run.mark_end(
            "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__, info.step
        )
        run.release()
        raise


def _parent_history(parent: RunDir, info: CheckpointInfo, allow_new_history: bool) -> bool:
    """Whether a branch can copy ``parent``'s history; refuses a lost or damaged one unless
    ``allow_new_history`` (then False: the branch starts a new history)."""
    state = inspect_store(parent.db_path)
    if state.kind == "ok":
        return True
    if state.kind != "damaged" and info.step <= 0:
        return False  # nothing before step 0 to copy
    if not allow_new_history:
        what = "damaged" if state.kind == "damaged" else state.kind
        raise RunError(
            f"{parent.db_path}: run {parent.id}'s metrics store is {what} ({state.detail}), so "
            f"its history up to step {info.step} cannot be copied; --allow-new-history starts "
            f"the new run with a history from step {info.step} (run {parent.id} is left as it is)"
        )
    return False


BRANCH_ORIGIN = "branch-origin.pt"
"""The parent's checkpoint file, pinned in a branched run's directory until the run closes."""


def _pin_checkpoint(source: Path, run: RunDir) -> Path:
    """A name for ``source``'s bytes in ``run`` that a later save of the parent cannot change
    (saves replace a name by rename, so the link keeps the old bytes); a copy across filesystems."""
    pinned = run.path / BRANCH_ORIGIN
    try:
        os.link(source, pinned)
    except FileNotFoundError:
        raise CheckpointError(f"{source}: checkpoint file not found") from None
    except OSError:
        shutil.copyfile(source, pinned)
    return pinned


def _check_expected(
    parent: RunDir,
    info: CheckpointInfo,
    state: dict,
    expect_checksum: str | None,
    expect_step: int | None,
) -> None:
    """Refuse a checkpoint that is no longer the one the caller chose (see ``branch_session``)."""
    checksum = saved_checksum(state)
    if expect_checksum and checksum:
        changed = checksum != expect_checksum
    elif expect_checksum or expect_step is not None:  # a checkpoint from before checksums
        changed = expect_step is not None and info.step != expect_step
    else:
        return
    if changed:
        was = f"step {expect_step}" if expect_step is not None else "the one chosen"
        raise CheckpointError(
            f"run {parent.id}: checkpoint {info.name} changed since it was chosen ({was}; it now "
            f"holds step {info.step}): no run was started; choose the checkpoint again"
        )


def _copy_history(parent: RunDir, run: RunDir, step: int) -> None:
    """The parent's metrics up to ``step`` (a consistent copy even while the parent writes)."""
    if not parent.db_path.exists():
        return
    src = sqlite3.connect(f"file:{parent.db_path}?mode=ro", uri=True)
    dst = sqlite3.connect(run.db_path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    store = RunStore.open(run.db_path)
    try:
        store.truncate_after(step)
        for record in store.checkpoints():  # the parent's files, not this run's
            store.delete_checkpoint(record.name)
    finally:
        store.close()


def check_resumable(
    run: RunDir, *, max_steps: int | None = None, max_epochs: int | None = None
) -> None:
    """Refuse a resume that could only fail or do nothing, with what to do instead.

    Cheap (no checkpoint is loaded), so the CLI asks it before any mode starts: the dashboard's
    mistakes then read like ``--headless``'s, one line and exit 2, with no UI opened.
    """
    if run.is_live():
        raise RunError(f"run {run.id} is live; attach to it or stop it before resuming")
    problem = run.lock_problem()  # another process's shared lock is not a live run, but blocks
    if problem:
        raise RunError(problem)
    state, reason = run.status()
    if state == "finished":
        # --max-steps/--max-epochs only end a run early: the schedule (train.epochs) is the
        # profile's, fixed by the checkpoints' profile hash.
        raise RunError(
            f"run {run.id} finished ({reason}): nothing to resume. To train longer, start a new "
            f"run with more epochs: podium train {run.profile_path} --set train.epochs=N"
        )
    infos = list_checkpoints(run.checkpoint_dir)
    if not infos:
        raise CheckpointError(
            f"run {run.id} has no checkpoint to resume from ({state}); start a new run with "
            "podium train"
        )
    newest = infos[-1]
    if max_steps is not None and newest.step >= max_steps:
        raise RunError(
            f"--max-steps {max_steps}: run {run.id} is already at step {newest.step} "
            f"(checkpoint {newest.name}); ask for more steps"
        )
    if max_epochs is not None and newest.epoch >= max_epochs:
        raise RunError(
            f"--max-epochs {max_epochs}: run {run.id} is already at epoch {newest.epoch:.2f} "
            f"(checkpoint {newest.name}); ask for more epochs"
        )


def check_branchable(parent: RunDir, checkpoint: str) -> CheckpointInfo:
    """The metadata of ``parent``'s checkpoint ``checkpoint``, or the one-line refusal."""
    info = read_info(parent.checkpoint_dir / f"{checkpoint}.json")
    if info is None:
        raise CheckpointError(
            f"run {parent.id}: no checkpoint named {checkpoint!r} (podium checkpoints {parent.id})"
        )
    return info


def check_placement(
    profile: Profile,
    *,
    gpus: str | None,
    share_gpu: bool,
    cpu_ranks: int | None,
    launcher: LauncherWorld | None = None,
) -> None:
    """What ``_place`` would refuse (a reserved or leased GPU, too few free, a batch too small
    for the ranks, a model that cannot fit), as a dry run that takes no lease: before the
    dashboard opens. Under a launcher only what holds for the whole world is checked here (each
    node's GPU claim says what is wrong on that node)."""
    from podium.engine.gpus.select import plan_gpus

    check_log_config(profile.log, profile.source)
    if launcher is not None:
        from podium.engine.launcher import node_gpu_spec

        node_gpu_spec(gpus, launcher.local_world_size, profile.train.device)
        check_world(launcher.world_size, profile.train.batch_size)
        return
    world = cpu_ranks if cpu_ranks is not None else cpu_ranks_from_env()
    selection = plan_gpus(
        gpus or ("cpu" if profile.train.device == "cpu" else "auto"), share=share_gpu
    )
    chosen = selection.gpus
    if chosen:
        world = len(chosen)
    check_device = getattr(profile.model, "check_device", None)  # a model config may have one
    if check_device is not None:
        try:
            check_device("cuda" if chosen else "cpu")
        except ValueError as exc:
            raise ProfileError(f"{profile.source}: model.{exc}") from None
    if world > 1:
        check_world(world, profile.train.batch_size)
    check_fits(profile, chosen, processes=world)


def _cuda_memory(device: Any) -> dict | None:
    """This process's CUDA memory on the run's device (for viewers in other processes)."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch

    return {
        "device": str(device),
        "allocated": int(torch.cuda.memory_allocated(device)),
        "reserved": int(torch.cuda.memory_reserved(device)),
        "peak": int(torch.cuda.max_memory_allocated(device)),
    }
