"""Hang-ups never wedge the dashboard's process: the run goes on ``detached`` and stops on
``podium control RUN stop``.

The wedge: Textual's writer thread (a bounded queue in front of the terminal) is stuck on a
terminal nobody reads, or died of EIO; the main thread then blocks in ``queue.put`` (a redraw, or
the driver's close on the way out), the event loop never runs the hang-up, and the process lives
on showing ``live``. The pty test builds that exactly (a terminal that stops being read, as a
frozen SSH link, then SIGHUP); the tmux tests repeat real hang-ups (``kill-server``), a few
at once: 3 in the default run, 20 in the ``soak`` one (``make soak``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from podium.engine.runs import RunDir
from tests.test_tui_attach import LONG, dashboard_command, sets, status, stop_and_wait, stored_steps
from tests.test_tui_terminal import TMUX, Tmux
from tests.tui_helpers import DEMO, ROOT, wait_sync


def test_a_terminal_nobody_reads_then_sighup_detaches_and_stops(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "frozen")
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "train", str(DEMO), "--runs-dir", str(runs),
         "--name", "frozen", *sets(LONG)],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
    )  # fmt: skip
    os.close(slave)
    try:
        wait_sync(lambda: run.db_path.exists() and len(stored_steps(run)) >= 5, 120, "steps")
        time.sleep(3)  # redraws pile up: the pty is full, the writer blocked, its queue full
        assert run.status()[0] == "live"
        os.kill(proc.pid, signal.SIGHUP)
        wait_sync(lambda: run.status()[0] == "detached", 20, "the dashboard to let go")
        assert proc.poll() is None  # the same process trains on
        before = status("frozen", runs)["step"]
        wait_sync(lambda: status("frozen", runs)["step"] > before, 30, "more steps")
        stop_and_wait(run)
        proc.wait(30)  # and it leaves once stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        os.close(master)
    assert json.loads(run.end_path.read_text())["status"] == "stopped"


def _hang_up_once(tmp_path: Path, i: int) -> str | None:
    """One dashboard in tmux, its terminal killed; None when it detached and then stopped."""
    runs = tmp_path / f"runs-{i}"
    run = RunDir(runs / "drop")
    args = ["train", str(DEMO), "--runs-dir", str(runs), "--name", "drop", *sets(LONG)]
    tmux = Tmux(tmp_path)
    pid = None
    try:
        tmux.start(dashboard_command(args), 120, 40)
        wait_sync(lambda: run.db_path.exists() and len(stored_steps(run)) >= 2, 180, "steps")
        pid = json.loads((run.path / "lock").read_text())["pid"]
        tmux.kill()  # SIGHUP, then EIO on the tty
        deadline = time.monotonic() + 30
        while run.status()[0] != "detached":
            if time.monotonic() > deadline:
                return f"{i}: still {run.status()[0]} 30 s after the hang-up"
            time.sleep(0.2)
        stop_and_wait(run)
        deadline = time.monotonic() + 30
        while _alive(pid):
            if time.monotonic() > deadline:
                return f"{i}: pid {pid} alive 30 s after stop"
            time.sleep(0.2)
        return None
    finally:
        tmux.kill()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by tmux's server) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def _repeat_hang_ups(tmp_path: Path, times: int, at_once: int) -> None:
    with ThreadPoolExecutor(at_once) as pool:
        failures = [f for f in pool.map(lambda i: _hang_up_once(tmp_path, i), range(times)) if f]
    assert failures == [], failures


@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_three_hang_ups_leave_no_wedged_process(tmp_path):
    _repeat_hang_ups(tmp_path, 3, 3)


@pytest.mark.soak  # about 3 minutes on 2 cores: `make soak`
@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_twenty_hang_ups_leave_no_wedged_process(tmp_path):
    _repeat_hang_ups(tmp_path, 20, 4)
