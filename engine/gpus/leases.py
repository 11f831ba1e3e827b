"""Advisory per-GPU leases, so podium runs (of one user or many) never land on each other's GPUs.

A lease is an ``fcntl.flock`` on ``<lease dir>/<gpu uuid>.lease``, held on a file descriptor that
the training process keeps open for the life of the run. The kernel drops the lock when the last
descriptor closes, so a lease vanishes with its process, even one killed by ``kill -9``: there is
no stale-lease cleanup to get wrong, and no timestamps are trusted.

* An exclusive lease (the default) takes ``LOCK_EX``; a shared one (``--share-gpu``) takes
  ``LOCK_SH``, so two shared runs may hold one GPU while an exclusive request fails on it, and a
  shared request fails on an exclusively held GPU.
* The lease directory (default ``/tmp/podium-leases``) must be a real directory (never a
  symlink), owned by root or the lab's ``admin``, with mode 1777 (sticky, like ``/tmp``): then
  nobody but its owner can delete somebody else's lease file. A directory owned by a user could
  be emptied by that user while others hold leases in it, and the next run would lock a fresh
  file of the same name: two exclusive holders. podium refuses such a directory (and creates a
  missing one only when it runs as root or the admin), saying what the admin must do. The checks
  are made on the opened directory, and lease files are opened relative to it, so swapping the
  path afterwards changes nothing.
* Lease files (mode 0644) are only lock targets: flock needs no write access. After taking the
  lock podium checks that the name still leads to the locked inode, so a lock on a file that was
  unlinked meanwhile is never trusted. Lease files are never deleted by podium; their owner (or
  root) may delete one while somebody holds it, and then the holder's record, which names the
  inode it locked, still makes the GPU busy.
* Who holds a lease is told by the kernel, not by a file anybody may write: ``/proc/locks``
  lists each flock with its pid and inode. Each holder also writes a record (run id, start time)
  to ``<uuid>.<pid>.<token>.holder``, a file of its own (0644). A record counts only if its pid
  holds a lock on the lease file's inode, the record file belongs to that pid's user, and its
  fields agree; the user's name comes from the uid, never from the record. So nobody can show up
  as "alice, run thesis-final" without being alice's lock-holding process.
* A lease file that podium cannot lock (another user's 0600 file, a FIFO, a symlink) is not a
  lease: ``holders`` reports it as a ``problem`` naming its owner, and ``acquire`` refuses with the
  same words.

``holders(uuid)`` probes without taking a lease, by trying the locks non-blocking and releasing
them at once. Such a probe can make a concurrent ``acquire`` fail for a few microseconds, so
``acquire`` retries for ``wait_seconds`` before it reports the GPU as busy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import secrets
import socket
import stat
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podium.engine.errors import PodiumError

log = logging.getLogger(__name__)

DEFAULT_LEASE_DIR = "/tmp/podium-leases"
SUFFIX = ".lease"
RECORD_SUFFIX = ".holder"
PROC_LOCKS = "/proc/locks"
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us
_RECORD_MAX = 4096  # bytes; a record is one short JSON object


class LeaseError(PodiumError):
    """The lease directory or a lease file is unusable."""


class LeaseBusy(LeaseError):
    """The GPU is leased by another run in a way that excludes this request."""

    def __init__(self, message: str, info: LeaseInfo | None) -> None:
        super().__init__(message)
        self.info = info


@dataclass(frozen=True)
class Holder:
    """A process that holds a lease, as the kernel names it, with its verified record if any."""

    user: str
    """From the process's uid, never from the record."""
    uid: int
    pid: int
    run_id: str
    """``"?"`` when the holder wrote no record podium could verify."""
    host: str
    started: float  # in seconds since the epoch; 0 without a record
    shared: bool

    @property
    def recorded(self) -> bool:
        return self.run_id != "?"

    def describe(self) -> str:
        if not self.recorded:
            return f"{self.user} (pid {self.pid}, no readable record)"
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        return f"{self.user} (run {self.run_id}, pid {self.pid}{host}, since {since})"


