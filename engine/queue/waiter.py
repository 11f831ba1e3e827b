"""The waiter: one background process per user that starts queued runs when their GPUs are free.

``ensure_waiter`` starts one (detached, in its own session, so a logout does not end it) when
entries wait and no waiter holds ``waiter.lock``; a waiter that died released that lock with its
process, so the next ``podium queue`` (adding, listing or cancelling) notices and starts another.
A second waiter started at the same moment finds the lock taken and exits.

Every few seconds (``PODIUM_QUEUE_POLL_S``, default 5) the waiter looks at the FIRST queued
entry and asks ``select_gpus`` (the rules of ``--gpus auto``: not reserved, not leased, not
busy) for the GPUs it wants. Order is strict: a later entry never passes an earlier one, even
when it would fit (a one-GPU run must not starve a two-GPU run queued before it). When the GPUs
are free it starts ``podium train ... --gpus <their UUIDs>`` detached and marks the entry
``starting``. A starting entry's GPUs count as leased by its run until the run holds their
leases itself (or has exited): between the start and the run's own lease nobody else's lease is
there to see, and this is what keeps two queued runs off one GPU. The entry's pid and GPUs are
on disk, so a waiter that replaces a dead one keeps counting them.

The waiter sees GPUs through its own environment (the one of the ``podium queue`` that started
it); each run is started with the ``PODIUM_*`` variables of the shell that queued it.
The waiter exits when no entry is queued or starting.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from podium.engine.detach import CHILD_FLAG, free_run_id
from podium.engine.errors import PodiumError
from podium.engine.gpus.config import load_gpu_config
from podium.engine.gpus.leases import Holder, LeaseInfo, holders, pid_start
from podium.engine.gpus.nvml import is_na, read_snapshot
from podium.engine.gpus.select import (
    GpuSelectionError,
    GpuStatus,
    LeasedGpuError,
    ReservedGpuError,
    Selection,
    classify,
    parse_spec,
    probe_leases,
    select_gpus,
)
from podium.engine.queue.store import Entry, Queue
from podium.engine.runs import pid_exists

POLL_ENV = "PODIUM_QUEUE_POLL_S"
DEFAULT_POLL_S = 5.0
LOCK_GRACE_S = 2.0
"""How long a new waiter retries ``waiter.lock`` (a ``podium queue`` probing it holds it for
microseconds) before it concludes another waiter is alive."""


def poll_seconds() -> float:
    try:
        value = float(os.environ.get(POLL_ENV, DEFAULT_POLL_S))
    except ValueError:
        value = DEFAULT_POLL_S
    return min(max(value, 0.2), 600.0)


def ensure_waiter(queue: Queue) -> int | None:
    """Start a waiter if entries wait and none is alive; its pid, or None when none was needed."""
    if not queue.waiting() or queue.waiter_alive():
        return None
    queue.ensure()
    log = os.open(queue.waiter_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "podium", "queue", "--waiter"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # no terminal: the login ending does not end it
            close_fds=True,
            env={**os.environ, "XDG_STATE_HOME": str(queue.path.parents[2])},
        )
    finally:
        os.close(log)
    return proc.pid


def say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


class Waiter:
    """The waiting loop; ``run`` returns when the queue has nothing left to start."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.children: dict[int, subprocess.Popen] = {}
        """Runs this waiter started, by entry id (polled so that they do not linger as zombies)."""
        self._lock_fd: int | None = None

    def take_lock(self) -> bool:
        """Become the waiter; False when another one is alive."""
        self.queue.ensure()
        fd = os.open(self.queue.waiter_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + LOCK_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def run(self) -> int:
        if not self.take_lock():
            say("another waiter is alive; exiting")
            return 0
        say(f"waiter {os.getpid()} started ({self.queue.path})")
        try:
            while self.step():
                time.sleep(poll_seconds())
        finally:
            self.release_lock()
        say("queue empty; waiter exits")
        return 0

    def step(self) -> bool:
        """One look at the queue: settle starting runs, start what fits. False: nothing left."""
        with self.queue.locked():
            entries = self.queue.waiting()
            for entry in entries:
                if entry.state == "starting":
                    self._settle(entry)
            self._reap()
            entries = self.queue.waiting()
            if not entries:
                self.release_lock()  # under the queue lock: an entry added after this sees no waiter
                return False
            self._start_what_fits(entries)
            return True

    # -- starting ------------------------------------------------------------------------------

    def _start_what_fits(self, entries: list[Entry]) -> None:
        starting = [e for e in entries if e.state == "starting"]
        queued = [e for e in entries if e.state == "queued"]
        while queued:
            head = queued[0]
            try:
                selection = self._select(head, starting)
            except (_Wait, LeasedGpuError) as exc:
                self._wait(head, str(exc), queued[1:])
                return
            except PodiumError as exc:  # never satisfiable: a reserved or unknown GPU
                head.state, head.reason, head.waiting = "failed", str(exc), ""
                self.queue.save(head)
                say(f"entry {head.id}: failed: {exc}")
                queued = queued[1:]
                continue
            self._start(head, selection, taken={e.run_id for e in entries if e.run_id})
            starting.append(head)
            queued = queued[1:]

    def _select(self, entry: Entry, starting: list[Entry]) -> Selection:
        """The GPUs for ``entry`` now, by ``--gpus auto``'s rules, starting runs' GPUs taken.

        Raises:
            _Wait: not free now (the message says what it waits for).
            LeasedGpuError: a named GPU is leased (wait too).
            PodiumError: never satisfiable (a reserved or unknown GPU): the entry fails.
        """
        config = load_gpu_config()
        snapshot = read_snapshot(processes=True)
        if not snapshot.available:
            raise _Wait(f"no GPU can be seen: {snapshot.state}")
        leases: dict[str, LeaseInfo | None] = probe_leases(
            snapshot, config.settings.lease_dir, config.settings.lease_admins
        )
        me, host = getpass.getuser(), socket.gethostname()
        for other in starting:
            for uuid in other.gpu_uuids:
                if leases.get(uuid) is None:
                    holder = Holder(
                        user=me,
                        uid=os.getuid(),
                        pid=other.pid or 0,
                        run_id=f"{other.run_id} starting from queue entry {other.id}",
                        host=host,
                        started=other.updated,
                        shared=False,
                    )
                    leases[uuid] = LeaseInfo(uuid=uuid, shared=False, holders=(holder,))
        spec = parse_spec(entry.gpus)
        try:
            selection = select_gpus(
                spec,
                snapshot=snapshot,
                reserved=config.reserved,
                leases=leases,
                busy_memory_fraction=config.settings.busy_memory_fraction,
                share=entry.share_gpu,
            )
        except (ReservedGpuError, LeasedGpuError):
            raise
        except GpuSelectionError:
            if spec.kind == "list":
                raise
            statuses = classify(
                snapshot,
                reserved=config.reserved,
                leases=leases,
                busy_memory_fraction=config.settings.busy_memory_fraction,
            )
            raise _Wait(waiting_text(spec.count, statuses)) from None
        if selection.cpu:
            raise _Wait(f"no GPU can be seen: {selection.note}")
        return selection

    def _wait(self, head: Entry, why: str, behind: list[Entry]) -> None:
        texts = [(head, why.removeprefix(f"--gpus {head.gpus}: "))]
        texts += [(e, f"entry {head.id} first (the queue keeps its order)") for e in behind]
        for entry, text in texts:
            if entry.waiting != text:
                entry.waiting = text
                self.queue.save(entry)
                say(f"entry {entry.id}: waits: {text}")

    def _start(self, entry: Entry, selection: Selection, taken: set[str | None]) -> None:
        root = Path(entry.runs_dir)
        run_id = entry.name or _fresh_id(root, entry.profile_name, taken)
        argv = [
            sys.executable,
            "-m",
            "podium",
            "train",
            entry.profile,
            "--headless",
            "--name",
            run_id,
            "--runs-dir",
            str(root),
            "--gpus",
            ",".join(selection.uuids),
            *(["--share-gpu"] if entry.share_gpu else []),
            *entry.options,
            CHILD_FLAG,
        ]
        log = os.open(
            self.queue.start_log_path(entry.id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        cwd = entry.cwd if os.path.isdir(entry.cwd) else str(root)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,  # until the run points them at its own log
                cwd=cwd,
                env={**os.environ, **entry.env},
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(log)
        self.children[entry.id] = proc
        entry.state, entry.waiting, entry.run_id, entry.pid = "starting", "", run_id, proc.pid
        entry.pid_start = pid_start(proc.pid)
        entry.gpu_uuids = list(selection.uuids)
        entry.gpu_indices = [g.index for g in selection.gpus]
        self.queue.save(entry)
        gpus = ", ".join(f"GPU {i}" for i in entry.gpu_indices)
        say(f"entry {entry.id}: started run {run_id} on {gpus} (pid {proc.pid})")

    # -- settling ------------------------------------------------------------------------------

    def _settle(self, entry: Entry) -> None:
        """A starting entry becomes started once its run leases its GPUs or has exited."""
        child = self.children.get(entry.id)
        if child is not None:
            alive = child.poll() is None
        else:
            alive = _pid_alive(entry.pid, entry.pid_start)
        if alive:
            if self._holds_leases(entry):
                entry.state = "started"
                self.queue.save(entry)
                say(f"entry {entry.id}: run {entry.run_id} holds its GPUs")
            return
        run_json = Path(entry.runs_dir) / str(entry.run_id) / "run.json"
        if run_json.exists():
            entry.state = "started"  # it ran (and ended already): its run says how
            say(f"entry {entry.id}: run {entry.run_id} ended")
        else:
            reason = _last_line(self.queue.start_log_path(entry.id)) or "exited at start"
            if _lost_lease(reason):  # another run leased a GPU first: wait again, in place
                say(f"entry {entry.id}: its GPUs were taken before run {entry.run_id} leased them")
                entry.state, entry.run_id, entry.pid, entry.pid_start = "queued", None, None, None
                entry.gpu_uuids, entry.gpu_indices = [], []
                entry.reason = f"queued again: its GPUs were taken as it started ({reason})"
            else:
                entry.state, entry.reason = "failed", reason
                say(f"entry {entry.id}: run {entry.run_id} failed to start: {reason}")
        self.queue.save(entry)

    def _holds_leases(self, entry: Entry) -> bool:
        try:
            config = load_gpu_config()
        except PodiumError:
            return False
        for uuid in entry.gpu_uuids:
            info = holders(
                uuid,
                lease_dir=config.settings.lease_dir,
                admins=config.settings.lease_admins,
            )
            if info is None or not any(h.run_id == entry.run_id for h in info.holders):
                return False
        return True

    def _reap(self) -> None:
        for entry_id, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[entry_id]


class _Wait(PodiumError):
    """The first entry's GPUs are not free now; the message says what it waits for."""


def waiting_text(count: int, statuses: Sequence[GpuStatus]) -> str:
    """What an entry that wants ``count`` GPUs waits for, in a line: the GPUs that could be
    free one day and why they are not now; the reserved ones only counted.

    ``1 free GPU (0 free now): GPU 2 leased by alice's run x; GPU 3 busy, 1 compute process
    (user bob); GPUs 0, 1 reserved``
    """
    free = [s for s in statuses if s.state == "FREE" and not is_na(s.gpu.uuid)]
    reasons = []
    for s in statuses:
        if s.state == "LEASED" and s.lease is not None and s.lease.holders:
            who = ", ".join(
                f"{h.user}'s run {h.run_id}" if h.recorded else f"{h.user} (pid {h.pid})"
                for h in s.lease.holders
            )
            reasons.append(f"GPU {s.gpu.index} leased by {who}")
        elif s.state == "LEASED":
            reasons.append(f"GPU {s.gpu.index} leased by {s.detail}")
        elif s.state == "BUSY":
            reasons.append(f"GPU {s.gpu.index} busy, {s.detail}")
        elif s.state == "BLOCKED":
            reasons.append(f"GPU {s.gpu.index} cannot be leased: {s.detail}")
    reserved = [str(s.gpu.index) for s in statuses if s.state == "RESERVED"]
    if reserved:
        reasons.append(f"GPU{'s' if len(reserved) > 1 else ''} {', '.join(reserved)} reserved")
    plural = "s" if count != 1 else ""
    return f"{count} free GPU{plural} ({len(free)} free now): " + "; ".join(reasons)


def _fresh_id(root: Path, profile_name: str, taken: set[str | None]) -> str:
    """A run id that neither exists nor was just given to another queued run."""
    base = free_run_id(root, profile_name)
    candidate, n = base, 1
    while candidate in taken or (root / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _pid_alive(pid: int | None, start: int | None) -> bool:
    """Whether the run process ``pid`` started at ``start`` still runs (not a zombie, not a
    reused pid)."""
    if not pid_exists(pid):
        return False
    if start is not None and pid_start(pid) not in (None, start):
        return False  # the pid was given to another process
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("Z"):
            return False  # a zombie: it has exited, its parent has not asked yet
    return True


def _lost_lease(reason: str) -> bool:
    """Whether a run failed to start because another run leased its GPU between the waiter's
    look and the run's own lease (``busy_message``'s words)."""
    return (
        " is leased by " in reason or " is shared by " in reason or "leased exclusively" in reason
    )


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        if lines:
            return lines[-1].removeprefix("podium: error: ")
    return ""
