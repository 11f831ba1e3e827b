"""Leases: real flocks, real child processes, kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.engine.gpus import leases
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
ME = (os.getuid(),)
"""The test's user plays the lab's admin, so that the lease directories it creates are trusted."""


@pytest.fixture
def lease_dir(tmp_path: Path) -> Path:
    return tmp_path / "leases"


def test_acquire_records_holder_and_release_frees(lease_dir):
    assert holders(GPU, lease_dir=lease_dir, admins=ME) is None  # probing creates nothing
    assert not lease_dir.exists()
    with acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME) as lease:
        info = holders(GPU, lease_dir=lease_dir, admins=ME)
        assert info is not None and not info.shared
        (holder,) = info.holders
        assert (holder.pid, holder.run_id, holder.uid) == (os.getpid(), "run-a", os.getuid())
        assert holder.host == socket.gethostname()
        assert abs(holder.started - time.time()) < 60
        assert "run run-a" in info.describe() and f"pid {os.getpid()}" in info.describe()
        assert lease.held
    assert not lease.held
    assert holders(GPU, lease_dir=lease_dir, admins=ME) is None
    lease.release()  # twice is fine
    assert lease_path(GPU, lease_dir).read_text() == ""  # no stale record after release


def test_a_second_exclusive_request_is_refused_naming_the_holder(lease_dir):
    with acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME):
        with pytest.raises(LeaseBusy) as err:
            acquire(GPU, "run-b", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
        assert "run run-a" in str(err.value) and f"pid {os.getpid()}" in str(err.value)
        assert err.value.exit_code == 2
        assert err.value.info is not None and err.value.info.holders[0].run_id == "run-a"
    acquire(GPU, "run-b", lease_dir=lease_dir, admins=ME).release()


def test_shared_leases_coexist_and_exclude_exclusive_ones(lease_dir):
    a = acquire(GPU, "share-a", shared=True, lease_dir=lease_dir, admins=ME)
    b = acquire(GPU, "share-b", shared=True, lease_dir=lease_dir, admins=ME)
    info = holders(GPU, lease_dir=lease_dir, admins=ME)
    assert info is not None and info.shared
    assert [h.run_id for h in info.holders] == ["share-a", "share-b"]
    with pytest.raises(LeaseBusy, match="--share-gpu"):
        acquire(GPU, "solo", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
    a.release()
    info = holders(GPU, lease_dir=lease_dir, admins=ME)
    assert info is not None and [h.run_id for h in info.holders] == ["share-b"]  # tombstone
    b.release()
    assert holders(GPU, lease_dir=lease_dir, admins=ME) is None
    with (
        acquire(GPU, "solo", lease_dir=lease_dir, admins=ME),
        pytest.raises(LeaseBusy, match="exclusively"),
    ):
        acquire(GPU, "share-c", shared=True, lease_dir=lease_dir, admins=ME, wait_seconds=0.05)


def test_uuid_spelling_does_not_matter(lease_dir):
    with acquire(GPU.upper(), "run-a", lease_dir=lease_dir, admins=ME):
        assert holders(GPU.lower(), lease_dir=lease_dir, admins=ME) is not None


def test_lease_dir_is_sticky_and_world_writable_and_files_are_0644(lease_dir):
    old = os.umask(0o077)  # a private umask must not keep other users from locking
    try:
        with acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME) as lease:
            mode = stat.S_IMODE(lease_dir.stat().st_mode)
            assert mode == 0o1777
            # flock needs no write access: nobody but its owner may write a lease file
            assert stat.S_IMODE(lease.path.stat().st_mode) == 0o644
            (record,) = lease_dir.glob("*.holder")
            assert stat.S_IMODE(record.stat().st_mode) == 0o644
            assert json.loads(record.read_text())["run_id"] == "run-a"
        assert not list(lease_dir.glob("*.holder"))  # the holder's record goes with the lease
    finally:
        os.umask(old)


_FLOCK_CHILD = (
    "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);"
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"
)


def flock_child(path: Path) -> subprocess.Popen[str]:
    """A process that is not podium holding an exclusive flock on ``path``."""
    child = subprocess.Popen(
        [sys.executable, "-c", _FLOCK_CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "held"
    return child


def test_the_holder_is_named_by_the_kernel_not_by_the_file(lease_dir):
    """Content anybody could write (foreign JSON in the lease file) names nobody."""
    ensure_lease_dir(lease_dir, admins=ME)
    path = lease_path(GPU, lease_dir)
    path.write_text('{"user": "bob", "pid": 1\n')
    child = flock_child(path)
    try:
        info = holders(GPU, lease_dir=lease_dir, admins=ME)
        assert info is not None and not info.shared and info.problem is None
        (holder,) = info.holders  # the process holding the lock, from /proc/locks
        assert (holder.pid, holder.uid, holder.recorded) == (child.pid, os.getuid(), False)
        assert "bob" not in info.describe()
        with pytest.raises(LeaseBusy, match=f"pid {child.pid}, no readable record"):
            acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
    finally:
        end(child)
    with acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME):  # stale content does not block
        (holder,) = holders(GPU, lease_dir=lease_dir, admins=ME).holders
        assert holder.run_id == "run-a"


def test_a_forged_record_is_not_shown_as_the_holder(lease_dir):
    """A record names a holder only if its pid holds the lock and it is that pid's user's file."""
    ensure_lease_dir(lease_dir, admins=ME)
    path = lease_path(GPU, lease_dir)
    path.touch()
    child = flock_child(path)
    forged = {
        "gpu": GPU, "user": "alice", "uid": os.getuid(), "pid": os.getpid(),
        "run_id": "thesis-final", "host": socket.gethostname(), "started": time.time(),
    }  # fmt: skip
    try:
        # Yesterday's reader took the lease file's last JSON line as the holder.
        path.write_text(json.dumps({**forged, "pid": child.pid}) + "\n")
        # A record for a pid that holds no lock (this test process).
        (lease_dir / f"{GPU.lower()}.{os.getpid()}.beef.holder").write_text(json.dumps(forged))
        # A record for the holder's pid, but the wrong GPU.
        (lease_dir / f"{GPU.lower()}.{child.pid}.cafe.holder").write_text(
            json.dumps({**forged, "pid": child.pid, "gpu": uuid(3)})
        )
        info = holders(GPU, lease_dir=lease_dir, admins=ME)
        assert info is not None
        assert [(h.pid, h.recorded) for h in info.holders] == [(child.pid, False)]
        assert "thesis-final" not in info.describe() and "alice" not in info.describe()
    finally:
        end(child)


def test_a_lease_on_an_unlinked_file_is_never_trusted(lease_dir, monkeypatch):
    """Unlinked between open and flock (by the file's owner or root): lock the live file instead."""
    ensure_lease_dir(lease_dir, admins=ME)
    path = lease_path(GPU, lease_dir)
    path.touch()
    real, raced = leases._try_lock, []

    def racing_lock(fd: int, op: int) -> bool:
        if not raced:
            raced.append(os.fstat(fd).st_ino)
            path.unlink()  # as if somebody deleted the file just before our lock
        return real(fd, op)

    monkeypatch.setattr(leases, "_try_lock", racing_lock)
    with acquire(GPU, "first", lease_dir=lease_dir, admins=ME) as lease:
        monkeypatch.setattr(leases, "_try_lock", real)
        assert raced and lease.intact()
        with pytest.raises(LeaseBusy, match="run first"):
            acquire(GPU, "second", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)


def test_a_lease_file_deleted_while_held_still_excludes(lease_dir):
    """Its owner (or root) may delete a lease file; the holder's record still names the lock."""
    child = hold_lease(GPU, "child-run", lease_dir)
    try:
        lease_path(GPU, lease_dir).unlink()
        info = holders(GPU, lease_dir=lease_dir, admins=ME)
        assert info is not None and [h.run_id for h in info.holders] == ["child-run"]
        with pytest.raises(LeaseBusy, match=f"run child-run, pid {child.pid}"):
            acquire(GPU, "second", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
        with pytest.raises(LeaseBusy, match="exclusively"):
            acquire(GPU, "sharer", shared=True, lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
    finally:
        end(child)
    with acquire(GPU, "second", lease_dir=lease_dir, admins=ME):  # its lock died with it
        pass


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_lease_file_podium_cannot_use_is_reported_not_leased(lease_dir, tmp_path, kind):
    ensure_lease_dir(lease_dir, admins=ME)
    path = lease_path(GPU, lease_dir)
    if kind == "symlink":
        (tmp_path / "target").write_text("")
        path.symlink_to(tmp_path / "target")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    me = pwd.getpwuid(os.getuid()).pw_name
    info = holders(GPU, lease_dir=lease_dir, admins=ME)
    assert info is not None and info.holders == () and info.problem is not None
    what = {"symlink": "a symlink", "fifo": "a FIFO", "directory": "not a regular file"}[kind]
    assert f"is {what}, owned by {me}: ask {me} or the admin" in info.problem
    assert info.describe() == info.problem and "leased" not in info.problem
    with pytest.raises(LeaseError) as err:
        acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME)
    assert str(err.value) == info.problem and not isinstance(err.value, LeaseBusy)
    if kind == "symlink":
        assert (tmp_path / "target").read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any file")
def test_an_unreadable_lease_file_is_reported_with_its_owner_and_mode(lease_dir):
    ensure_lease_dir(lease_dir, admins=ME)
    path = lease_path(GPU, lease_dir)
    path.touch(mode=0o000)
    path.chmod(0o000)
    me = pwd.getpwuid(os.getuid()).pw_name
    info = holders(GPU, lease_dir=lease_dir, admins=ME)
    assert info is not None and info.problem is not None and info.holders == ()
    assert f"owned by {me}, mode 0000: ask {me} or the admin" in info.problem


# ----------------------------------------------------------------------------------------------
# The lease directory: root's (or the admin's), mode 1777, never a symlink


def foreign_dir(path: Path) -> str:
    """Make ``path`` a 1777 directory owned by somebody podium does not trust; their name."""
    path.mkdir(mode=0o700)
    path.chmod(0o1777)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # nobody's
        return pwd.getpwuid(65534).pw_name
    return pwd.getpwuid(os.getuid()).pw_name  # ours, and we are neither root nor the admin


def test_a_lease_dir_owned_by_a_user_is_refused(lease_dir):
    owner = foreign_dir(lease_dir)
    with pytest.raises(LeaseError) as err:
        acquire(GPU, "run-a", lease_dir=lease_dir)  # admins=(): only root is trusted
    message = str(err.value)
    assert f"owned by {owner}, not root" in message and "delete other users' leases" in message
    assert f"sudo install -d -m 1777 -o root -g root {lease_dir}" in message
    assert not isinstance(err.value, LeaseBusy) and err.value.exit_code == 2
    assert list(lease_dir.iterdir()) == []  # nothing created in it
    info = holders(GPU, lease_dir=lease_dir)
    assert info is not None and info.problem == message
    # The lab may name the directory's owner as its admin.
    uid = lease_dir.stat().st_uid
    acquire(GPU, "run-a", lease_dir=lease_dir, admins=(uid,)).release()


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o1775])
def test_a_lease_dir_without_mode_1777_is_refused(lease_dir, mode):
    lease_dir.mkdir()
    lease_dir.chmod(mode)
    with pytest.raises(LeaseError, match=f"mode {mode:04o}, not 1777.*sudo chmod 1777 {lease_dir}"):
        acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME)
    assert list(lease_dir.iterdir()) == []