@dataclass(frozen=True)
class LeaseInfo:
    """A GPU's lease as a probe sees it."""

    uuid: str
    shared: bool
    """True when held with ``LOCK_SH`` (``--share-gpu``) by one or more runs."""
    holders: tuple[Holder, ...]
    """The processes that hold the lock; empty when the kernel does not say (no /proc/locks)."""
    problem: str | None = None
    """Set when the lease file or directory is unusable: no lease, but podium cannot lease it."""

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h.user for h in self.holders))

    def describe(self) -> str:
        if self.problem is not None:
            return self.problem
        who = "; ".join(h.describe() for h in self.holders) or "a podium run (no readable record)"
        return f"{who}, shared" if self.shared else who


def busy_message(info: LeaseInfo, *, shared_request: bool) -> str:
    """Why a request for ``info.uuid`` cannot be granted, with the way out."""
    if info.problem is not None:
        return f"GPU {info.uuid} cannot be leased: {info.problem}"
    if info.shared and not shared_request:
        return (
            f"GPU {info.uuid} is shared by {info.describe()}; "
            "pass --share-gpu to share it too, or choose another GPU"
        )
    if not info.shared and shared_request:
        return f"GPU {info.uuid} is leased exclusively by {info.describe()}; choose another GPU"
    return f"GPU {info.uuid} is leased by {info.describe()}; choose another GPU or wait"


def _safe(uuid: str) -> str:
    safe = re.sub(r"[^a-z0-9._-]", "_", uuid.strip().lower())
    if not safe.strip("._"):
        raise LeaseError(f"{uuid!r} is not a GPU UUID")
    return safe


def lease_path(uuid: str, lease_dir: str | Path = DEFAULT_LEASE_DIR) -> Path:
    """``<lease_dir>/<uuid>.lease``; UUIDs are lower-cased so every spelling meets in one file."""
    return Path(lease_dir) / f"{_safe(uuid)}{SUFFIX}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container user without a passwd entry
        return str(uid)


def _owner(st: os.stat_result) -> str:
    return _user_name(st.st_uid)


# ----------------------------------------------------------------------------------------------
# The lease directory


def _setup_hint(path: Path) -> str:
    return f"sudo install -d -m 1777 -o root -g root {path}"


