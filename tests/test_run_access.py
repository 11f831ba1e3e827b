"""Runs on a shared server: private by default, readable by one group when asked, and a lock held
by a process that is not the run's reported as what it is. Real files, processes and users."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from podium.engine.cli.main import main as cli_main
from podium.engine.errors import RunError
from podium.engine.run_access import resolve_access
from podium.engine.runs import create_run, new_info
from podium.engine.store import RunStore
from tests.podium_cli import podium

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def open_root():
    """A runs root any user could enter (pytest's own tmp dirs are 0700, which would hide a
    world-readable run from other users and let a test of privacy pass on any code)."""
    path = Path(tempfile.mkdtemp(prefix="podium-access-"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def loose_umask():
    """A user whose umask is 002 (usual with per-user groups): files group-writable by default."""
    old = os.umask(0o002)
    yield
    os.umask(old)


@pytest.fixture
def no_lab_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", str(tmp_path / "absent.toml"))


def modes(run_path: Path) -> dict[str, int]:
    """Permission bits of the run directory and of everything in it, by relative path."""
    out = {".": stat.S_IMODE(run_path.stat().st_mode)}
    for p in run_path.rglob("*"):
        if not p.is_symlink():
            out[str(p.relative_to(run_path))] = stat.S_IMODE(p.stat().st_mode)
    return out


def test_a_trained_run_and_every_file_in_it_are_private(open_root, loose_umask, no_lab_config):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    podium("train", TOY, "--headless", "--max-steps", "6", "--name", "mine",
           "--runs-dir", str(open_root), env=env)  # fmt: skip
    run = open_root / "mine"
    got = modes(run)
    assert {"run.json", "profile.toml", "metrics.db", "train.log", "lock", "end.json"} <= set(got)
    assert any(k.startswith("checkpoints/") and k.endswith(".pt") for k in got)
    wrong = {k: oct(m) for k, m in got.items() if m != (0o700 if (run / k).is_dir() else 0o600)}
    assert not wrong, f"not private: {wrong}"
    if IS_ROOT:  # another user: can neither copy a checkpoint nor read the metrics or the lock
        best = next(run.glob("checkpoints/*.pt"))
        for target in (best, run / "metrics.db", run / "lock", run / "train.log"):
            proc = subprocess.run(["cat", str(target)], user="nobody", capture_output=True)
            assert proc.returncode != 0 and b"Permission denied" in proc.stderr, target


def test_files_the_training_process_writes_follow_the_run_not_the_umask(
    tmp_path, loose_umask, no_lab_config
):
    run = create_run(tmp_path, profile_name="toy", name="r")
    run.write_info(new_info(run, profile="toy", family="toy", source="toy.toml"))
    run.acquire()
    try:
        store = RunStore.open(run.db_path)  # WAL mode: metrics.db-wal and -shm appear now
        store.add_scalars(1, 0.0, 1.0, {"train/loss": 1.0})
        store.flush()
        run.log_path.write_text("a line\n")
        (run.path / "samples").mkdir()
        (run.path / "samples" / "x.mid").write_bytes(b"MThd")
        got = modes(run.path)
        store.close()
    finally:
        run.release()
    assert {"metrics.db-wal", "metrics.db-shm", "samples/x.mid", "run.json"} <= set(got)
    wrong = {
        k: oct(m) for k, m in got.items() if m != (0o700 if (run.path / k).is_dir() else 0o600)
    }
    assert not wrong, f"not private: {wrong}"
    assert os.umask(0o002) == 0o002  # the user's umask is back once the run is let go


def _my_group() -> str:
    return grp.getgrgid(os.getegid()).gr_name


def test_share_group_opens_the_run_to_that_group_read_only(tmp_path, loose_umask, no_lab_config):
    group = _my_group()
    code = cli_main(["train", TOY, "--headless", "--max-steps", "3", "--name", "shared",
                     "--share-group", group, "--runs-dir", str(tmp_path)])  # fmt: skip
    assert code == 0
    run = tmp_path / "shared"
    got = modes(run)
    wrong = {k: oct(m) for k, m in got.items() if m != (0o2750 if (run / k).is_dir() else 0o640)}
    assert not wrong, f"not group read-only: {wrong}"
    assert all(p.stat().st_gid == os.getegid() for p in [run, *run.rglob("*")])


def test_the_lab_setting_shares_new_runs_and_a_bad_group_is_one_line(tmp_path, monkeypatch):
    lab = tmp_path / "lab.toml"
    lab.write_text(f'[gpus]\nreserved = []\n\n[runs]\nshare_group = "{_my_group()}"\n')
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", str(lab))
    run = create_run(tmp_path / "runs", profile_name="toy", name="r")
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o2750
    lab.write_text('[runs]\nshare_group = "no-such-group-here"\n')
    with pytest.raises(RunError, match=r"lab\.toml:2: runs\.share_group 'no-such-group-here'"):
        create_run(tmp_path / "runs", profile_name="toy", name="r2")
    assert not (tmp_path / "runs" / "r2").exists()
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", str(tmp_path / "absent.toml"))
    proc = podium("train", TOY, "--headless", "--share-group", "no-such-group-here",
                  "--runs-dir", str(tmp_path / "runs"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "podium: error: --share-group 'no-such-group-here': no such group on this machine"
    ]
    assert resolve_access(None).group is None  # nothing asked: private


def test_a_lock_held_by_another_process_names_that_process_not_a_dead_run(tmp_path):
    """Another user (here: any process that is not the run's) holding a shared flock on the
    lock file made ``resume`` say the run is live, with the long-dead pid the file recorded."""
    run = create_run(tmp_path, profile_name="toy", name="r")
    run.write_info(new_info(run, profile="toy", family="toy", source="toy.toml"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run.path / "lock").write_text(f'{{"pid": {dead.pid}, "host": "here"}}')
    code = textwrap.dedent(
        f"""
        import fcntl, os, time
        fd = os.open({str(run.path / "lock")!r}, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = podium("resume", "r", "--headless", "--runs-dir", str(tmp_path), check=False)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"held (a shared lock) by pid {holder.pid}" in line
    assert f"pid {dead.pid}, has ended" in line and "is live" not in line
    user = pwd.getpwuid(os.getuid()).pw_name
    assert f"user {user}" in line


def _as_other_user(fn, gid: int) -> str:
    """``fn()``'s result (text), run in a forked child that became ``nobody`` in group ``gid``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: another user, a member of the run's group only
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(pwd.getpwnam("nobody").pw_uid)
            out = str(fn())
        except BaseException as exc:  # reported to the parent
            out = f"{type(exc).__name__}: {exc}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    os.waitpid(pid, 0)
    return text


def test_a_member_of_the_group_reads_a_finished_shared_run_but_cannot_write_it(open_root):
    """A finished run's store has no ``-shm`` index left and a group member may not create one
    in the run directory: SQLite's read-only open failed there ("attempt to write a readonly
    database") until the reader fell back to reading the complete file as immutable."""
    from podium.engine.run_access import RunAccess
    from podium.engine.runs import list_runs, resolve_run
    from podium.engine.store import RunReader

    gid = grp.getgrnam("nogroup").gr_gid if IS_ROOT else os.getegid()
    access = RunAccess(group="nogroup", gid=gid) if IS_ROOT else RunAccess()
    run = create_run(open_root, profile_name="toy", name="s", access=access)
    run.write_info(new_info(run, profile="toy", family="toy", source="toy.toml"))
    run.acquire()
    store = RunStore.open(run.db_path)
    store.add_scalars(5, 0.0, 1.0, {"train/loss": 0.25})
    store.close()
    run.release()
    assert not run.db_path.with_name("metrics.db-shm").exists()

    def read_it() -> str:
        with RunReader.open(run.db_path) as reader:
            return repr(reader.last("train/loss"))

    if not IS_ROOT:  # the same situation for this user: a run directory it may not write in
        os.chmod(run.path, 0o550)
        try:
            assert read_it() == "(5, 0.25)"
        finally:
            os.chmod(run.path, 0o700)
        return
    assert _as_other_user(read_it, gid) == "(5, 0.25)"
    write = lambda: (run.path / "checkpoints").mkdir()  # noqa: E731
    assert _as_other_user(write, gid).startswith("PermissionError")
    private = create_run(open_root, profile_name="toy", name="p", access=RunAccess())
    private.write_info(new_info(private, profile="toy", family="toy", source="toy.toml"))
    listing = lambda: [r.id for r in list_runs(open_root)]  # noqa: E731
    assert _as_other_user(listing, gid) == "['s']"  # another user's private run is not listed
    resolve = lambda: resolve_run("p", open_root)  # noqa: E731
    assert _as_other_user(resolve, gid) == (
        f"RunError: run 'p': {private.path} is private to root (only its owner, or a group it "
        "is shared with, may read it)"
    )
