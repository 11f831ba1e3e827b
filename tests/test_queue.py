"""``podium queue``: the per-user GPU queue, on the FAKE NVML lab with real processes.

The lab (tests/fake_nvml.py): GPUs 0 and 1 reserved lab-wide, 2 and 3 free. The waiter and the
runs it starts are real detached processes (toy runs, trained on the CPU since the fake GPUs are
no CUDA devices, holding real leases on the fake GPUs' UUIDs); the ``podium queue`` commands run
in this process through the CLI's ``main``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from podium.engine.cli.main import main
from podium.engine.gpus.leases import holders
from podium.engine.queue.store import Entry, Queue
from podium.engine.queue.waiter import Waiter
from podium.tui.app import PodiumApp
from podium.tui.screens.home import QUEUE_KEY
from tests.fake_nvml import (
    ROOT,
    end,
    hold_lease,
    isolate,
    lab_config,
    lab_devices,
    uuid,
    write_fake,
)
from tests.tui_helpers import make_stored_run, sync, wait_for

TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
LONG = ["--set", "train.epochs=2000", "--set", "train.cpu_threads=1"]
"""Runs that last until the test ends them (a toy epoch is a few milliseconds)."""


@pytest.fixture
def lab(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    lab_config(box, box / "leases")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    monkeypatch.setenv("XDG_STATE_HOME", str(box / "state"))
    monkeypatch.setenv("PODIUM_QUEUE_POLL_S", "0.3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    queue = Queue()
    yield queue, box
    # Whatever the test left: nothing queued may start any more (cancelled under the queue's
    # lock, which a waiter holds while it starts runs), then the waiter and the runs go.
    with queue.locked():
        for entry in queue.entries():
            if entry.state == "queued":
                entry.state = "cancelled"
                queue.save(entry)
    pid = queue.waiter_pid()
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for entry in queue.entries():
        if entry.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, signal.SIGKILL)


def queue_cmd(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["queue", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def states(queue: Queue) -> dict[int, str]:
    return {e.id: e.state for e in queue.entries()}


def lease_holders(box) -> dict[int, set[str]]:
    """Which runs hold each free fake GPU's lease, read from the lease files themselves."""
    out = {}
    for index in (2, 3):
        info = holders(uuid(index), lease_dir=box / "leases", admins=[os.getuid()])
        out[index] = {h.run_id for h in info.holders} if info is not None else set()
    return out