def _dir_problem(path: Path, st: os.stat_result, trusted: Collection[int]) -> str | None:
    """Why the opened directory ``path`` may not hold leases, with the admin's fix; None if fine."""
    if not stat.S_ISDIR(st.st_mode):
        return f"{path}: the lease directory is not a directory; the admin must run {_setup_hint(path)}"
    if st.st_uid not in trusted:
        return (
            f"{path}: the lease directory is owned by {_owner(st)}, not root, so its owner could "
            f"delete other users' leases; the admin must remove it and run {_setup_hint(path)} "
            "(or name its owner as gpus.admin in /etc/podium/config.toml)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o1777:
        return (
            f"{path}: the lease directory has mode {mode:04o}, not 1777 (sticky, writable by "
            f"all), so other users could not lease or could delete leases; the admin must run "
            f"sudo chmod 1777 {path}"
        )
    return None


def _trusted(admins: Collection[int]) -> set[int]:
    return {0, *admins}


def _open_dir(path: Path, admins: Collection[int]) -> int:
    """A descriptor of the lease directory after checking it; raises LeaseError with the fix.

    ``O_NOFOLLOW`` refuses a symlink as the last component; the checks are made with ``fstat``
    on the very directory that later opens use (``dir_fd``), so there is no window to swap it.
    """
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as err:
        if os.path.islink(path):
            raise LeaseError(
                f"{path}: the lease directory is a symlink, which podium never follows; the "
                f"admin must remove it and run {_setup_hint(path)}"
            ) from None
        if os.path.lexists(path) and not os.path.isdir(path):
            raise LeaseError(
                f"{path}: the lease directory is not a directory; the admin must remove it and "
                f"run {_setup_hint(path)}"
            ) from None
        raise LeaseError(
            f"{path}: cannot open the lease directory ({err.strerror}); the admin must run "
            f"{_setup_hint(path)}"
        ) from None
    problem = _dir_problem(path, os.fstat(dfd), _trusted(admins))
    if problem is not None:
        os.close(dfd)
        raise LeaseError(problem)
    return dfd


def ensure_lease_dir(
    lease_dir: str | Path = DEFAULT_LEASE_DIR,
    *,
    admins: Collection[int] = (),
    euid: int | None = None,
) -> Path:
    """Check the lease directory, creating it (mode 1777) only when run as root or the admin.

    Args:
        admins: uids that may own the directory besides root (``gpus.admin``).
        euid: this process's effective uid (default ``os.geteuid()``); tests pass another.

    Raises:
        LeaseError: it is missing and this user may not create it, or it is a symlink, not a
            directory, owned by somebody else, or not mode 1777; the message says what to do.
    """
    os.close(_open_or_create_dir(Path(lease_dir), admins, euid))
    return Path(lease_dir)


def _open_or_create_dir(path: Path, admins: Collection[int], euid: int | None) -> int:
    try:
        return _open_dir(path, admins)
    except FileNotFoundError:
        pass
    me = os.geteuid() if euid is None else euid
    if me not in _trusted(admins):
        raise LeaseError(
            f"{path}: the lease directory does not exist, and only root or the lab's admin may "
            f"create it (a user-owned one would let its owner break leases); the admin must run "
            f"{_setup_hint(path)}"
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)  # opened up only after the mode is right
        os.chmod(path, 0o1777, follow_symlinks=False)  # mkdir's mode is masked by the umask
    except FileExistsError:
        pass
    except OSError as err:
        raise LeaseError(
            f"{path}: cannot create the lease directory ({err.strerror}); "
            f"the admin must run {_setup_hint(path)}"
        ) from None
    try:
        return _open_dir(path, admins)
    except FileNotFoundError:
        raise LeaseError(f"{path}: the lease directory vanished while podium created it") from None


# ----------------------------------------------------------------------------------------------
# Lease files


def _file_problem(path: Path, dfd: int, name: str) -> str | None:
    """Why the existing entry ``name`` cannot serve as a lease file; None if it can be opened."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    owner, mode = _owner(st), stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        kind = "a symlink"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "a FIFO"
    elif not stat.S_ISREG(st.st_mode):
        kind = "not a regular file"
    else:
        return f"lease file {path} owned by {owner}, mode {mode:04o}: ask {owner} or the admin to remove it"
    return f"lease file {path} is {kind}, owned by {owner}: ask {owner} or the admin to remove it"


def _open(dfd: int, path: Path, *, create: bool) -> int | None:
    """A read-only descriptor of the lease file; None if it is absent and ``create`` is False.

    Raises:
        LeaseError: the entry is there but unusable (the message names its owner).
    """
    name = path.name
    for _ in range(10):
        try:
            fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            if not create:
                return None
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644, dir_fd=dfd
                )
            except FileExistsError:
                continue  # created by somebody else just now: open theirs
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o644)  # a umask of 077 would keep other users from locking it
        except OSError as err:
            raise LeaseError(
                _file_problem(path, dfd, name)
                or f"{path}: cannot open the lease file ({err.strerror})"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LeaseError(_file_problem(path, dfd, name) or f"{path}: not a regular file")
        return fd
    raise LeaseError(f"{path}: the lease file keeps appearing and vanishing")


def _names_inode(dfd: int, name: str, fd: int) -> bool:
    """Whether ``name`` in the directory still leads to the file open on ``fd``."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _try_lock(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Who holds a lock: the kernel's word, then the holder's own record


LockTable = dict[int, list[tuple[int, bool]]]
"""inode -> [(pid, shared)] of every flock on this machine, from /proc/locks."""


def _lock_table() -> LockTable | None:
    """Every flock held on this machine by inode; None if /proc/locks cannot be read.

    /proc/locks prints ``1: FLOCK  ADVISORY  WRITE 4242 fe:00:2157621 0 EOF`` per lock, the pid
    being the process that took it (in our pid namespace), and ``1: -> FLOCK …`` for waiters,
    which hold nothing. Locks are keyed by inode alone: on btrfs and overlayfs the device field
    is not the ``st_dev`` that ``stat`` reports, and a match needs the pid as well.

    Why not ``fcntl(F_OFD_GETLK)``: on Linux flock and fcntl locks are separate kinds, so GETLK
    never sees a flock; it names one conflicting lock, not all; and OFD locks report pid -1.
    """
    try:
        with open(PROC_LOCKS, "rb") as f:  # bytes: no codec lookup (see pid_start)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    table: LockTable = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        with contextlib.suppress(ValueError):
            pid, inode = int(fields[4]), int(fields[5].rsplit(":", 1)[-1])
            if pid > 0:
                table.setdefault(inode, []).append((pid, fields[3] == "READ"))
    return table


def _pid_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, so a reused pid is not its record's."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class _Record:
    """A holder record file that passed every check: its holder, and the inode it locked."""

    name: str
    holder: Holder
    inode: int


def _record_files(dfd: int, uuid: str) -> list[tuple[str, int, int, dict[str, Any]]]:
    """(name, pid in the name, owner uid, JSON) of each readable record file of ``uuid``."""
    prefix = _safe(uuid) + "."
    try:
        names = sorted(os.listdir(dfd))
    except OSError:
        return []
    out = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(RECORD_SUFFIX)):
            continue
        try:
            pid = int(name[len(prefix) :].split(".", 1)[0])
            fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dfd)
        except (ValueError, OSError):
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                record = json.loads(os.pread(fd, _RECORD_MAX, 0).decode())
                if isinstance(record, dict):
                    out.append((name, pid, st.st_uid, record))
        except (OSError, ValueError):
            pass
        finally:
            os.close(fd)
    return out


