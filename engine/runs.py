"""Run directories: where every run lives, and what state it is in.

``<runs root>/<run id>/`` holds ``run.json`` (who, where, which profile), ``profile.toml`` (the
resolved profile), ``metrics.db`` (the store), ``train.log``, ``checkpoints/`` and, once the run has
ended, ``end.json``. A live training process holds an exclusive ``flock`` on ``lock``: the state is
derived from that fact and the end marker, never guessed from timestamps, so a run whose process was
killed shows as interrupted at once.

Only the owner may enter a run directory unless it is shared with a group (``run_access``); the
process holding the lock keeps every file it writes there to the directory's access (its umask).
A lock podium cannot account for (another process holding it) is reported with its holder, read
from ``/proc/locks``, instead of as a live run.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import pwd
import re
import socket
import stat
import tempfile
import threading
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from podium.engine.checkpoints import write_json_atomic
from podium.engine.errors import RunError
from podium.engine.run_access import RunAccess, access_of, resolve_access

PROBE_GRACE_S = 1.0
"""How long ``RunDir.acquire`` waits out a lock that may be a liveness probe's (held for
microseconds) before it calls the run live."""
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RunStatus = Literal["live", "detached", "interrupted", "finished", "stopped", "failed", "new"]


def runs_root(arg: str | None = None) -> Path:
    """``--runs-dir``, else ``$PODIUM_RUNS``, else ``./runs``; a file there is refused."""
    root = Path(arg or os.environ.get("PODIUM_RUNS") or "runs")
    try:
        is_file = root.exists() and not root.is_dir()
    except OSError as exc:
        raise RunError(f"{root}: cannot read the runs directory ({exc.strerror})") from None
    if is_file:
        raise RunError(f"{root}: the runs directory is a file (--runs-dir or $PODIUM_RUNS)")
    return root


def check_writable_root(root: Path) -> Path:
    """Make ``root`` if needed and prove a run can be created in it, before anything starts
    (the dashboard included). A real probe, not ``os.access``: root is refused by read-only
    file systems that ``access`` does not know about."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".podium-write-check-", dir=root))
    except OSError as exc:
        raise RunError(
            f"{root}: cannot create runs in this directory ({exc.strerror}); "
            "choose another with --runs-dir"
        ) from None
    return root


def check_run_id(name: str, *, what: str = "--name") -> str:
    if not RUN_ID_RE.match(name) or name in (".", ".."):
        raise RunError(
            f"{what} {name!r}: not a safe run name (letters, digits, '.', '_', '-'; "
            "at most 100; starting with a letter or digit)"
        )
    return name


@dataclass
class RunInfo:
    """``run.json``: facts fixed when the run is created."""

    id: str
    profile: str
    family: str
    created: float
    host: str
    user: str
    profile_source: str = ""
    parent: dict[str, Any] | None = None
    pids: list[int] = field(default_factory=list)