def test_three_runs_two_free_gpus_one_ends_the_third_starts(lab, capsys, tmp_path):
    queue, box = lab
    runs = str(tmp_path / "runs")
    for _ in range(3):
        code, out, err = queue_cmd(capsys, TOY, "--gpus", "1", *LONG, "--runs-dir", runs)
        assert code == 0, err
    assert "queued entry 3" in out and "2 ahead of it" in out

    # Two free GPUs: entries 1 and 2 start, one GPU each; 3 waits and names what for.
    wait(lambda: states(queue) == {1: "started", 2: "started", 3: "queued"}, 60, "two runs")
    first, second, third = queue.entries()
    assert {first.gpu_indices[0], second.gpu_indices[0]} == {2, 3}
    assert lease_holders(box) == {
        first.gpu_indices[0]: {first.run_id},
        second.gpu_indices[0]: {second.run_id},
    }
    assert third.waiting.startswith("1 free GPU (0 free now): ")
    assert third.waiting.endswith("GPUs 0, 1 reserved")
    for entry in (first, second):
        assert f"GPU {entry.gpu_indices[0]} leased by {getpass.getuser()}'s run {entry.run_id}" in (
            third.waiting
        )
    code, out, _ = queue_cmd(capsys)
    assert code == 0 and "1 free GPU (0 free now)" in out and "waiter: pid" in out

    # A killed waiter is noticed by the next `podium queue` and replaced.
    old = queue.waiter_pid()
    assert old
    os.kill(old, signal.SIGKILL)
    wait(lambda: not queue.waiter_alive(), 10, "the killed waiter's lock to go")
    code, out, _ = queue_cmd(capsys)
    assert "started now" in out
    new = wait(queue.waiter_pid, 10, "a new waiter")
    assert new != old

    # Cancel: a fourth entry waits behind the third, is cancelled, and never starts.
    code, _, _ = queue_cmd(capsys, TOY, "--gpus", "1", *LONG, "--runs-dir", runs)
    assert code == 0
    wait(lambda: "entry 3 first" in queue.get(4).waiting, 10, "the fourth to wait behind the third")
    code, out, _ = queue_cmd(capsys, "cancel", "4")
    assert code == 0 and "cancelled queue entry 4" in out
    code, _, err = queue_cmd(capsys, "cancel", "99")
    assert code == 2 and err.count("\n") == 1 and "no such entry" in err
    code, _, err = queue_cmd(capsys, "cancel", "1")
    assert code == 2 and "started" in err

    # The first run ends: the third starts on the GPU it freed, under the new waiter.
    os.kill(first.pid, signal.SIGTERM)
    third = wait(lambda: (e := queue.get(3)).state == "started" and e, 60, "the third run to start")
    assert third.gpu_indices == first.gpu_indices
    assert lease_holders(box)[first.gpu_indices[0]] == {third.run_id}
    assert lease_holders(box)[second.gpu_indices[0]] == {second.run_id}
    assert states(queue) == {1: "started", 2: "started", 3: "started", 4: "cancelled"}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        (first.run_id, second.run_id, third.run_id)
    )
    log = (queue.waiter_log_path).read_text()
    assert log.count("started run") == 3 and "failed" not in log

    # Nothing left to start: the waiter exits by itself.
    for entry in (second, third):
        os.kill(entry.pid, signal.SIGTERM)
    wait(lambda: not queue.waiter_alive(), 20, "the waiter to exit")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--gpus", "1", "--set", "train.nosuch=1"], "train.nosuch"),
        ([], "a CPU run waits for no GPU"),  # the toy profile trains on the CPU
        (["--gpus", "0,"], "reserved"),
        (["--gpus", "3"], "2 that are not reserved"),
    ],
)
def test_a_request_that_could_never_start_is_refused_and_not_queued(lab, capsys, args, words):
    queue, _ = lab
    code, _, err = queue_cmd(capsys, TOY, *args, "--runs-dir", str(queue.path / "runs"))
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err
    assert queue.entries() == [] and not queue.waiter_alive()


@sync
async def test_the_home_screen_shows_a_queued_run_and_what_it_waits_for(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = tmp_path / "runs"
    make_stored_run(root, "alpha", steps=10, checkpoints=False)
    queue = Queue()
    waits = "1 free GPU (0 free now): GPU 2 leased by bob's run x; GPU 3 leased by alice's run y"
    entry = Entry(
        id=0, profile=TOY, profile_name="toy", gpus="1", runs_dir=str(root.resolve()), cwd="/"
    )
    queue.add(entry)
    entry.waiting = waits
    with queue.locked():
        queue.save(entry)
    elsewhere = Entry(id=0, profile=TOY, profile_name="other", gpus="1", runs_dir="/x", cwd="/")
    queue.add(elsewhere)  # another runs root: not this screen's
    app = PodiumApp(root=root)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: table.row_count == 2, 10, "the run and the queued entry")
        cells = [str(c) for c in table.get_row(f"{QUEUE_KEY}{entry.id}")]
        assert cells[0] == f"queue #{entry.id}" and cells[1] == "toy"
        assert "queued for 1 free GPU (0 free now): GPU 2 leased by bob's run x; GPU" in cells[2]
        assert table.get_row_index(f"{QUEUE_KEY}{entry.id}") == 0  # above the runs
        with queue.locked():
            entry.state = "cancelled"
            queue.save(entry)
        await wait_for(pilot, lambda: table.row_count == 1, 10, "the cancelled entry to go")