def _live_records(dfd: int, uuid: str, table: LockTable) -> list[_Record]:
    """The records whose process holds a flock on the inode they name, checked every way.

    A record counts only if: the pid in its name and in it is a live process; the file belongs
    to that process's user, who is also the uid it states; the process started when it says
    (a reused pid is not the record's); it names this GPU; and the kernel lists that pid as
    holding a flock on the record's inode. The user's name comes from the uid.
    """
    out = []
    for name, pid, owner, record in _record_files(dfd, uuid):
        uid = _pid_uid(pid)
        if uid is None or uid != owner:
            continue  # a dead process's, or somebody else's file posing as its record
        start = pid_start(pid)
        try:
            if (int(record["pid"]), int(record["uid"])) != (pid, uid):
                continue
            if str(record["gpu"]).strip().lower() != uuid.strip().lower():
                continue
            if start is not None and int(record["proc_start"]) != start:
                continue
            inode = int(record["ino"])
            if not any(p == pid for p, _ in table.get(inode, ())):
                continue
            holder = Holder(
                user=_user_name(uid),
                uid=uid,
                pid=pid,
                run_id=str(record["run_id"]),
                host=str(record["host"]),
                started=float(record["started"]),
                shared=bool(record.get("shared", False)),
            )
        except (KeyError, TypeError, ValueError):
            continue
        out.append(_Record(name, holder, inode))
    return out


def _who(dfd: int, uuid: str, inode: int | None) -> tuple[list[Holder], list[Holder]]:
    """(holders of the lease file ``inode``, holders of lease files deleted under them).

    Every lock on the current file is named, by its record if it has a live one, else by its
    pid and that pid's user. A live record naming another inode is a lease on a lease file that
    was unlinked while held (by its owner or root): it still excludes, though no file shows it.
    """
    table = _lock_table()
    if table is None:
        return [], []
    records = _live_records(dfd, uuid, table)
    current: list[Holder] = []
    here = socket.gethostname()
    by_pid: dict[int, list[Holder]] = {}
    for r in records:
        if r.inode == inode:
            by_pid.setdefault(r.holder.pid, []).append(r.holder)
    for pid, shared in table.get(inode, []) if inode is not None else []:
        named = by_pid.get(pid)
        if named:
            current.append(named.pop(0))
        else:  # locked, but no record (yet, or not podium): the kernel's word only
            uid = _pid_uid(pid)
            user = "?" if uid is None else _user_name(uid)
            current.append(Holder(user, -1 if uid is None else uid, pid, "?", here, 0.0, shared))
    orphans = [r.holder for r in records if r.inode != inode]
    order = lambda h: (not h.recorded, h.started, h.pid)  # noqa: E731
    return sorted(current, key=order), sorted(orphans, key=order)


