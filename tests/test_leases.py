"""Leases: real flocks, real child processes, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from podium.engine.gpus.leases import (
    LeaseBusy,
    LeaseError,
    acquire,
    ensure_lease_dir,
    holders,
    lease_path,
)
from tests.fake_nvml import ROOT, end, hold_lease, uuid

GPU = uuid(2)


@pytest.fixture
def lease_dir(tmp_path: Path) -> Path:
    return tmp_path / "leases"


def test_acquire_records_holder_and_release_frees(lease_dir):
    assert holders(GPU, lease_dir=lease_dir) is None  # probing creates nothing
    assert not lease_dir.exists()
    with acquire(GPU, "run-a", lease_dir=lease_dir) as lease:
        info = holders(GPU, lease_dir=lease_dir)
        assert info is not None and not info.shared
        (holder,) = info.holders
        assert (holder.pid, holder.run_id, holder.uid) == (os.getpid(), "run-a", os.getuid())
        assert holder.host == socket.gethostname()
        assert abs(holder.started - time.time()) < 60
        assert "run run-a" in info.describe() and f"pid {os.getpid()}" in info.describe()
        assert lease.held
    assert not lease.held
    assert holders(GPU, lease_dir=lease_dir) is None
    lease.release()  # twice is fine
    assert lease_path(GPU, lease_dir).read_text() == ""  # no stale record after release


def test_a_second_exclusive_request_is_refused_naming_the_holder(lease_dir):
    with acquire(GPU, "run-a", lease_dir=lease_dir):
        with pytest.raises(LeaseBusy) as err:
            acquire(GPU, "run-b", lease_dir=lease_dir, wait_seconds=0.05)
        assert "run run-a" in str(err.value) and f"pid {os.getpid()}" in str(err.value)
        assert err.value.exit_code == 2
        assert err.value.info is not None and err.value.info.holders[0].run_id == "run-a"
    acquire(GPU, "run-b", lease_dir=lease_dir).release()


def test_shared_leases_coexist_and_exclude_exclusive_ones(lease_dir):
    a = acquire(GPU, "share-a", shared=True, lease_dir=lease_dir)
    b = acquire(GPU, "share-b", shared=True, lease_dir=lease_dir)
    info = holders(GPU, lease_dir=lease_dir)
    assert info is not None and info.shared
    assert [h.run_id for h in info.holders] == ["share-a", "share-b"]
    with pytest.raises(LeaseBusy, match="--share-gpu"):
        acquire(GPU, "solo", lease_dir=lease_dir, wait_seconds=0.05)
    a.release()
    info = holders(GPU, lease_dir=lease_dir)
    assert info is not None and [h.run_id for h in info.holders] == ["share-b"]  # tombstone
    b.release()
    assert holders(GPU, lease_dir=lease_dir) is None
    with (
        acquire(GPU, "solo", lease_dir=lease_dir),
        pytest.raises(LeaseBusy, match="exclusively"),
    ):
        acquire(GPU, "share-c", shared=True, lease_dir=lease_dir, wait_seconds=0.05)


def test_uuid_spelling_does_not_matter(lease_dir):
    with acquire(GPU.upper(), "run-a", lease_dir=lease_dir):
        assert holders(GPU.lower(), lease_dir=lease_dir) is not None


def test_lease_dir_is_sticky_and_world_writable_and_files_are_0666(lease_dir):
    old = os.umask(0o022)
    try:
        with acquire(GPU, "run-a", lease_dir=lease_dir) as lease:
            mode = stat.S_IMODE(lease_dir.stat().st_mode)
            assert mode == 0o1777
            assert stat.S_IMODE(lease.path.stat().st_mode) == 0o666
    finally:
        os.umask(old)


def test_readers_tolerate_partial_and_foreign_content(lease_dir):
    ensure_lease_dir(lease_dir)
    path = lease_path(GPU, lease_dir)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666);"
            'os.write(fd, b\'{"user": "bob", "pid": 1\'); fcntl.flock(fd, fcntl.LOCK_EX);'
            "print('held', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        info = holders(GPU, lease_dir=lease_dir)
        assert info is not None and info.holders == ()  # held, but no readable record
        with pytest.raises(LeaseBusy, match="no readable record"):
            acquire(GPU, "run-a", lease_dir=lease_dir, wait_seconds=0.05)
    finally:
        end(child)
    with acquire(GPU, "run-a", lease_dir=lease_dir):  # a stale half-record does not block
        assert json.loads(path.read_text())["run_id"] == "run-a"


def test_a_symlink_in_place_of_a_lease_file_is_refused(lease_dir, tmp_path):
    ensure_lease_dir(lease_dir)
    (tmp_path / "target").write_text("")
    lease_path(GPU, lease_dir).symlink_to(tmp_path / "target")
    with pytest.raises(LeaseError, match="cannot open the lease file"):
        acquire(GPU, "run-a", lease_dir=lease_dir)


def test_a_lease_held_by_a_child_is_released_by_kill_9(lease_dir):
    child = hold_lease(GPU, "child-run", lease_dir)
    try:
        info = holders(GPU, lease_dir=lease_dir)
        assert info is not None and info.holders[0].pid == child.pid
        with pytest.raises(LeaseBusy, match=f"pid {child.pid}"):
            acquire(GPU, "mine", lease_dir=lease_dir, wait_seconds=0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert holders(GPU, lease_dir=lease_dir) is None
        with acquire(GPU, "mine", lease_dir=lease_dir) as lease:
            assert lease.held
    finally:
        end(child)


def test_a_second_process_cannot_take_a_leased_gpu(lease_dir):
    code = (
        "import sys\n"
        "from podium.engine.gpus.leases import LeaseBusy, acquire\n"
        "try:\n"
        "    acquire(sys.argv[1], 'intruder', lease_dir=sys.argv[2], wait_seconds=0.05)\n"
        "except LeaseBusy as err:\n"
        "    print(err); sys.exit(2)\n"
    )
    with acquire(GPU, "owner-run", lease_dir=lease_dir):
        out = subprocess.run(
            [sys.executable, "-c", code, GPU, str(lease_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert "owner-run" in out.stdout and f"pid {os.getpid()}" in out.stdout


def test_shared_holder_that_died_is_not_listed(lease_dir):
    child = hold_lease(GPU, "dead-share", lease_dir, shared=True)
    try:
        with acquire(GPU, "live-share", shared=True, lease_dir=lease_dir):
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            info = holders(GPU, lease_dir=lease_dir)
            assert info is not None and [h.run_id for h in info.holders] == ["live-share"]
    finally:
        end(child)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("flock"), reason="needs root and util-linux flock"
)
def test_another_user_can_lock_and_write_podiums_lease_files():
    # A directory every user can reach (pytest's tmp_path is private to its owner). The other
    # user runs shell tools, not Python, whose installation may be private to root.
    shared = Path(tempfile.mkdtemp(prefix="podium-lease-test-"))
    try:
        shared.chmod(0o755)
        lease_dir = shared / "leases"
        acquire(GPU, "root-run", lease_dir=lease_dir).release()  # creates the file, 0666
        path = lease_path(GPU, lease_dir)
        script = f"echo '{{}}' >> {path} && exec flock -x {path} sleep 30"
        child = subprocess.Popen(
            ["sh", "-c", script], user="nobody", stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 10
            while holders(GPU, lease_dir=lease_dir) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert child.poll() is None, child.stderr.read()
            assert holders(GPU, lease_dir=lease_dir) is not None
            with pytest.raises(LeaseBusy):
                acquire(GPU, "root-run", lease_dir=lease_dir, wait_seconds=0.05)
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # flock's child `sleep` holds the lock too
            child.wait(timeout=10)
            child.stderr.close()
        deadline = time.monotonic() + 10  # the grandchild `sleep` dies asynchronously
        while holders(GPU, lease_dir=lease_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        with acquire(GPU, "root-run", lease_dir=lease_dir):  # nobody's lock died with it
            pass
    finally:
        shutil.rmtree(shared)