class RunDir:
    """One run's directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.toml"

    @property
    def db_path(self) -> Path:
        return self.path / "metrics.db"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def end_path(self) -> Path:
        return self.path / "end.json"

    def info(self) -> RunInfo:
        """``run.json``, checked: a damaged file is a ``RunError`` naming it and what is wrong,
        never a value of the wrong type that breaks whoever sorts or prints it."""
        path = self.path / "run.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: not a readable run.json ({exc})") from None
        problem = _info_problem(data)
        if problem:
            raise RunError(f"{path}: damaged run.json ({problem})")
        return RunInfo(**data)

    def write_info(self, info: RunInfo) -> None:
        write_json_atomic(self.path / "run.json", asdict(info))

    # -- liveness ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the run's lock for this process; refuse when another process holds it.

        ``is_live`` probes (a dashboard's poller, ``podium runs``) hold a shared lock on the
        same file for a moment; a lock that is let go within ``PROBE_GRACE_S`` was a probe,
        not a live run, and refusing then failed a fresh run's start on a busy machine.
        """
        access = access_of(self.path)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, access.file_mode)
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                holders = lock_holders(self.path / "lock", fd)
                os.close(fd)
                raise RunError(self._refusal(holders)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._lock_fd = fd
        _settle_access(self.path, access)
        _tighten_umask(access.umask)

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
            _restore_umask()

    def lock_problem(self) -> str | None:
        """Why ``acquire`` would refuse now, without taking the lock (a live run, or a process
        that is not the run's holding its lock), or None: for checks made before any UI opens."""
        if self._lock_fd is not None:
            return None
        deadline = time.monotonic() + PROBE_GRACE_S  # a probe's moment is not a holder
        while True:
            holders = [h for h in lock_holders(self.path / "lock") if h.pid != os.getpid()]
            if not holders:
                return None
            if time.monotonic() >= deadline:
                return self._refusal(holders)
            time.sleep(0.01)

    def _refusal(self, holders: list[LockHolder]) -> str:
        """Why ``acquire`` failed: a live run, or a process that is not this run's trainer
        holding its lock (a probe that hung, another user's process on an old open run)."""
        recorded = self._lock_record()
        trainer = next((h for h in holders if h.exclusive and h.pid == recorded.get("pid")), None)
        if trainer is not None or not holders:
            return f"run {self.id} is live{self._lock_holder()}; stop it first or attach to it"
        h = holders[0]
        who = f"pid {h.pid}" + (f", user {h.user}" if h.user else "")
        was = ""
        if recorded.get("pid"):
            was = f"; the run's last process, pid {recorded['pid']}, "
            was += "is still running" if pid_exists(recorded["pid"]) else "has ended"
        kind = "an exclusive" if h.exclusive else "a shared"
        return (
            f"run {self.id}: {self.path / 'lock'} is held ({kind} lock) by {who}, which is not "
            f"this run's training process{was}; end that process (or ask its user) and try again"
        )

    def _lock_record(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "lock").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _lock_holder(self) -> str:
        try:
            data = json.loads((self.path / "lock").read_text())
            return f" (pid {data['pid']} on {data['host']})"
        except (OSError, ValueError, KeyError):
            return ""

    def is_live(self) -> bool:
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.path / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def hold_viewer(self) -> ViewerHold:
        """Mark this run as watched (a dashboard, attached viewer or headless console) while held.

        Several viewers may hold it at once (shared locks). A live run nobody holds shows as
        ``detached``: it trains on with no one looking, e.g. after its terminal went away.
        """
        mode = access_of(self.path).file_mode
        fd = os.open(self.path / "viewers.lock", os.O_RDWR | os.O_CREAT, mode)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return ViewerHold(fd)

    def has_viewer(self) -> bool:
        try:
            fd = os.open(self.path / "viewers.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def end(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.end_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def mark_end(self, status: str, reason: str, step: int) -> None:
        write_json_atomic(
            self.end_path, {"status": status, "reason": reason, "step": step, "wall": time.time()}
        )

    def clear_end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.end_path.unlink()

    def status(self) -> tuple[RunStatus, str]:
        """The run's state and a reason (for failed runs) derived from the lock and end marker."""
        if self.is_live():
            holder = self._lock_holder().strip(" ()")
            return ("live", holder) if self.has_viewer() else ("detached", holder)
        end = self.end()
        if end is not None:
            return end.get("status", "finished"), end.get("reason", "")
        if (self.path / "lock").exists():
            return "interrupted", "process ended without a clean stop"
        return "new", ""


class ViewerHold:
    """A held viewer mark; ``release()`` (or process death) removes it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def create_run(
    root: Path, *, profile_name: str, name: str | None = None, access: RunAccess | None = None
) -> RunDir:
    """Make a new run directory; a given ``name`` that exists is refused (never reused).

    ``access``: who may read the run (None: the lab's setting, else the owner only). The
    directory is made 0700 and only then opened to a group, so it is never readable by all."""
    access = resolve_access() if access is None else access
    root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        check_run_id(name)
        path = root / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise RunError(
                f"--name {name!r}: a run with that id already exists in {root}"
            ) from None
        access.apply(path)
        return RunDir(path)
    base = f"{profile_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue
        access.apply(candidate)
        return RunDir(candidate)
    raise RunError(f"{root}: could not find a free run id for {base}")


def resolve_run(arg: str, root: Path) -> RunDir:
    """RUN as a run id under the runs root, or a path to a run directory."""
    candidates = []
    as_path = Path(arg)
    if "/" in arg or as_path.is_absolute():
        candidates.append(as_path)
    else:
        candidates += [root / arg, as_path]
    for path in candidates:
        try:
            if (path / "run.json").is_file():
                return RunDir(path)
        except PermissionError:
            raise RunError(
                f"run {arg!r}: {path} is private to {_owner_of(path)} (only its owner, or a group "
                "it is shared with, may read it)"
            ) from None
    if "/" not in arg:
        check_run_id(arg, what="RUN")
    raise RunError(f"no run {arg!r} under {root} (podium runs lists them)")


def list_runs(root: Path) -> list[RunDir]:
    """Runs under ``root``, oldest first; a run whose ``run.json`` is damaged is listed too
    (first: its ``info()`` says what is wrong), so one bad file never hides the others."""
    if not root.is_dir():
        return []
    runs = []
    for p in root.iterdir():
        try:
            if (p / "run.json").is_file():
                runs.append(RunDir(p))
        except OSError:  # e.g. another user's private run: not ours to list
            continue
    runs.sort(key=lambda r: (_created(r), r.id))
    return runs


def _created(run: RunDir) -> float:
    try:
        return float(run.info().created)
    except RunError:
        return 0.0


_INFO_TYPES: dict[str, tuple[type, ...]] = {  # a field missing here is not type-checked
    "id": (str,),
    "profile": (str,),
    "family": (str,),
    "created": (int, float),
    "host": (str,),
    "user": (str,),
    "profile_source": (str,),
    "parent": (dict, type(None)),
    "pids": (list,),
}
_REQUIRED = {
    f.name for f in fields(RunInfo) if f.default is MISSING and f.default_factory is MISSING
}


def _info_problem(data: Any) -> str:
    """What makes ``data`` (a parsed run.json) unusable as a ``RunInfo``; "" when nothing."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    missing = sorted(_REQUIRED - set(data))
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(data) - {f.name for f in fields(RunInfo)})
    if unknown:
        return f"unknown key {unknown[0]!r}"
    for key, types in _INFO_TYPES.items():
        if key in data and (
            not isinstance(data[key], types) or (isinstance(data[key], bool) and bool not in types)
        ):
            return f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {data[key]!r}"
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in data.get("pids", [])):
        return f"pids: expected a list of process ids, got {data['pids']!r}"
    return ""


# -- who holds a lock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """A process holding a ``flock`` on a file, as ``/proc/locks`` tells it."""

    pid: int
    exclusive: bool
    user: str = ""
    """The process's user, when ``/proc/<pid>`` can be read; "" when not."""


def lock_holders(path: Path, fd: int | None = None) -> list[LockHolder]:
    """The processes holding a flock on ``path`` (exclusive ones first); [] where
    ``/proc/locks`` is unavailable. ``fd``: an open descriptor of it (the inode to match)."""
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found: list[LockHolder] = []
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146437 0 EOF"; waiters have "->" after the id.
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[5] != dev:
            continue
        try:
            pid = int(parts[4])
        except ValueError:
            continue
        found.append(LockHolder(pid=pid, exclusive=parts[3] == "WRITE", user=_user_of(pid)))
    found.sort(key=lambda h: not h.exclusive)
    return found


def _owner_of(path: Path) -> str:
    try:
        uid = path.stat().st_uid
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"user {uid}"
    except OSError:
        return "another user"


def _user_of(pid: int) -> str:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def pid_exists(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the files of the run that this process writes ---------------------------------------------

_umask_lock = threading.Lock()
_umask_holds = 0
_umask_saved = 0


def _tighten_umask(mask: int) -> None:
    """Add ``mask`` to the process umask while a run is held (undone by the last release)."""
    global _umask_holds, _umask_saved
    with _umask_lock:
        old = os.umask(0o077)  # never looser than private, even for an instant
        if _umask_holds == 0:
            _umask_saved = old
        os.umask(old | mask)
        _umask_holds += 1


def _restore_umask() -> None:
    global _umask_holds
    with _umask_lock:
        _umask_holds = max(_umask_holds - 1, 0)
        if _umask_holds == 0:
            os.umask(_umask_saved)


def _settle_access(path: Path, access: RunAccess) -> None:
    """Give the run directory and everything in it ``access``'s modes: the files written before
    the lock (run.json, profile.toml), and all of an older, world-readable run being resumed."""
    dir_mode = access.dir_mode
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) != dir_mode:
            os.chmod(path, dir_mode)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(top, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                want = dir_mode
            elif stat.S_ISREG(st.st_mode):
                want = access.file_mode
            else:
                continue  # links, sockets: left as they are
            if stat.S_IMODE(st.st_mode) != want:
                with contextlib.suppress(OSError):
                    os.chmod(p, want)


def new_info(run: RunDir, *, profile: str, family: str, source: str, parent=None) -> RunInfo:
    return RunInfo(
        id=run.id,
        profile=profile,
        family=family,
        created=time.time(),
        host=socket.gethostname(),
        user=getpass.getuser(),
        profile_source=source,
        parent=parent,
        pids=[os.getpid()],
    )
