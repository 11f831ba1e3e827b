"""Advisory per-GPU leases, so podium runs (of one user or many) never land on each other's GPUs.

A lease is an ``fcntl.flock`` on ``<lease dir>/<gpu uuid>.lease``, held on a file descriptor that
the training process keeps open for the life of the run. The kernel drops the lock when the last
descriptor closes, so a lease vanishes with its process, even one killed by ``kill -9``: there is
no stale-lease cleanup to get wrong, and no timestamps are trusted.

* An exclusive lease (the default) takes ``LOCK_EX``; a shared one (``--share-gpu``) takes
  ``LOCK_SH``, so two shared runs may hold one GPU while an exclusive request fails on it, and a
  shared request fails on an exclusively held GPU.
* The lease directory (default ``/tmp/podium-leases``) is created mode 1777 (sticky, like
  ``/tmp``), and lease files mode 0666, so every user of the server can lock every GPU's file but
  nobody can delete somebody else's. Lease files are never deleted: deleting a locked file would
  let the next run lock a fresh file of the same name while the old holder still runs.
* For display, the file holds JSON lines (user, uid, pid, run id, host, start time), written
  after locking. The first holder of a free GPU truncates it; further shared holders append, and
  a shared holder that releases appends a tombstone. Readers tolerate empty, partial and stale
  content: the lock, not the text, says whether a GPU is leased.

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
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podium.engine.errors import PodiumError

log = logging.getLogger(__name__)

DEFAULT_LEASE_DIR = "/tmp/podium-leases"
SUFFIX = ".lease"
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us


class LeaseError(PodiumError):
    """The lease directory or a lease file is unusable."""


class LeaseBusy(LeaseError):
    """The GPU is leased by another run in a way that excludes this request."""

    def __init__(self, message: str, info: LeaseInfo | None) -> None:
        super().__init__(message)
        self.info = info


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its lease file records it (for display only)."""

    user: str
    uid: int
    pid: int
    run_id: str
    host: str
    started: float  # in seconds since the epoch
    shared: bool

    def describe(self) -> str:
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
    """The live holders the file names; empty when the record is not written or readable yet."""

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h.user for h in self.holders))

    def describe(self) -> str:
        who = "; ".join(h.describe() for h in self.holders) or "a podium run (no readable record)"
        return f"{who}, shared" if self.shared else who


def busy_message(info: LeaseInfo, *, shared_request: bool) -> str:
    """Why a request for ``info.uuid`` cannot be granted, with the way out."""
    if info.shared and not shared_request:
        return (
            f"GPU {info.uuid} is shared by {info.describe()}; "
            "pass --share-gpu to share it too, or choose another GPU"
        )
    if not info.shared and shared_request:
        return f"GPU {info.uuid} is leased exclusively by {info.describe()}; choose another GPU"
    return f"GPU {info.uuid} is leased by {info.describe()}; choose another GPU or wait"


def lease_path(uuid: str, lease_dir: str | Path = DEFAULT_LEASE_DIR) -> Path:
    """``<lease_dir>/<uuid>.lease``; UUIDs are lower-cased so every spelling meets in one file."""
    safe = re.sub(r"[^a-z0-9._-]", "_", uuid.strip().lower())
    if not safe.strip("._"):
        raise LeaseError(f"{uuid!r} is not a GPU UUID")
    return Path(lease_dir) / f"{safe}{SUFFIX}"


def ensure_lease_dir(lease_dir: str | Path = DEFAULT_LEASE_DIR) -> Path:
    """Create the lease directory (mode 1777, sticky) if it is missing; check it is a directory."""
    path = Path(lease_dir)
    if not path.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as err:
            raise LeaseError(
                f"{path}: cannot create the lease directory ({err.strerror}); "
                "set gpus.lease_dir to a directory every user can write"
            ) from None
        else:
            os.chmod(path, 0o1777)  # mkdir's mode is masked by the umask; chmod's is not
    if not path.is_dir():
        raise LeaseError(f"{path}: the lease directory is not a directory")
    return path


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a container user without a passwd entry
        return os.environ.get("USER") or str(os.getuid())


