"""The queue on disk: one JSON file per entry, changed only under the queue's lock.

Where: ``$XDG_STATE_HOME/podium/queue/<host>/`` (default ``~/.local/state/podium/...``), mode
0700. Per user because it is in the user's home, per host because GPUs are (a home directory
shared over NFS must not let one host's waiter start runs for another host's GPUs). It survives
logout and reboot: nothing in it lives in memory only.

Files::

    queue.lock          flock: every change to an entry happens while holding it
    waiter.lock         flock: held by the one live waiter for its whole life
    waiter.log          the waiter's output
    entries/000007.json one entry (written atomically: a temporary file renamed into place)
    entries/000007.log  what the started run printed before its own log took over

Entries are numbered in the order they were queued; the number is the entry's id and its place
in the queue (first come, first served).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from podium.engine.checkpoints import write_json_atomic
from podium.engine.errors import PodiumError

EntryState = Literal["queued", "starting", "started", "failed", "cancelled"]
WAITING: tuple[EntryState, ...] = ("queued", "starting")
"""States of entries the waiter still has work for."""
ENV_KEYS = ("XDG_CONFIG_HOME", "PYTHONPATH", "OMP_NUM_THREADS", "VIRTUAL_ENV", "PATH")
"""Besides every ``PODIUM_*`` variable: what a queued run takes from the shell that queued it."""


ENDED_KEEP = 20
"""Ended entries (started, failed, cancelled) kept whatever their age: what ``podium queue
list`` shows of the past."""
ENDED_KEEP_S = 7 * 24 * 3600.0
"""Older ended entries past those are deleted when an entry is queued."""


class QueueError(PodiumError):
    """A queue command cannot be done (unknown id, unusable state directory)."""


@dataclass
class Entry:
    """One queued run: what to start, and what has become of it."""

    id: int
    profile: str
    """The profile file, absolute."""
    profile_name: str
    gpus: str
    """The ``--gpus`` spec the run asked for (``auto``, a count, or GPU names)."""
    runs_dir: str
    """The runs root, absolute."""
    cwd: str
    options: list[str] = field(default_factory=list)
    """The other ``podium train`` flags, as typed: ``--set K=V``, ``--max-steps N``, ..."""
    name: str | None = None
    """``--name``; without it the run id is chosen when the run starts."""
    share_gpu: bool = False
    env: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    state: EntryState = "queued"
    waiting: str = ""
    """While queued: what it waits for, in words."""
    run_id: str | None = None
    pid: int | None = None
    """The started run's process."""
    pid_start: int | None = None
    """Its start time in clock ticks since boot: a pid reused after a reboot is not the run."""
    gpu_uuids: list[str] = field(default_factory=list)
    gpu_indices: list[int] = field(default_factory=list)
    reason: str = ""
    """Why it failed, or who cancelled it."""
    updated: float = 0.0

    @property
    def label(self) -> str:
        """How lists name the entry's GPUs: the request, then the GPUs it got."""
        got = ",".join(str(i) for i in self.gpu_indices)
        return f"{self.gpus} -> GPU {got}" if got else self.gpus

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Entry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def queue_dir(environ: Mapping[str, str] | None = None) -> Path:
    """This user's queue directory on this host (not created)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "podium" / "queue" / socket.gethostname()


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a queued run is started with, from the shell that queued it."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k.startswith("PODIUM_") or k in ENV_KEYS}


class Queue:
    """The queue directory: entries, the lock that guards them, the waiter's lock."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = queue_dir() if path is None else path

    @property
    def entries_dir(self) -> Path:
        return self.path / "entries"

    @property
    def waiter_lock_path(self) -> Path:
        return self.path / "waiter.lock"

    @property
    def waiter_log_path(self) -> Path:
        return self.path / "waiter.log"

    def entry_path(self, entry_id: int) -> Path:
        return self.entries_dir / f"{entry_id:06d}.json"

    def start_log_path(self, entry_id: int) -> Path:
        return self.entries_dir / f"{entry_id:06d}.log"

    def ensure(self) -> None:
        """Create the directory (0700: queued runs carry the user's environment)."""
        try:
            self.entries_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.chmod(0o700)
        except OSError as exc:
            raise QueueError(
                f"{self.path}: cannot create the queue directory ({exc.strerror}); "
                "set XDG_STATE_HOME to a writable directory"
            ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the queue's lock: two ``podium queue`` at once, or one and the waiter, take
        turns, so ids are never given twice and no change is lost."""
        self.ensure()
        fd = os.open(self.path / "queue.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def entries(self) -> list[Entry]:
        """Every entry, oldest first; an unreadable file is skipped (it cannot be started)."""
        if not self.entries_dir.is_dir():
            return []
        out = []
        for path in sorted(self.entries_dir.glob("*.json")):
            try:
                out.append(Entry.from_dict(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda e: e.id)

    def waiting(self) -> list[Entry]:
        """Entries still queued or starting, in queue order."""
        return [e for e in self.entries() if e.state in WAITING]

    def get(self, entry_id: int) -> Entry | None:
        return next((e for e in self.entries() if e.id == entry_id), None)

    def save(self, entry: Entry) -> None:
        """Write ``entry`` (call it under ``locked``)."""
        entry.updated = time.time()
        write_json_atomic(self.entry_path(entry.id), entry.to_dict())

    def add(self, entry: Entry) -> Entry:
        """Give ``entry`` the next id and write it; entries that ended long ago go (``prune``)."""
        with self.locked():
            entries = self.entries()
            entry.id = max((e.id for e in entries), default=0) + 1
            entry.created = time.time()
            self.save(entry)
            self.prune(entries, entry.created)
        return entry

    def prune(self, entries: list[Entry], now: float) -> list[int]:
        """Delete ended entries (and their start logs) older than ``ENDED_KEEP_S``, past the
        newest ``ENDED_KEEP`` of them; waiting ones always stay. Called under ``locked`` with
        the entries as read there; returns the ids deleted. Without it a user who queues every
        day would list, and the waiter read, every entry ever queued."""
        ended = sorted((e for e in entries if e.state not in WAITING), key=lambda e: -e.id)
        gone = [e.id for e in ended[ENDED_KEEP:] if now - (e.updated or e.created) > ENDED_KEEP_S]
        for entry_id in gone:
            for path in (self.entry_path(entry_id), self.start_log_path(entry_id)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return gone

    def cancel(self, entry_id: int) -> Entry:
        """Cancel a queued entry; one that already started or ended is refused."""
        with self.locked():
            entry = self.get(entry_id)
            if entry is None:
                ids = ", ".join(str(e.id) for e in self.waiting()) or "none"
                raise QueueError(f"queue cancel {entry_id}: no such entry (queued: {ids})")
            if entry.state != "queued":
                what = f"run {entry.run_id}" if entry.run_id else entry.state
                raise QueueError(
                    f"queue cancel {entry_id}: the entry is {entry.state} ({what}); "
                    "stop a started run with podium control RUN stop"
                )
            entry.state, entry.reason, entry.waiting = "cancelled", "cancelled by you", ""
            self.save(entry)
        return entry

    def waiter_alive(self) -> bool:
        """Whether a waiter holds ``waiter.lock`` (a dead one's lock went with its process)."""
        if not self.waiter_lock_path.exists():
            return False
        fd = os.open(self.waiter_lock_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def waiter_pid(self) -> int | None:
        """The live waiter's pid, as it wrote it into its lock file."""
        if not self.waiter_alive():
            return None
        try:
            return int(self.waiter_lock_path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None