def _info(uuid: str, shared: bool, current: list[Holder], orphans: list[Holder]) -> LeaseInfo:
    return LeaseInfo(
        uuid=uuid,
        shared=shared and all(h.shared for h in orphans),
        holders=(*current, *orphans),
    )


def _write_record(dfd: int, uuid: str, record: dict[str, Any]) -> str | None:
    """Write this holder's record to a new file of its own; its name, or None if not written."""
    name = f"{_safe(uuid)}.{os.getpid()}.{secrets.token_hex(4)}{RECORD_SUFFIX}"
    try:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dfd,
        )
    except OSError as err:  # a full disk must not stop a run: the record is for display only
        log.warning("lease record not written: %s", err)
        return None
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    except OSError as err:
        log.warning("lease record not written: %s", err)
    finally:
        os.close(fd)
    return name


def _clear_stale_records(dfd: int, uuid: str) -> None:
    """Remove this user's records of ``uuid`` that name no live lock (left by a kill -9)."""
    table = _lock_table()
    if table is None:
        return
    live = {r.name for r in _live_records(dfd, uuid, table)}
    me = os.geteuid()
    for name, _, owner, _ in _record_files(dfd, uuid):
        if owner == me and name not in live:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)


class Lease:
    """A held lease. Keep the object (its file descriptor) for as long as the run uses the GPU.

    Dropping the object does not release the lease (the descriptor stays open until the process
    ends), so a forgotten ``release()`` errs on the side of keeping the GPU.
    """

    def __init__(
        self, uuid: str, path: Path, dfd: int, fd: int, record: str | None, holder: Holder
    ) -> None:
        self.uuid = uuid
        self.path = path
        self.holder = holder
        self._dfd = dfd
        self._fd: int | None = fd
        self._record = record

    @property
    def shared(self) -> bool:
        return self.holder.shared

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    @property
    def held(self) -> bool:
        return self._fd is not None

    def intact(self) -> bool:
        """Whether the lease file's name still leads to the locked file (nobody unlinked it)."""
        return self._fd is not None and _names_inode(self._dfd, self.path.name, self._fd)

    def release(self) -> None:
        """Give the GPU back; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._record is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._record, dir_fd=self._dfd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as err:
            log.warning("releasing lease %s: %s", self.path, err)
        finally:
            os.close(fd)
            os.close(self._dfd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "exclusive"
        return f"Lease({self.uuid!r}, run={self.run_id!r}, {mode}, held={self.held})"


def acquire(
    uuid: str,
    run_id: str,
    shared: bool = False,
    *,
    lease_dir: str | Path = DEFAULT_LEASE_DIR,
    admins: Collection[int] = (),
    wait_seconds: float = 0.25,
) -> Lease:
    """Lease GPU ``uuid`` for run ``run_id``.

    Args:
        uuid: the GPU's UUID (``GPU-…``).
        run_id: shown to other users as the holder's run.
        shared: take a shared lease (``--share-gpu``) that other shared leases may join.
        lease_dir: the lab's lease directory (``gpus.lease_dir``).
        admins: uids that may own the lease directory besides root (``gpus.admin``).
        wait_seconds: how long to retry a busy lock, to ride out other processes' probes.

    Raises:
        LeaseBusy: another run holds the GPU in a conflicting mode; the message names it.
        LeaseError: the lease directory or file is unusable; the message says what to do.
    """
    path = lease_path(uuid, lease_dir)
    dfd = _open_or_create_dir(Path(lease_dir), admins, None)
    try:
        fd = _locked(dfd, path, uuid, shared, wait_seconds)
    except BaseException:
        os.close(dfd)
        raise
    holder = Holder(
        user=_user_name(os.geteuid()),
        uid=os.geteuid(),
        pid=os.getpid(),
        run_id=run_id,
        host=socket.gethostname(),
        started=time.time(),
        shared=shared,
    )
    _clear_stale_records(dfd, uuid)
    record = _write_record(
        dfd,
        uuid,
        {
            "gpu": uuid,
            "ino": os.fstat(fd).st_ino,
            "proc_start": pid_start(os.getpid()),
            **asdict(holder),
        },
    )
    return Lease(uuid, path, dfd, fd, record, holder)


def _locked(dfd: int, path: Path, uuid: str, shared: bool, wait_seconds: float) -> int:
    """A descriptor of the lease file holding the lock ``shared`` asks for; LeaseBusy if busy."""
    deadline = time.monotonic() + wait_seconds
    fd = _open(dfd, path, create=True)
    assert fd is not None
    relocks = 0
    while True:
        locked = False
        if _try_lock(fd, fcntl.LOCK_EX):
            # Downgrading is not atomic (flock drops, then re-takes): if an exclusive request
            # slips in between, this attempt fails like any other busy one.
            locked = not shared or _try_lock(fd, fcntl.LOCK_SH)
        elif shared:
            locked = _try_lock(fd, fcntl.LOCK_SH)
        if locked and _names_inode(dfd, path.name, fd):
            _, orphans = _who(dfd, uuid, os.fstat(fd).st_ino)
            if any(not (shared and h.shared) for h in orphans):
                # Somebody still holds this GPU on a lease file that was deleted under them.
                info = _info(uuid, True, [], orphans)
                os.close(fd)
                raise LeaseBusy(busy_message(info, shared_request=shared), info)
            return fd
        if locked:
            # The file was unlinked (or replaced) between our open and our lock: a lock on it
            # excludes nobody. Start again on whatever the name leads to now.
            os.close(fd)
            relocks += 1
            if relocks > 10:
                raise LeaseError(f"{path}: the lease file keeps being deleted; ask the admin")
            fd = _open(dfd, path, create=True)
            assert fd is not None
            continue
        if time.monotonic() >= deadline:
            info = _probe(dfd, fd, uuid)
            os.close(fd)
            info = info or LeaseInfo(uuid=uuid, shared=False, holders=())
            raise LeaseBusy(busy_message(info, shared_request=shared), info)
        time.sleep(0.02)


def _probe(dfd: int, fd: int | None, uuid: str) -> LeaseInfo | None:
    """The lease on the file behind ``fd`` (which holds no lock; None: there is no file), or on
    a lease file deleted while held; None if the GPU is free."""
    shared: bool | None = None  # None: the file is not locked
    if fd is not None:
        try:
            if not _try_lock(fd, fcntl.LOCK_SH):
                shared = False
            # Converting our shared lock to exclusive succeeds only if nobody else holds one.
            elif not _try_lock(fd, fcntl.LOCK_EX):
                shared = True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    current, orphans = _who(dfd, uuid, None if fd is None else os.fstat(fd).st_ino)
    if shared is None:
        return _info(uuid, True, [], orphans) if orphans else None
    return _info(uuid, shared, current, orphans)


def holders(
    uuid: str, *, lease_dir: str | Path = DEFAULT_LEASE_DIR, admins: Collection[int] = ()
) -> LeaseInfo | None:
    """Who leases GPU ``uuid`` now, or None if nobody does. Takes no lease and creates nothing.

    An unusable lease directory or lease file is no lease: it comes back as a ``LeaseInfo`` with
    ``problem`` set (podium could not lease that GPU either), not as an exception.
    """
    path = lease_path(uuid, lease_dir)
    try:
        dfd = _open_dir(Path(lease_dir), admins)
    except FileNotFoundError:
        return None  # no directory, no leases
    except LeaseError as err:
        return LeaseInfo(uuid=uuid, shared=False, holders=(), problem=str(err))
    try:
        fd = _open(dfd, path, create=False)
        try:
            return _probe(dfd, fd, uuid)
        finally:
            if fd is not None:
                os.close(fd)
    except LeaseError as err:
        return LeaseInfo(uuid=uuid, shared=False, holders=(), problem=str(err))
    finally:
        os.close(dfd)