def test_a_symlinked_lease_dir_is_never_followed(lease_dir, tmp_path):
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    private.chmod(0o1777)  # even a good-looking target: the link itself could be swapped
    lease_dir.symlink_to(private)
    with pytest.raises(LeaseError, match="is a symlink, which podium never follows"):
        acquire(GPU, "run-a", lease_dir=lease_dir, admins=ME)
    with pytest.raises(LeaseError, match="symlink"):
        ensure_lease_dir(lease_dir, admins=ME)
    info = holders(GPU, lease_dir=lease_dir, admins=ME)
    assert info is not None and "symlink" in (info.problem or "")
    assert list(private.iterdir()) == []  # no 0666 file appeared in the private directory


def test_only_root_or_the_admin_may_create_the_lease_dir(lease_dir):
    with pytest.raises(LeaseError) as err:
        ensure_lease_dir(lease_dir, admins=(), euid=54321)  # a user who is neither
    assert "does not exist" in str(err.value) and "sudo install -d -m 1777" in str(err.value)
    assert not lease_dir.exists()
    ensure_lease_dir(lease_dir, admins=ME, euid=os.getuid())  # the admin may
    assert stat.S_IMODE(lease_dir.stat().st_mode) == 0o1777
    assert holders(GPU, lease_dir=lease_dir.parent / "never-created") is None  # nor a lease