def _try_lock(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open(path: Path, *, create: bool) -> tuple[int, bool] | None:
    """(fd, writable) of a lease file, None if it does not exist and ``create`` is False.

    Opens an existing file without ``O_CREAT`` first: with ``fs.protected_regular`` (the default
    on many distributions) an ``O_CREAT`` open of another user's file in a sticky directory
    fails even when the file is mode 0666.
    """
    for _ in range(10):
        try:
            fd = os.open(path, (os.O_RDWR | os.O_APPEND if create else os.O_RDONLY) | _OPEN_FLAGS)
            writable = create
        except FileNotFoundError:
            if not create:
                return None
            try:
                fd = os.open(
                    path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o666
                )
            except FileExistsError:
                continue  # created by somebody else just now: open theirs
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # the umask would keep other users out
            writable = True
        except PermissionError:
            if not create:
                raise
            # Somebody's file that we may lock but not write: lease without a record.
            try:
                fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
            except OSError as err:
                raise LeaseError(
                    f"{path}: cannot open the lease file ({err.strerror}); its owner must make "
                    "it readable by all (chmod 666)"
                ) from None
            writable = False
        except OSError as err:
            raise LeaseError(f"{path}: cannot open the lease file ({err.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LeaseError(f"{path}: not a regular file; remove it so leases can work")
        return fd, writable
    raise LeaseError(f"{path}: the lease file keeps appearing and vanishing")


def _records(fd: int) -> list[dict[str, Any]]:
    try:
        raw = os.pread(fd, 1 << 16, 0)
    except OSError:
        return []
    out = []
    for line in raw.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _holders(fd: int, uuid: str, *, shared: bool) -> LeaseInfo:
    holders: dict[tuple[int, str], Holder] = {}
    here = socket.gethostname()
    for record in _records(fd):
        try:
            key = (int(record["pid"]), str(record["run_id"]))
            if record.get("released"):
                holders.pop(key, None)
                continue
            holder = Holder(
                user=str(record["user"]),
                uid=int(record["uid"]),
                pid=key[0],
                run_id=key[1],
                host=str(record["host"]),
                started=float(record["started"]),
                shared=bool(record.get("shared", False)),
            )
        except (KeyError, TypeError, ValueError):
            continue  # a partial or foreign line
        if shared and holder.host == here and not _alive(holder.pid):
            continue  # a shared holder that died; its lock went with it
        holders[key] = holder
    found = tuple(holders.values())
    return LeaseInfo(uuid=uuid, shared=shared, holders=found if shared else found[-1:])


def _write(fd: int, record: dict[str, Any], *, truncate: bool) -> None:
    try:
        if truncate:
            os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    except OSError as err:  # a full disk must not stop a run: the record is for display only
        log.warning("lease record not written: %s", err)


class Lease:
    """A held lease. Keep the object (its file descriptor) for as long as the run uses the GPU.

    Dropping the object does not release the lease (the descriptor stays open until the process
    ends), so a forgotten ``release()`` errs on the side of keeping the GPU.
    """

    def __init__(self, uuid: str, path: Path, fd: int, writable: bool, holder: Holder) -> None:
        self.uuid = uuid
        self.path = path
        self.holder = holder
        self._fd: int | None = fd
        self._writable = writable

    @property
    def shared(self) -> bool:
        return self.holder.shared

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the GPU back; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._writable:
                if self.shared:
                    _write(
                        fd,
                        {"released": True, "pid": self.holder.pid, "run_id": self.run_id},
                        truncate=False,
                    )
                else:
                    os.ftruncate(fd, 0)  # no stale record for the next reader
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as err:
            log.warning("releasing lease %s: %s", self.path, err)
        finally:
            os.close(fd)

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
    wait_seconds: float = 0.25,
) -> Lease:
    """Lease GPU ``uuid`` for run ``run_id``.

    Args:
        uuid: the GPU's UUID (``GPU-…``).
        run_id: shown to other users as the holder's run.
        shared: take a shared lease (``--share-gpu``) that other shared leases may join.
        lease_dir: the lab's lease directory (``gpus.lease_dir``).
        wait_seconds: how long to retry a busy lock, to ride out other processes' probes.

    Raises:
        LeaseBusy: another run holds the GPU in a conflicting mode; the message names it.
        LeaseError: the lease directory or file is unusable.
    """
    path = lease_path(uuid, ensure_lease_dir(lease_dir))
    opened = _open(path, create=True)
    assert opened is not None
    fd, writable = opened
    holder = Holder(
        user=_user(),
        uid=os.getuid(),
        pid=os.getpid(),
        run_id=run_id,
        host=socket.gethostname(),
        started=time.time(),
        shared=shared,
    )
    record = {"gpu": uuid, **asdict(holder)}
    deadline = time.monotonic() + wait_seconds
    while True:
        if _try_lock(fd, fcntl.LOCK_EX):
            # Free: this run is the first holder, so the old record goes.
            if writable:
                _write(fd, record, truncate=True)
            # Downgrading is not atomic (flock drops, then re-takes): if an exclusive request
            # slips in between, this attempt fails like any other busy one.
            if not shared or _try_lock(fd, fcntl.LOCK_SH):
                return Lease(uuid, path, fd, writable, holder)
        elif shared and _try_lock(fd, fcntl.LOCK_SH):
            if writable:
                _write(fd, record, truncate=False)
            return Lease(uuid, path, fd, writable, holder)
        if time.monotonic() >= deadline:
            info = _probe(fd, uuid)
            os.close(fd)
            info = info or LeaseInfo(uuid=uuid, shared=False, holders=())
            raise LeaseBusy(busy_message(info, shared_request=shared), info)
        time.sleep(0.02)


def _probe(fd: int, uuid: str) -> LeaseInfo | None:
    """The lease on the file behind ``fd`` (which holds no lock), or None if it is free."""
    try:
        if not _try_lock(fd, fcntl.LOCK_SH):
            return _holders(fd, uuid, shared=False)
        # Converting our shared lock to exclusive succeeds only if nobody else holds one.
        if _try_lock(fd, fcntl.LOCK_EX):
            return None
        return _holders(fd, uuid, shared=True)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def holders(uuid: str, *, lease_dir: str | Path = DEFAULT_LEASE_DIR) -> LeaseInfo | None:
    """Who leases GPU ``uuid`` now, or None if nobody does. Takes no lease and creates nothing."""
    path = lease_path(uuid, lease_dir)
    try:
        opened = _open(path, create=False)
    except PermissionError:
        # A lease file we may not even read: assume the worst, a holder we cannot name.
        return LeaseInfo(uuid=uuid, shared=False, holders=())
    if opened is None:
        return None
    fd, _ = opened
    try:
        return _probe(fd, uuid)
    finally:
        os.close(fd)
