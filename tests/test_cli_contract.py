"""What a new user hit at the command line (issue 11), through the real ``podium`` process.

Runs are the toy family's (tests/families/toy: seconds on a CPU). "Dashboard mode" is a command
without ``--headless``: run without a terminal it must still report the mistake itself (one line,
exit 2, the line ``--headless`` prints) rather than "the dashboard needs a terminal"; the pty test
shows that with a terminal no UI starts either.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_nvml import isolate, lab_config, lab_devices, write_fake
from tests.podium_cli import podium

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
DEMO = str(ROOT / "profiles" / "demo.toml")
PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contract") / "runs"


@pytest.fixture(scope="module")
def finished(runs) -> str:
    """A toy run trained to the end of its schedule (60 steps)."""
    out = podium("train", TOY, "--headless", "--name", "done", "--runs-dir", str(runs)).stdout
    assert "run done finished at step 60" in out
    return "done"


def closed_pipe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``podium ARGS`` writing into a pipe whose reader has already gone (``| head`` at its end)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "podium", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("podium"), proc.stderr
    assert "Traceback" not in proc.stderr and "needs a terminal" not in proc.stderr
    return lines[0]


def same_in_both_modes(*args: str) -> str:
    """The one-line refusal of ``podium ARGS``, the same in dashboard mode and ``--headless``."""
    dashboard = one_line_error(podium(*args, check=False))
    assert one_line_error(podium(*args, "--headless", check=False)) == dashboard
    return dashboard


# ----------------------------------------------------------------------------------------------
# 1. A reader that stops early


@pytest.mark.parametrize("fmt", ["--csv", "--json"])
def test_metrics_into_a_closed_pipe_ends_quietly(runs, finished, fmt):
    proc = closed_pipe("metrics", finished, fmt, "--runs-dir", str(runs))
    assert proc.returncode == PIPE_CLOSED and proc.stderr == ""


def test_help_and_listings_into_a_closed_pipe_end_quietly(runs, finished):
    for args in (
        ["--help"],
        ["runs", "--runs-dir", str(runs)],
        ["checkpoints", finished, "--runs-dir", str(runs)],
    ):
        proc = closed_pipe(*args)
        # argparse drops a failed write of its help itself: 0 is the convention's other answer.
        ok = {0, PIPE_CLOSED} if args == ["--help"] else {PIPE_CLOSED}
        assert proc.returncode in ok and proc.stderr == "", (args, proc.returncode, proc.stderr)


def test_metrics_json_can_be_indented_and_narrowed(runs, finished):
    flat = podium("metrics", finished, "--json", "--runs-dir", str(runs)).stdout
    assert flat.count("\n") == 1  # one line: a reader needs --indent
    spread = podium("metrics", finished, "--json", "--indent", "1", "--runs-dir", str(runs))
    assert spread.stdout.count("\n") > 100 and json.loads(spread.stdout) == json.loads(flat)
    only = json.loads(
        podium("metrics", finished, "--json", "--series", "lr", "--runs-dir", str(runs)).stdout
    )
    assert list(only["series"]) == ["lr"]
    helped = podium("metrics", "--help").stdout
    assert "--indent" in helped and "--series" in helped
    assert "--indent N is for --json" in one_line_error(
        podium("metrics", finished, "--csv", "--indent", "2", "--runs-dir", str(runs), check=False)
    )


# ----------------------------------------------------------------------------------------------
# 13. The commands printed after a detach work in a fresh shell; 1. `control status | head`


FRESH_PATH = "/usr/bin:/bin"  # a new login's PATH: no venv on it


@pytest.fixture(scope="module")
def detached(runs):
    """A long toy run trained by a detached podium started with the venv off PATH, kept paused."""
    env = {**os.environ, "PATH": FRESH_PATH}
    env.pop("VIRTUAL_ENV", None)
    out = podium(
        "train", TOY, "--detach", "--name", "bg", "--set", "train.epochs=100000",
        "--runs-dir", str(runs), env=env,
    ).stdout  # fmt: skip
    try:
        commands = dict(re.findall(r"^\s+(attach|status|stop):\s+(.+)$", out, re.M))
        assert set(commands) == {"attach", "status", "stop"}, out
        paused = fresh_shell(commands["status"].replace(" status", " pause"), env)
        assert paused.returncode == 0, paused.stderr  # idle from here on: the tests only read it
        yield commands, env
    finally:  # a 100000-epoch run must not outlive a failed set-up or test
        podium("control", "bg", "stop", "--runs-dir", str(runs), check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs)).stdout)
            if {r["state"] for r in listed if r["id"] == "bg"} & {"live", "detached"}:
                time.sleep(0.5)
            else:
                break
        else:
            pid = json.loads((runs / "bg" / "lock").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)


def fresh_shell(command: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        env={**env, "PATH": FRESH_PATH},
        cwd="/",
        timeout=120,
    )


def test_the_commands_printed_after_a_detach_run_in_a_fresh_shell(detached):
    commands, env = detached
    status = fresh_shell(commands["status"], env)
    assert status.returncode == 0, (commands["status"], status.stderr)
    assert json.loads(status.stdout)["step"] >= 0
    program, *rest = shlex.split(commands["attach"])
    assert rest[:2] == ["attach", "bg"] and Path(program).is_absolute()  # podium is off PATH


def test_the_printed_command_is_plain_podium_only_where_a_new_shell_finds_it():
    from podium.engine.detach import podium_command

    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "podium").is_file():
        pytest.skip("podium is not installed as a console script next to this python")
    assert podium_command({"PATH": f"{venv_bin}:{FRESH_PATH}"}) == "podium"
    assert podium_command({"PATH": FRESH_PATH}) == str(venv_bin / "podium")
    activated = {"PATH": f"{venv_bin}:{FRESH_PATH}", "VIRTUAL_ENV": str(venv_bin.parent)}
    assert podium_command(activated) == str(venv_bin / "podium")  # a new shell is not activated


def test_control_status_into_a_closed_pipe_ends_quietly(detached, runs):
    proc = closed_pipe("control", "bg", "status", "--runs-dir", str(runs))
    assert proc.returncode == PIPE_CLOSED and proc.stderr == ""


# ----------------------------------------------------------------------------------------------
# 2, 3. Mistakes are refused before any UI, the same way in every mode


def test_resume_without_a_checkpoint_is_refused_before_the_ui(runs):
    from tests.tui_helpers import make_stored_run

    run = make_stored_run(runs, "bare", steps=20, checkpoints=False)
    run.end_path.unlink()  # killed before its first checkpoint: interrupted, nothing to load
    line = same_in_both_modes("resume", "bare", "--runs-dir", str(runs))
    assert "run bare has no checkpoint to resume from" in line


def test_branching_from_a_missing_checkpoint_is_refused_before_the_ui(runs, finished):
    line = same_in_both_modes("resume", finished, "--checkpoint", "nope", "--runs-dir", str(runs))
    assert "no checkpoint named 'nope'" in line
    assert sorted(p.name for p in runs.iterdir() if p.name.startswith("done")) == ["done"]


def test_a_reserved_gpu_is_refused_before_the_ui(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    config = lab_config(box, box / "leases")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    runs = tmp_path / "runs"
    line = same_in_both_modes("train", DEMO, "--gpus", "0,", "--runs-dir", str(runs))
    assert "reserved" in line and f"{config}:" in line
    line = one_line_error(
        podium("train", DEMO, "--gpus", "0", "--runs-dir", str(runs), check=False)
    )
    assert "--gpus 0: a count must be at least 1; write --gpus 0, for GPU 0" in line
    assert not runs.exists() or not any(runs.iterdir())


def test_resuming_a_finished_run_is_refused_and_says_how_to_train_longer(runs, finished):
    before = (runs / finished / "end.json").read_bytes()
    line = same_in_both_modes("resume", finished, "--runs-dir", str(runs))
    assert f"run {finished} finished" in line and "--set train.epochs=" in line
    assert (runs / finished / "end.json").read_bytes() == before  # untouched: not "resumed"
    # A limit past the end cannot train longer either (the schedule is the profile's).
    one_line_error(
        podium("resume", finished, "--headless", "--max-epochs", "9", "--runs-dir", str(runs),
               check=False)
    )  # fmt: skip


def test_a_run_stopped_by_a_limit_resumes_to_a_later_one_only(runs):
    common = ["--headless", "--runs-dir", str(runs)]
    podium("train", TOY, *common, "--name", "short", "--max-steps", "10")
    line = one_line_error(podium("resume", "short", *common, "--max-steps", "10", check=False))
    assert "--max-steps 10: run short is already at step 10" in line
    out = podium("resume", "short", *common, "--max-steps", "20").stdout
    assert "run short stopped at step 20" in out


def test_attach_to_a_run_that_is_not_live_says_so_without_a_terminal(runs, finished):
    line = one_line_error(podium("attach", finished, "--runs-dir", str(runs), check=False))
    assert f"run {finished} is not live (finished" in line
    assert "no run 'nope'" in one_line_error(
        podium("attach", "nope", "--runs-dir", str(runs), check=False)
    )


def test_the_dashboard_in_a_terminal_opens_no_ui_for_a_mistake(runs, finished):
    """A real pty: the refusal is printed and podium exits 2 before Textual takes the screen."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: podium in a terminal, as a user runs it
        os.chdir(ROOT)
        argv = ["resume", finished, "--checkpoint", "nope", "--runs-dir", str(runs)]
        os.execv(sys.executable, [sys.executable, "-m", "podium", *argv])
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    break
                if not chunk:
                    break
                screen += chunk
        done, status = os.waitpid(pid, os.WNOHANG)
        while done == 0 and time.monotonic() < deadline + 10:  # exiting: the pty closed first
            time.sleep(0.1)
            done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"podium still running after 60 s (a UI opened?): {screen[-400:]!r}")
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 2
    assert b"no checkpoint named 'nope'" in screen
    assert b"\x1b[?1049h" not in screen  # Textual's alternate screen never came up


# ----------------------------------------------------------------------------------------------
# 17. Every option says what it does; usage mistakes are one line


def test_every_option_of_every_command_has_help():
    from podium.engine.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = set()
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if not (action.help or "").strip():
                missing.add((command, name))
    assert not missing, sorted(missing)
    listed = {a.dest for a in sub._choices_actions}
    assert listed == set(sub.choices), "a command missing from `podium --help`"
    assert all(a.help for a in sub._choices_actions)


def test_set_lr_without_a_value_is_a_one_line_usage_error(runs):
    line = one_line_error(
        podium("control", "anyrun", "set-lr", "--runs-dir", str(runs), check=False)
    )
    assert "set-lr needs the new learning rate" in line and "None" not in line
    line = one_line_error(
        podium("control", "anyrun", "set-lr", "fast", "--runs-dir", str(runs), check=False)
    )
    assert "set-lr fast: the learning rate must be a number" in line


# ----------------------------------------------------------------------------------------------
# 18. The README's run screen is the real program's


def test_the_readme_capture_is_the_one_the_capture_script_makes():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_capture.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
