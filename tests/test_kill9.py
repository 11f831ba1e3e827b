"""kill -9 at random points, including while a checkpoint is being written, many times in a row:
every resume succeeds from the newest complete checkpoint and no file under a final name is
ever partial. Real processes, real signals, a real run directory. 6 kills in ``make test``
(three of them aimed mid-write), 20 in ``make soak``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.engine.checkpoints import list_checkpoints, load_state
from tests.test_cli_runs import DEMO, ROOT, SMALL, metrics, podium

pytestmark = pytest.mark.slow


def launch(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "podium", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_first_step(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("step "):
            return
        if not line and proc.poll() is not None:
            raise AssertionError(
                f"training process exited with {proc.returncode} before its first step"
            )
    raise AssertionError("no step line")


def kill_mid_write(proc: subprocess.Popen, ck_dir: Path) -> bool:
    """SIGKILL as soon as a checkpoint is being written; True when a temporary file was seen."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(name.startswith(".tmp-") for name in os.listdir(ck_dir)):
            proc.send_signal(signal.SIGKILL)
            return True
    proc.send_signal(signal.SIGKILL)
    return False


def assert_nothing_partial(ck_dir: Path) -> int:
    """Every file under a final name is whole; returns the newest complete checkpoint's step."""
    for pt in ck_dir.glob("*.pt"):
        load_state(pt)  # raises on a truncated or corrupt file
    for meta in ck_dir.glob("*.json"):
        info = json.loads(meta.read_text())
        assert (ck_dir / f"{info['name']}.pt").is_file()
    infos = list_checkpoints(ck_dir)
    assert infos, "no complete checkpoint"
    return infos[-1].step


def test_six_kill_9s_then_resume(tmp_path):
    kill_and_resume(tmp_path, kills=6)


@pytest.mark.soak  # about 2 minutes on 2 cores: `make soak`
def test_twenty_kill_9s_then_resume(tmp_path):
    kill_and_resume(tmp_path, kills=20)


def kill_and_resume(tmp_path: Path, kills: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = tmp_path / "runs"
    ck_dir = runs / "k" / "checkpoints"
    rng = random.Random(1234)
    args = [
        "train",
        DEMO,
        "--headless",
        "--runs-dir",
        str(runs),
        "--name",
        "k",
        *SMALL,
        "--set",
        "checkpoint.every_steps=1",
    ]
    mid_write = 0
    newest = 0
    for i in range(kills):
        proc = launch(args, env)
        try:
            wait_first_step(proc)
            deadline = time.monotonic() + 60
            while not list_checkpoints(ck_dir) and time.monotonic() < deadline:
                time.sleep(0.01)  # a run killed before its first checkpoint has nothing to resume
            if i % 2 == 0:
                mid_write += kill_mid_write(proc, ck_dir)
            else:
                time.sleep(rng.uniform(0.0, 1.0))
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        step = assert_nothing_partial(ck_dir)
        assert step >= newest  # progress is never lost past the newest complete checkpoint
        newest = step
        state = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)[0][
            "state"
        ]
        assert state == "interrupted"
        args = ["resume", "k", "--headless", "--runs-dir", str(runs)]
    assert mid_write >= 1, "no kill landed while a checkpoint was being written"
    final = newest + 3
    out = podium(
        "resume", "k", "--headless", "--max-steps", str(final), "--runs-dir", str(runs), env=env
    ).stdout
    assert "from checkpoint" in out and f"stopped at step {final}" in out
    steps = [s for s, _ in metrics("k", runs, env)["train/loss"]]
    assert steps == list(
        range(1, final + 1)
    )  # one continuous history, no duplicate or missing step