def test_a_new_waiter_keeps_a_starting_runs_gpu_and_requeues_a_run_that_lost_its_lease(
    lab, tmp_path
):
    """What a waiter finds on disk after its predecessor died: one run still starting (its GPU
    not leased yet) and one whose start failed because another run leased its GPU first (its
    pid now another process's)."""
    queue, box = lab
    runs = str(tmp_path / "runs")
    base = dict(profile=TOY, profile_name="toy", gpus="1", runs_dir=runs, cwd=str(ROOT))
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = hold_lease(uuid(2), "someone-elses-run", box / "leases")
    try:
        a = queue.add(Entry(id=0, **base))
        b = queue.add(Entry(id=0, **base))
        c = queue.add(Entry(id=0, **base))
        with queue.locked():
            a.state, a.run_id, a.pid = "starting", "toy-a", starting.pid
            a.gpu_uuids, a.gpu_indices = [uuid(3)], [3]
            queue.save(a)
            # b's run has exited and its pid went to another process (a start time that differs)
            b.state, b.run_id, b.pid, b.pid_start = "starting", "toy-b", starting.pid, 1
            b.gpu_uuids, b.gpu_indices = [uuid(2)], [2]
            queue.save(b)
        queue.start_log_path(b.id).write_text(
            f"podium: error: --gpus {uuid(2)}: GPU {uuid(2)} is leased by alice (run x); "
            "choose another GPU or wait\n"
        )
        Waiter(queue).step()
        a, b, c = queue.entries()
        assert a.state == "starting"  # its process lives, its GPU is not leased yet: still counted
        assert b.state == "queued" and b.run_id is None and "taken as it started" in b.reason
        me = getpass.getuser()
        assert f"GPU 3 leased by {me}'s run toy-a starting from queue entry 1" in b.waiting
        assert f"GPU 2 leased by {me}'s run someone-elses-run" in b.waiting
        assert c.state == "queued" and c.waiting == "entry 2 first (the queue keeps its order)"
        assert not (tmp_path / "runs").exists()  # nothing was started on a taken GPU
    finally:
        starting.kill()
        starting.wait()
        end(holder)


def test_queueing_deletes_entries_that_ended_long_ago_past_the_newest_ones(tmp_path):
    """Ended entries older than a week go when a run is queued, except the newest
    ``ENDED_KEEP``; a waiting entry stays whatever its age, and ids keep counting up."""
    from podium.engine.queue import store

    q = Queue(tmp_path / "q")
    old = time.time() - store.ENDED_KEEP_S - 3600
    states = ["started", "failed", "cancelled"]
    with q.locked():
        for i in range(1, store.ENDED_KEEP + 6):
            e = Entry(id=i, profile="p.toml", profile_name="p", gpus="auto", runs_dir="r", cwd=".")
            e.state = "queued" if i == 2 else states[i % 3]
            q.save(e)
            q.start_log_path(i).write_text("started\n")
            data = e.to_dict() | {"updated": old, "created": old}
            q.entry_path(i).write_text(json.dumps(data))
    recent = Entry(id=0, profile="p.toml", profile_name="p", gpus="auto", runs_dir="r", cwd=".")
    added = q.add(recent)
    assert added.id == store.ENDED_KEEP + 6
    ids = [e.id for e in q.entries()]
    ended = [i for i in range(1, store.ENDED_KEEP + 6) if i != 2]
    kept = ended[-store.ENDED_KEEP :]
    assert ids == sorted([2, *kept, added.id]), ids
    for i in set(ended) - set(kept):
        assert not q.entry_path(i).exists() and not q.start_log_path(i).exists()
    assert q.start_log_path(kept[0]).exists()
    # Recent ended entries are never deleted, however many.
    assert q.prune(q.entries(), time.time() - store.ENDED_KEEP_S) == []
    first = added.id
    again = Entry(id=0, profile="p.toml", profile_name="p", gpus="auto", runs_dir="r", cwd=".")
    assert q.add(again).id == first + 1
