"""Runs that outlive the dashboard: attaching to them, detaching from them, losing the terminal.

Everything here uses real processes: a run started with ``podium train --detach`` (its own
session, no terminal) or a dashboard in a tmux pane, its control socket, its store and its locks.
The tmux tests kill the tmux server (the pane's terminal hangs up, as when an SSH link drops) or
press ctrl+d, and look from outside at what the run does next.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.engine.control import ControlClient
from podium.engine.errors import PodiumError
from podium.engine.runs import RunDir
from podium.engine.store import RunStore
from podium.tui.app import PodiumApp, terminal_hung_up
from podium.tui.cli import _attach_target
from podium.tui.remote import AttachedRun
from podium.tui.screens.home import HomeScreen
from podium.tui.screens.modals import LrModal
from podium.tui.screens.preview import GenerateModal, PreviewScreen
from podium.tui.widgets.panels import ResourcesPanel
from tests.test_tui_terminal import TMUX, Tmux, poll, step_on
from tests.tui_helpers import DEMO, ROOT, SMALL, sync, wait_for, wait_sync

LONG = (*SMALL, "train.epochs=500", "train.early_stopping.patience=0")
"""A run that trains until it is stopped (the tests stop it)."""


def podium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def sets(items=LONG) -> list[str]:
    out = []
    for item in items:
        out += ["--set", item]
    return out


def status(run: str, runs: Path) -> dict:
    proc = podium("control", run, "status", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def stop_and_wait(run: RunDir, timeout: float = 60) -> None:
    if run.is_live():
        with ControlClient.for_run(run.path) as client:
            client.request("stop", reason="test over")
    wait_sync(lambda: not run.is_live(), timeout, f"run {run.id} to end")


def stored_steps(run: RunDir) -> list[int]:
    store = RunStore.open(run.db_path, readonly=True)
    try:
        return [int(s) for s, _ in store.query("train/loss")]
    finally:
        store.close()


@pytest.fixture
def detached(tmp_path):
    """A run training in the background (``podium train --detach``), stopped after the test."""
    runs = tmp_path / "runs"
    proc = podium("train", str(DEMO), "--detach", "--name", "bg", "--runs-dir", str(runs), *sets())
    assert proc.returncode == 0, proc.stderr
    assert "podium attach bg" in proc.stdout
    run = RunDir(runs / "bg")
    wait_sync(lambda: run.db_path.exists() and len(stored_steps(run)) >= 20, 60, "20 steps")
    try:
        yield run
    finally:
        stop_and_wait(run)


@sync
async def test_attach_shows_history_and_live_steps_and_every_control_works(detached):
    run = detached
    app = PodiumApp(root=run.path.parent, profile_dirs=[])
    app.attach_to = run
    async with app.run_test(size=(120, 40)) as pilot:
        live = next(iter(app.live_runs.values()))
        assert isinstance(live, AttachedRun)
        await wait_for(pilot, lambda: live.phase == "training", 20, "the attach")
        assert run.status()[0] == "live"  # an attached viewer counts as a dashboard
        train = live.model.series["train/loss"]
        assert train.steps[0] == 1  # the whole history, from the store
        first = live.model.numbers.step
        await wait_for(pilot, lambda: live.model.numbers.step >= first + 5, 30, "live steps")
        assert list(train.steps) == sorted(set(train.steps))  # no step twice or backwards
        assert len(live.model.heads) == 9 and live.model.profile == "demo"
        assert live.model.device == "cpu" and live.model.steps_per_epoch
        # Every event type reaches an attached viewer, Scalars too: the conditioning check
        # (an epoch hook, every 2 epochs here) shows up live, beyond what the history held.
        stored_cond = live.history.points.get("cond/both", ([], []))[0]
        seen = max((s for s, _ in stored_cond), default=0)

        def live_check() -> bool:
            cond = live.model.series.get("cond/both")
            return cond is not None and bool(cond.steps) and cond.steps[-1] > seen

        await wait_for(pilot, live_check, 120, "a conditioning check, live")
        assert "cond/both" in live.model.numbers.latest
        panel = app.screen.query_one(ResourcesPanel)
        trainer_pid = json.loads((run.path / "lock").read_text())["pid"]
        await wait_for(
            pilot,
            lambda: f"pid {trainer_pid}" in str(panel.render()),
            10,
            "the trainer's RAM and CPU in the resources panel",
        )

        await pilot.press("space")
        await wait_for(pilot, lambda: live.model.state == "paused", 20, "paused")
        assert status("bg", run.path.parent)["state"] == "paused"
        at = live.model.numbers.step
        await pilot.pause(1.0)
        assert live.model.numbers.step == at

        await pilot.press("l")
        assert isinstance(app.screen, LrModal)
        app.screen.query_one("Input").value = "0.000123"
        await pilot.press("enter")
        wait_sync(
            lambda: abs(status("bg", run.path.parent)["lr"] - 1.23e-4) < 1e-9, 20, "the new lr"
        )

        def saves() -> int:
            return sum("saved" in e.text for e in live.model.log)

        before = saves()  # paused: only our save can add one
        await pilot.press("s")
        await wait_for(pilot, lambda: saves() > before, 30, "the save to be reported")
        await pilot.press("space")
        await wait_for(pilot, lambda: live.model.state == "running", 20, "running again")

        # g: a preview of the live weights, generated by the training process (its socket).
        await pilot.press("g")
        form = app.screen
        assert isinstance(form, GenerateModal)
        assert form.query_one("#f-checkpoint").value == "live"
        form.query_one("#f-emotion").value = "Q2"
        form.query_one("#f-bars").value = "2"
        form.query_one("#f-seed").value = "5"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen), 120, "the preview")
        await wait_for(pilot, lambda: app.screen.current is not None, 20, "the sample")
        sample = app.screen.current
        assert sample.parent == run.path / "samples" and sample.name.startswith("live-step")
        assert sample.name.endswith("-seed5.mid") and "-Q2-" in sample.name
        assert any("preview written" in n and "(Q2 " in n for n in app.notices)
        await pilot.press("escape")  # back to the run screen

        await pilot.press("escape")  # back: the home screen is built under it on the way
        assert isinstance(app.screen, HomeScreen)
        await wait_for(pilot, lambda: app.screen.query_one("#runs").row_count == 1, 10, "runs")
        await pilot.press("q")  # leaving an attached viewer: no question, the run goes on
        await pilot.pause(0.2)
    for viewer in app.attached:
        viewer.close()
    wait_sync(lambda: run.status()[0] == "detached", 10, "the viewer mark to go")
    before = status("bg", run.path.parent)["step"]
    wait_sync(lambda: status("bg", run.path.parent)["step"] > before, 30, "training to go on")


@sync
async def test_home_shows_the_detached_run_with_its_pid_and_enter_attaches(detached):
    run = detached
    pid = json.loads((run.path / "lock").read_text())["pid"]
    app = PodiumApp(root=run.path.parent, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: table.row_count == 1, 10, "the runs table")
        assert str(table.get_cell("bg", "state")) == f"● detached (pid {pid})"
        await pilot.press("enter")  # a live run of another process: attach
        live = app.screen.live
        assert isinstance(live, AttachedRun)
        await wait_for(pilot, lambda: live.phase == "training", 20, "the attach")
        assert run.status()[0] == "live"  # watched now
        await pilot.press("a")  # already attached: says so (not "attach is for a run live...")
        assert "already attached to run bg" in app.notices[-1]
        # Leaving the attached view lets go of the run: home and `podium runs` say detached
        # at once (the viewer stayed open, and they said "live", until the dashboard quit).
        await pilot.press("escape")
        assert isinstance(app.screen, HomeScreen)
        await wait_for(
            pilot,
            lambda: str(table.get_cell("bg", "state")) == f"● detached (pid {pid})",
            5,
            "detached in the runs table",
        )
        assert not app.attached
        await wait_for(pilot, live.done.is_set, 10, "the viewer to close")
        listed = json.loads(podium("runs", "--runs-dir", str(run.path.parent), "--json").stdout)
        assert [r["state"] for r in listed if r["id"] == "bg"] == ["detached"]
        await pilot.press("enter")  # attaching again works
        again = app.screen.live
        assert isinstance(again, AttachedRun) and again is not live
        await wait_for(pilot, lambda: again.phase == "training", 20, "the second attach")
    for viewer in app.attached:
        viewer.close()


def test_attach_picks_a_live_run_and_refuses_others(tmp_path, detached):
    root = detached.path.parent
    assert _attach_target(None, root).id == "bg"  # the newest live run of this user
    assert _attach_target("bg", root).id == "bg"
    with pytest.raises(PodiumError, match="no live run"):
        _attach_target(None, tmp_path / "empty")
    with pytest.raises(PodiumError, match="no run 'nope'"):
        _attach_target("nope", root)


def test_attach_refuses_a_run_that_is_not_live(tmp_path):
    runs = tmp_path / "runs"
    proc = podium(
        "train", str(DEMO), "--headless", "--max-steps", "3", "--name", "done",
        "--runs-dir", str(runs), *sets(SMALL),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(PodiumError, match=r"run done is not live \(stopped"):
        _attach_target("done", runs)


def dashboard_command(args: list[str]) -> str:
    env = (
        f"-u COLUMNS -u LINES PODIUM_CACHE={shlex.quote(os.environ['PODIUM_CACHE'])} "
        "TERM=xterm-256color"
    )
    return (
        f"cd {shlex.quote(str(ROOT))} && env {env} {shlex.quote(sys.executable)} -m podium "
        + " ".join(shlex.quote(a) for a in args)
    )


@pytest.mark.slow
@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_ssh_drop_keeps_training_and_attach_brings_the_history_back(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "drop")
    args = ["train", str(DEMO), "--runs-dir", str(runs), "--name", "drop", *sets()]
    tmux = Tmux(tmp_path)
    try:
        tmux.start(dashboard_command(args), 120, 40)
        seen = poll(tmux, lambda s: (step_on(s) or 0) >= 10, 120, "the first steps")
        pid = json.loads((run.path / "lock").read_text())["pid"]
        tmux.kill()  # the terminal goes away: SIGHUP, then EIO on the tty
        wait_sync(lambda: run.status()[0] == "detached", 15, "the run to be detached")
        first = status("drop", runs)
        assert first["pid"] == pid  # the same process trains on
        wait_sync(lambda: status("drop", runs)["step"] >= first["step"] + 5, 30, "more steps")
        log = run.log_path.read_text()
        assert "terminal hung up; training continues" in log

        attach = Tmux(tmp_path)
        try:
            attach.start(dashboard_command(["attach", "--runs-dir", str(runs)]), 120, 40)
            screen = poll(
                attach,
                # The heads legend too: a capture can land between the header and the panels.
                lambda s: "attached" in s and "tempo" in s and (step_on(s) or 0) > first["step"],
                60,
                "the attached run screen with its panels",
            )
            assert "drop" in screen
            assert run.status()[0] == "live"
            # The plot spans the history from before the drop (its axis reaches the early steps).
            at = step_on(screen)
            assert at is not None and at > step_on(seen)
            later = poll(attach, lambda s: (step_on(s) or 0) > at, 30, "live steps")
            assert "● running" in later
            attach.keys("q")
            wait_sync(lambda: not attach.alive(), 20, "the viewer to close")
        finally:
            attach.kill()
        wait_sync(lambda: run.status()[0] == "detached", 10, "detached again")
        steps = stored_steps(run)
        assert steps == sorted(set(steps)) and steps[0] == 1
    finally:
        tmux.kill()
        stop_and_wait(run)
    assert json.loads(run.end_path.read_text())["status"] == "stopped"


@pytest.mark.slow
@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_detach_key_returns_the_shell_and_the_run_goes_on(tmp_path):
    runs = tmp_path / "runs"
    run = RunDir(runs / "handed")
    args = ["train", str(DEMO), "--runs-dir", str(runs), "--name", "handed", *sets()]
    tmux = Tmux(tmp_path)
    try:
        tmux.start("env PS1='$ ' bash --norc --noprofile", 120, 40)
        tmux.keys(dashboard_command(args) + "; echo shell-is-back-$?", "Enter")
        poll(tmux, lambda s: (step_on(s) or 0) >= 10, 120, "the first steps")
        old_pid = json.loads((run.path / "lock").read_text())["pid"]
        tmux.keys("C-d")
        screen = poll(tmux, lambda s: "shell-is-back-0" in s, 60, "the shell prompt")
        assert "podium attach handed" in screen
        state = status("handed", runs)
        assert state["pid"] != old_pid and run.status()[0] == "detached"
        wait_sync(lambda: status("handed", runs)["step"] >= state["step"] + 5, 30, "more steps")
    finally:
        tmux.kill()
        stop_and_wait(run)
    steps = stored_steps(run)
    assert steps == sorted(set(steps))  # the hand-over continued the series without a gap
    assert steps == list(range(1, steps[-1] + 1))


def test_terminal_hung_up_reads_eio_from_a_dead_pty():
    master, slave = os.openpty()
    try:
        assert not terminal_hung_up(slave)
        os.close(master)
        assert terminal_hung_up(slave)
    finally:
        os.close(slave)


@pytest.mark.slow
def test_a_terminal_that_fails_with_eio_without_sighup_still_detaches(tmp_path):
    """The pty is not the dashboard's controlling terminal, so closing it sends no SIGHUP: the
    dashboard notices the EIO itself, closes its UI and trains on."""
    runs = tmp_path / "runs"
    run = RunDir(runs / "eio")
    master, slave = os.openpty()
    os.set_blocking(master, False)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "train", str(DEMO), "--runs-dir", str(runs),
         "--name", "eio", *sets()],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
    )  # fmt: skip
    os.close(slave)
    drawn = bytearray()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            run.db_path.exists() and len(stored_steps(run)) >= 5
        ):
            with contextlib.suppress(BlockingIOError, OSError):
                drawn += os.read(master, 1 << 16)  # keep the terminal drained
            time.sleep(0.05)
        assert b"loss" in drawn  # the dashboard was drawing on the pty
        assert run.status()[0] == "live"
        os.close(master)
        master = -1
        wait_sync(lambda: run.status()[0] == "detached", 20, "the dashboard to let go")
        assert proc.poll() is None  # the same process trains on
        before = status("eio", runs)["step"]
        wait_sync(lambda: status("eio", runs)["step"] > before + 3, 30, "more steps")
        assert "terminal hung up" in run.log_path.read_text()
    finally:
        if master >= 0:
            os.close(master)
        stop_and_wait(run)
        proc.wait(30)
    assert proc.returncode == 0
