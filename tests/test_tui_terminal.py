"""The dashboard in a real terminal (tmux), and the console script without one.

The tmux test runs ``python -m podium train profiles/demo.toml`` (the ``podium`` script's code)
in a detached 120x40 tmux session on a private tmux server, reads the screen with
``capture-pane -p``, and sends keys with ``send-keys``: it checks what a user sees.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tui_helpers import DEMO, ROOT, SMALL

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
STEP = re.compile(r"step (\d+)/\d+")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_the_dashboard_refuses_without_a_terminal(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli("train", str(DEMO), "--runs-dir", str(runs))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "needs a terminal" in proc.stderr and "--headless" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())  # no run was created

    proc = run_cli(cwd=tmp_path)  # `podium` alone opens the home screen: refused the same way
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr

    proc = run_cli("resume", "nope", "--runs-dir", str(runs))
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr  # resolved before the UI


class Tmux:
    """A private tmux server (its own socket) holding one detached session."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"podium-test-{os.getpid()}-{time.monotonic_ns()}"
        self.session = "podium"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def start(self, command: str, width: int, height: int) -> None:
        self("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), command)

    def screen(self) -> str:
        proc = self("capture-pane", "-p", "-t", self.session, check=False)
        return proc.stdout

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.session, *keys)

    def alive(self) -> bool:
        return self("has-session", "-t", self.session, check=False).returncode == 0

    def kill(self) -> None:
        self("kill-server", check=False)


def poll(tmux: Tmux, condition, timeout: float, what: str) -> str:
    """The screen once ``condition(screen)`` holds; fails with the last screen after ``timeout``."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if condition(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}")


def step_on(screen: str) -> int | None:
    m = STEP.search(screen)
    return int(m.group(1)) if m else None


@pytest.mark.slow
@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_train_in_a_real_terminal_shows_steps_heads_and_pauses(tmp_path):
    runs = tmp_path / "runs"
    args = ["train", str(DEMO), "--runs-dir", str(runs), "--name", "e2e"]
    for item in SMALL:
        args += ["--set", item]
    # COLUMNS/LINES from the test runner would override the terminal's real size.
    env = (
        f"-u COLUMNS -u LINES PODIUM_CACHE={shlex.quote(os.environ['PODIUM_CACHE'])} "
        "TERM=xterm-256color"
    )
    # Textual draws on stderr: leave both streams on the terminal.
    command = (
        f"cd {shlex.quote(str(ROOT))} && env {env} {shlex.quote(sys.executable)} -m podium "
        + " ".join(shlex.quote(a) for a in args)
    )
    tmux = Tmux(tmp_path)
    try:
        tmux.start(command, 120, 40)
        first = poll(tmux, lambda s: (step_on(s) or 0) >= 2, 120, "the first steps")
        later = poll(
            tmux, lambda s: (step_on(s) or 0) >= step_on(first) + 3, 60, "the steps to advance"
        )
        assert "tempo" in later and "pitch" in later  # per-head losses in the legend
        assert "loss · total" in later and "running" in later

        tmux.keys("Space")
        paused = poll(tmux, lambda s: "● paused" in s, 30, "the header to say paused")
        at = step_on(paused)
        time.sleep(1.5)
        still = tmux.screen()
        assert "● paused" in still and step_on(still) == at, still
        (tmp_path / "screen-120x40.txt").write_text(still, encoding="utf-8")

        tmux.keys("q")
        poll(tmux, lambda s: "Stop and quit" in s, 20, "the quit dialog")
        # "Leave it running" has the focus (Enter alone keeps training); shift+tab: stop.
        tmux.keys("BTab")
        time.sleep(0.3)
        tmux.keys("Enter")
        deadline = time.monotonic() + 60
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), tmux.screen()
        end = json.loads((runs / "e2e" / "end.json").read_text())
        assert end["status"] == "stopped" and end["step"] >= at
    finally:
        tmux.kill()
