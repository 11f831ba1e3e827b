"""Run directories: safe ids, states derived from a real lock held by a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from podium.engine.errors import RunError
from podium.engine.runs import (
    RunDir,
    check_run_id,
    create_run,
    list_runs,
    new_info,
    resolve_run,
    runs_root,
)


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "../x", "a/b", "-rf", "x y", "ü", "a" * 101, ".hidden"]
)
def test_unsafe_run_names_are_refused(bad):
    with pytest.raises(RunError, match="not a safe run name"):
        check_run_id(bad)


def test_create_refuses_existing_name_and_generates_ids(tmp_path):
    run = create_run(tmp_path, profile_name="demo", name="mine")
    assert run.path == tmp_path / "mine"
    with pytest.raises(RunError, match="already exists"):
        create_run(tmp_path, profile_name="demo", name="mine")
    a = create_run(tmp_path, profile_name="demo")
    b = create_run(tmp_path, profile_name="demo")
    assert a.id.startswith("demo-") and b.id != a.id


def test_runs_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("PODIUM_RUNS", raising=False)
    assert str(runs_root(None)) == "runs"
    monkeypatch.setenv("PODIUM_RUNS", str(tmp_path))
    assert runs_root(None) == tmp_path
    assert runs_root("/x") == Path("/x")


def _child_holding_lock(path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from podium.engine.runs import RunDir
        run = RunDir(Path({str(path)!r}))
        run.acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_state_follows_the_lock_and_the_end_marker(tmp_path):
    run = create_run(tmp_path, profile_name="demo", name="r1")
    run.write_info(new_info(run, profile="demo", family="cp", source="demo.toml"))
    assert run.status()[0] == "new"
    child = _child_holding_lock(run.path)
    try:
        state, holder = run.status()
        assert state == "detached" and str(child.pid) in holder
        with pytest.raises(RunError, match="is live"):
            RunDir(run.path).acquire()
        viewer = run.hold_viewer()  # e.g. a dashboard attached from another terminal
        assert run.status()[0] == "live"
        viewer.release()
        assert run.status()[0] == "detached"  # live, nobody watching
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # Killed without a clean end: the kernel dropped the lock, no end marker -> interrupted.
    assert run.status()[0] == "interrupted"
    run.mark_end("stopped", "by user", 12)
    assert run.status() == ("stopped", "by user")
    run.acquire()  # a resume takes the lock again
    assert run.status()[0] == "detached"
    viewer = run.hold_viewer()
    assert run.status()[0] == "live"
    viewer.release()
    run.release()


def test_resolve_run_by_id_or_path(tmp_path):
    run = create_run(tmp_path, profile_name="demo", name="r2")
    run.write_info(new_info(run, profile="demo", family="cp", source="demo.toml"))
    assert resolve_run("r2", tmp_path).path == run.path
    assert resolve_run(str(run.path), tmp_path / "elsewhere").path == run.path
    with pytest.raises(RunError, match="no run 'r3'"):
        resolve_run("r3", tmp_path)
    with pytest.raises(RunError, match="not a safe run name"):
        resolve_run("bad name", tmp_path)
    time.sleep(0.01)
    later = create_run(tmp_path, profile_name="demo", name="r0")
    later.write_info(new_info(later, profile="demo", family="cp", source="demo.toml"))
    assert [r.id for r in list_runs(tmp_path)] == ["r2", "r0"]


def test_a_liveness_probe_at_the_moment_of_acquire_is_not_a_live_run(tmp_path):
    """``is_live`` takes the lock file's shared lock for a moment (a dashboard's poller does it
    while the session starts): acquire must wait that out, not call the run live."""
    import fcntl
    import threading

    run = create_run(tmp_path, profile_name="demo", name="r2")
    fd = os.open(run.path / "lock", os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe, caught in the act
    threading.Timer(0.2, os.close, (fd,)).start()  # ... that lets go, as probes do
    run.acquire()
    assert run.status()[0] == "detached"
    run.release()
    # A probe never holds it long: a lock held past the grace is a live run, still refused.
    fd = os.open(run.path / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        with pytest.raises(RunError, match=r"is held \(a shared lock\) by pid"):
            RunDir(run.path).acquire()
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("\x00\x13garbage{", "not a readable run.json"),
        ('["a list"]', "expected a JSON object"),
        (None, "created: expected int or float, got 'x'"),
        ('{"id": "bad"}', "missing created, family, host, profile, user"),
    ],
)
def test_a_damaged_run_json_is_named_and_the_other_runs_are_still_listed(tmp_path, text, problem):
    good = create_run(tmp_path, profile_name="demo", name="good")
    good.write_info(new_info(good, profile="demo", family="cp", source="demo.toml"))
    bad = create_run(tmp_path, profile_name="demo", name="bad")
    bad.write_info(new_info(bad, profile="demo", family="cp", source="demo.toml"))
    if text is None:  # a run.json whose value has the wrong type, e.g. edited by hand
        data = json.loads((bad.path / "run.json").read_text())
        (bad.path / "run.json").write_text(json.dumps({**data, "created": "x"}))
    else:
        (bad.path / "run.json").write_text(text)
    later = create_run(tmp_path, profile_name="demo", name="later")
    later.write_info(new_info(later, profile="demo", family="cp", source="demo.toml"))
    runs = list_runs(tmp_path)  # sorting by "created" compared 'x' with a float: TypeError
    assert [r.id for r in runs] == ["bad", "good", "later"]
    with pytest.raises(RunError) as err:
        runs[0].info()
    assert str(bad.path / "run.json") in str(err.value) and problem in str(err.value)
    assert runs[1].info().id == "good"
