"""A full disk while saving: the previous checkpoint stays intact, the run pauses, and after space
is freed it resumes and saves again. Once with a real, tiny tmpfs; once with a fault injected at the
write call (for machines where mounting is not allowed)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    checked_info,
    list_checkpoints,
    load_state,
)
from podium.engine.events import EventBus, Message, StateChanged
from podium.engine.train_config import TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.toy import ToyData, ToyModel


def start(ck_dir: Path) -> tuple[Trainer, list, threading.Thread]:
    seed_everything(0)
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    trainer = Trainer(
        model=ToyModel(),
        train_set=ToyData(64),
        val_set=ToyData(16, seed=1),
        cfg=TrainConfig(
            epochs=100_000,
            batch_size=8,
            lr=1e-3,
            warmup_steps=0,
            schedule="constant",
            device="cpu",
            val_every_steps=4,
        ),
        loss_weights={"cls": 1.0, "reg": 1.0},
        checkpointer=Checkpointer(ck_dir, CheckpointConfig(save_best=False), "h"),
        bus=bus,
        device=torch.device("cpu"),
    )
    thread = threading.Thread(target=trainer.train, daemon=True)
    thread.start()
    return trainer, events, thread


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def check_paused_then_recovers(trainer, events, ck_dir: Path, free_space) -> None:
    wait_for(lambda: trainer.run_state == "paused")
    paused = [e for e in events if isinstance(e, StateChanged) and e.state == "paused"][-1]
    assert "not saved" in paused.reason and "No space left on device" in paused.reason
    errors = [e for e in events if isinstance(e, Message) and e.level == "error"]
    assert errors and errors[-1].data["errno"] == errno.ENOSPC
    # The last checkpoint is whole and what it says it is; nothing partial is visible. The disk
    # may fill between the new .pt's rename and its .json's (engine/checkpoints.py's docstring):
    # then latest.pt is the newer save beside the older .json, and checked_info (what every
    # loader asks) says so from the .pt's own record.
    infos = list_checkpoints(ck_dir)
    assert infos and infos[-1].step < trainer.state.step
    latest = next(i for i in infos if i.name == "latest")
    state = load_state(ck_dir / "latest.pt")
    assert checked_info(ck_dir, latest, state).step == state["train_state"]["step"]
    assert state["train_state"]["step"] <= trainer.state.step
    assert not [p for p in os.listdir(ck_dir) if p.startswith(".tmp-")]
    step = trainer.state.step
    time.sleep(0.3)
    assert trainer.state.step == step  # paused means no training without a safety net

    free_space()
    trainer.resume().result(timeout=10)
    wait_for(lambda: list_checkpoints(ck_dir)[-1].step > step)
    assert load_state(ck_dir / "latest.pt")["train_state"]["step"] > step


def test_injected_enospc_at_the_write_call(tmp_path, monkeypatch):
    real_save = torch.save
    full = {"on": False}

    def save(obj, f, *args, **kwargs):
        if full["on"]:
            f.write(b"\x00" * 100)  # a partial write, then the disk gives out
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(
        torch, "save", save
    )  # podium.engine.checkpoints imports torch where it saves
    ck_dir = tmp_path / "ck"
    trainer, events, thread = start(ck_dir)
    try:
        wait_for(lambda: bool(list_checkpoints(ck_dir)))
        full["on"] = True
        check_paused_then_recovers(trainer, events, ck_dir, lambda: full.update(on=False))
    finally:
        trainer.stop("test over")
        thread.join(20)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount_point = Path(f"/tmp/podium-tmpfs-{uuid.uuid4().hex[:8]}")
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True
    )
    if proc.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def test_real_full_filesystem(tiny_tmpfs):
    ck_dir = tiny_tmpfs / "ck"
    trainer, events, thread = start(ck_dir)
    filler = tiny_tmpfs / "filler"
    try:
        wait_for(lambda: bool(list_checkpoints(ck_dir)))
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):  # fill the disk
            while True:
                fh.write(b"\xff" * 4096)
                fh.flush()
        check_paused_then_recovers(trainer, events, ck_dir, filler.unlink)
    finally:
        trainer.stop("test over")
        thread.join(20)