def test_a_lease_held_by_a_child_is_released_by_kill_9(lease_dir):
    child = hold_lease(GPU, "child-run", lease_dir)
    try:
        info = holders(GPU, lease_dir=lease_dir, admins=ME)
        assert info is not None and info.holders[0].pid == child.pid
        with pytest.raises(LeaseBusy, match=f"pid {child.pid}"):
            acquire(GPU, "mine", lease_dir=lease_dir, admins=ME, wait_seconds=0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert holders(GPU, lease_dir=lease_dir, admins=ME) is None
        with acquire(GPU, "mine", lease_dir=lease_dir, admins=ME) as lease:
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
    with acquire(GPU, "owner-run", lease_dir=lease_dir, admins=ME):
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
        with acquire(GPU, "live-share", shared=True, lease_dir=lease_dir, admins=ME):
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
            info = holders(GPU, lease_dir=lease_dir, admins=ME)
            assert info is not None and [h.run_id for h in info.holders] == ["live-share"]
    finally:
        end(child)


# ----------------------------------------------------------------------------------------------
# Real other users (as root only): a second and a third local user, created for the test.


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd]]:
    """Two fresh local users, "bob" and "carol", removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create local users")
    names = [f"pdm{secrets.token_hex(3)}{who}" for who in ("bob", "car")]
    made = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
            made.append(name)
        yield pwd.getpwnam(names[0]), pwd.getpwnam(names[1])
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory like /tmp that every user can reach (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="podium-lease-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


_AS_USER = """
import json, os, sys, time
from podium.engine.gpus import leases
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([]); os.setgid(gid); os.setuid(uid)  # podium is imported: the venv may be root's
"""


def as_user(user: pwd.struct_passwd, code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` as ``user``: the child starts as root, imports podium, then drops to them."""
    return subprocess.Popen(
        [sys.executable, "-c", _AS_USER + code, str(user.pw_uid), str(user.pw_gid), *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def run_as(user: pwd.struct_passwd, code: str, *args: str) -> str:
    child = as_user(user, code, *args)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return out.strip()


_TRY_ACQUIRE = """
try:
    leases.acquire(sys.argv[3], "mine", lease_dir=sys.argv[4], wait_seconds=0.05).release()
    print("granted")
except leases.LeaseError as err:
    print(err)
"""


def test_a_users_lease_dir_cannot_be_used_to_break_other_users_leases(users, shared_dir):
    bob, carol = users
    lease_dir = shared_dir / "leases"
    # bob creates the directory first, as anybody could in /tmp.
    run_as(bob, "os.mkdir(sys.argv[3]); os.chmod(sys.argv[3], 0o1777)", str(lease_dir))
    assert lease_dir.stat().st_uid == bob.pw_uid
    # Yesterday carol leased in it and bob, its owner, could delete her lease file while she held
    # it, so that a second exclusive lease was granted. Now nobody leases in it.
    said = run_as(carol, _TRY_ACQUIRE, GPU, str(lease_dir))
    assert said != "granted"
    assert f"owned by {bob.pw_name}, not root" in said and "sudo install -d -m 1777" in said
    with pytest.raises(LeaseError, match=f"owned by {bob.pw_name}"):
        acquire(GPU, "root-run", lease_dir=lease_dir)
    assert list(lease_dir.iterdir()) == []
    # Set up as README says, it serves both users.
    shutil.rmtree(lease_dir)
    subprocess.run(["install", "-d", "-m", "1777", "-o", "root", "-g", "root", str(lease_dir)])
    assert run_as(carol, _TRY_ACQUIRE, GPU, str(lease_dir)) == "granted"
    assert run_as(bob, _TRY_ACQUIRE, GPU, str(lease_dir)) == "granted"


_HOLD_AS = """
lease = leases.acquire(sys.argv[3], sys.argv[4], lease_dir=sys.argv[5])
print("held", flush=True)
sys.stdin.read()
"""

_FORGE = """
gpu, pid, lease_dir = sys.argv[3], int(sys.argv[4]), sys.argv[5]
record = {"gpu": gpu, "user": "alice", "uid": int(sys.argv[6]), "pid": pid,
          "run_id": "thesis-final", "host": os.uname().nodename, "started": time.time()}
with open(os.path.join(lease_dir, f"{gpu.lower()}.{pid}.0bad.holder"), "w") as f:
    json.dump(record, f)
try:  # yesterday's lease files were 0666 and their last JSON line named the holder
    with open(str(leases.lease_path(gpu, lease_dir)), "a") as f:
        f.write(json.dumps(record) + "\\n")
    print("appended")
except PermissionError:
    print("lease file not writable")
"""


def test_another_user_cannot_forge_the_holder_of_a_lease(users, shared_dir):
    bob, carol = users
    lease_dir = ensure_lease_dir(shared_dir / "leases")  # root's, 1777
    holder = as_user(carol, _HOLD_AS, GPU, "carols-run", str(lease_dir))
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        said = run_as(bob, _FORGE, GPU, str(holder.pid), str(lease_dir), str(carol.pw_uid))
        assert said == "lease file not writable"
        info = holders(GPU, lease_dir=lease_dir)
        assert info is not None
        assert [(h.user, h.pid, h.run_id) for h in info.holders] == [
            (carol.pw_name, holder.pid, "carols-run")
        ]
        assert "thesis-final" not in info.describe() and "alice" not in info.describe()
        said = run_as(bob, _TRY_ACQUIRE, GPU, str(lease_dir))
        assert f"{carol.pw_name} (run carols-run, pid {holder.pid}" in said
    finally:
        end(holder)
    assert holders(GPU, lease_dir=lease_dir) is None  # the forged record leases nothing


def test_the_owner_of_a_lease_file_cannot_break_the_lease_by_deleting_it(users, shared_dir):
    bob, carol = users
    lease_dir = ensure_lease_dir(shared_dir / "leases")
    assert run_as(carol, _TRY_ACQUIRE, GPU, str(lease_dir)) == "granted"  # carol's file now
    assert lease_path(GPU, lease_dir).stat().st_uid == carol.pw_uid
    holder = as_user(bob, _HOLD_AS, GPU, "bobs-run", str(lease_dir))
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        run_as(carol, "os.unlink(sys.argv[3])", str(lease_path(GPU, lease_dir)))
        said = run_as(carol, _TRY_ACQUIRE, GPU, str(lease_dir))
        assert said != "granted" and f"{bob.pw_name} (run bobs-run, pid {holder.pid}" in said
    finally:
        end(holder)


_PROBE = """
info = leases.holders(sys.argv[3], lease_dir=sys.argv[4])
print("free" if info is None else getattr(info, "problem", None) or "LEASED " + info.describe())
"""


def test_another_users_private_file_blocks_but_is_not_a_lease(users, shared_dir):
    bob, carol = users
    lease_dir = ensure_lease_dir(shared_dir / "leases")
    path = lease_path(GPU, lease_dir)
    run_as(
        bob, "fd = os.open(sys.argv[3], os.O_CREAT | os.O_WRONLY, 0o600); os.close(fd)", str(path)
    )
    said = run_as(carol, _PROBE, GPU, str(lease_dir))
    assert (
        said
        == f"lease file {path} owned by {bob.pw_name}, mode 0600: ask {bob.pw_name} or the admin to remove it"
    )
    assert run_as(carol, _TRY_ACQUIRE, GPU, str(lease_dir)) == said


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("flock"), reason="needs root and util-linux flock"
)
def test_a_lock_taken_with_shell_tools_by_another_user_is_seen(shared_dir):
    lease_dir = shared_dir / "leases"
    acquire(GPU, "root-run", lease_dir=lease_dir).release()  # creates the file, 0644
    path = lease_path(GPU, lease_dir)
    child = subprocess.Popen(
        ["flock", "-x", str(path), "sleep", "30"],
        user="nobody",
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while holders(GPU, lease_dir=lease_dir) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read()
        info = holders(GPU, lease_dir=lease_dir)
        assert info is not None and {h.user for h in info.holders} == {"nobody"}
        with pytest.raises(LeaseBusy, match="nobody"):
            acquire(GPU, "root-run", lease_dir=lease_dir, wait_seconds=0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # flock's child `sleep` holds the lock too
        child.wait(timeout=10)
        child.stderr.close()
    deadline = time.monotonic() + 10  # the grandchild `sleep` dies asynchronously
    while holders(GPU, lease_dir=lease_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with acquire(GPU, "root-run", lease_dir=lease_dir):  # nobody's lock died with it
        pass
