"""Shared pieces of the dashboard tests: a small demo run, polling, and a deterministic stored run.

``SMALL`` shrinks the demo profile (a smaller corpus, shorter sequences) so a session starts in a
few seconds and trains several steps a second here; the code paths are ``podium train``'s.
``make_stored_run`` writes a finished run through the engine's own writers (run directory, store,
checkpoint files) with made-up but deterministic numbers: the read-only screen, snapshots and the
benchmark read it like any other run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "profiles" / "demo.toml"
SMALL = (
    "data.n_pieces=48",
    "data.seq_len=96",
    "model.max_len=96",
    "train.batch_size=4",
    "train.val_every_steps=15",
    "train.warmup_steps=5",
)
HEADS = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion", "key")
FIXED_WALL = 1_700_000_000.0
"""2023-11-14 22:13:20 UTC: the start time of stored fixture runs."""


def sync(test):
    """Run an ``async def`` test with ``asyncio.run`` (no pytest async plugin is needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


async def wait_for(
    pilot, condition: Callable[[], object], timeout: float = 30.0, what: str = ""
) -> None:
    """Let the app run until ``condition()`` is true; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        await pilot.pause(0.05)


def wait_sync(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(0.05)


def start_request(
    root: Path, *, max_steps: int | None = None, extra: Sequence[str] = (), name=None
):
    from podium.tui.live import StartRequest

    return StartRequest(
        profile_path=DEMO,
        overrides=(*SMALL, *extra),
        root=root,
        name=name,
        max_steps=max_steps,
    )


def _curve(step: int, head: int, scale: float = 1.0) -> float:
    base = 0.3 + 0.15 * head
    return scale * (base + 3.0 * math.exp(-step / (120.0 + 10 * head))) + 0.05 * math.sin(
        step * 0.37 + head
    )


def make_stored_run(
    root: Path,
    name: str = "fixture",
    *,
    steps: int = 300,
    heads: Sequence[str] = HEADS,
    val_every: int = 50,
    state: str = "finished",
    checkpoints: bool = True,
    step_stride: int = 1,
    family: str = "cp",
):
    """A finished run under ``root`` with ``steps`` steps of deterministic losses per head.

    Returns the ``RunDir``. ``step_stride`` > 1 stores every n-th step only (fast huge runs).
    ``family`` is only recorded (run.json): the losses are made up whatever it is.
    """
    import torch

    from podium.engine.checkpoints import CheckpointConfig, Checkpointer
    from podium.engine.runs import RunInfo, create_run
    from podium.engine.store import CheckpointRecord, RunStore

    run = create_run(root, profile_name="demo", name=name)
    run.write_info(
        RunInfo(
            id=run.id,
            profile="demo",
            family=family,
            created=FIXED_WALL,
            host="testhost",
            user="tester",
            profile_source=str(DEMO),
            pids=[1],
        )
    )
    run.log_path.write_text(
        f"podium: run {run.id}: demo ({family}), 0.80M parameters, 43 train / 5 val examples, "
        f"device cpu, {steps} steps (10/epoch)\n",
        encoding="utf-8",
    )
    store = RunStore.open(run.db_path)
    best = math.inf
    try:
        with store.batch():
            for step in range(1, steps + 1, step_stride):
                wall = FIXED_WALL + step * 0.5
                losses = {h: _curve(step, i) for i, h in enumerate(heads)}
                values = {"train/loss": sum(losses.values()), "lr": 1e-3, "grad_norm": 1.5}
                values.update({f"train/loss/{h}": v for h, v in losses.items()})
                values["throughput/tokens_per_s"] = 1000.0
                values["throughput/samples_per_s"] = 10.0
                store.add_scalars(step, step / 10, wall, values)
                if step % val_every == 0:
                    vl = {h: _curve(step, i, 1.1) for i, h in enumerate(heads)}
                    total = sum(vl.values())
                    best = min(best, total)
                    val = {"val/loss": total, **{f"val/loss/{h}": v for h, v in vl.items()}}
                    store.add_scalars(step, step / 10, wall, val)
                    payload = {
                        "type": "EvalMetrics",
                        "step": step,
                        "epoch": step / 10,
                        "wall": wall,
                        "loss": total,
                        "losses": vl,
                        "best": best,
                        "patience_left": 6,
                    }
                    store.add_event("eval", payload, step=step, wall=wall)
                if step % 5000 == 0:
                    store.flush()
            store.flush()
            end_wall = FIXED_WALL + steps * 0.5
            store.add_event(
                "state",
                {
                    "type": "StateChanged",
                    "step": steps,
                    "wall": end_wall,
                    "state": state,
                    "reason": "schedule complete",
                },
                step=steps,
                wall=end_wall,
            )
        if checkpoints:
            ck = Checkpointer(run.checkpoint_dir, CheckpointConfig(), "fixture")
            for step, kinds, val in ((100, ("best", "latest"), 3.5), (steps, ("latest",), None)):
                written, _ = ck.save(
                    {"weights": torch.zeros(4)},
                    step=step,
                    epoch=step / 10,
                    val_loss=val,
                    kinds=kinds,
                )
                for info in written:
                    # Fixed time and size, so the table (ages, sizes) renders the same each run.
                    info.wall, info.size = FIXED_WALL + step * 0.5, 4_200_000
                    meta = run.checkpoint_dir / f"{info.name}.json"
                    data = json.loads(meta.read_text())
                    data.update(wall=info.wall, size=info.size)
                    meta.write_text(json.dumps(data))
                    store.upsert_checkpoint(
                        CheckpointRecord(
                            name=info.name,
                            path=str(run.checkpoint_dir / f"{info.name}.pt"),
                            step=info.step,
                            epoch=info.epoch,
                            val_loss=info.val_loss,
                            size=info.size,
                            wall=info.wall,
                            kind=info.kind,
                        )
                    )
    finally:
        store.close()
    (run.path / "lock").touch()
    run.mark_end(state, "schedule complete", steps)
    return run


async def settle(pilot, seconds: float = 0.3) -> None:
    """Give workers and timers a moment (store reads in threads post their results back)."""
    await pilot.pause(seconds)
    await asyncio.sleep(0)
