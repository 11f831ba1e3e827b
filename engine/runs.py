"""Run directories: where every run lives, and what state it is in.

``<runs root>/<run id>/`` holds ``run.json`` (who, where, which profile), ``profile.toml`` (the
resolved profile), ``metrics.db`` (the store), ``train.log``, ``checkpoints/`` and, once the run has
ended, ``end.json``. A live training process holds an exclusive ``flock`` on ``lock``: the state is
derived from that fact and the end marker, never guessed from timestamps, so a run whose process was
killed shows as interrupted at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from podium.engine.checkpoints import write_json_atomic
from podium.engine.errors import RunError

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
        try:
            return RunInfo(**json.loads((self.path / "run.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise RunError(f"{self.path}: not a podium run directory ({exc})") from None

    def write_info(self, info: RunInfo) -> None:
        write_json_atomic(self.path / "run.json", asdict(info))

    # -- liveness ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the run's lock for this process; refuse when another process holds it.

        ``is_live`` probes (a dashboard's poller, ``podium runs``) hold a shared lock on the
        same file for a moment; a lock that is let go within ``PROBE_GRACE_S`` was a probe,
        not a live run, and refusing then failed a fresh run's start on a busy machine.
        """
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                os.close(fd)
                holder = self._lock_holder()
                raise RunError(
                    f"run {self.id} is live{holder}; stop it first or attach to it"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

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
        fd = os.open(self.path / "viewers.lock", os.O_RDWR | os.O_CREAT, 0o644)
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


def create_run(root: Path, *, profile_name: str, name: str | None = None) -> RunDir:
    """Make a new run directory; a given ``name`` that exists is refused (never reused)."""
    root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        check_run_id(name)
        path = root / name
        try:
            path.mkdir()
        except FileExistsError:
            raise RunError(
                f"--name {name!r}: a run with that id already exists in {root}"
            ) from None
        return RunDir(path)
    base = f"{profile_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
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
        if (path / "run.json").is_file():
            return RunDir(path)
    if "/" not in arg:
        check_run_id(arg, what="RUN")
    raise RunError(f"no run {arg!r} under {root} (podium runs lists them)")


def list_runs(root: Path) -> list[RunDir]:
    """Runs under ``root``, oldest first."""
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "run.json").is_file()]
    runs.sort(key=lambda r: (_created(r), r.id))
    return runs


def _created(run: RunDir) -> float:
    try:
        return run.info().created
    except RunError:
        return 0.0


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
