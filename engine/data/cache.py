"""Where podium keeps what it makes from data: demo corpora and prepared token files.

Everything is built in a staging directory beside its final place and renamed into it, so a
crash never leaves half a corpus under the final name. A run killed meanwhile (SIGKILL, OOM,
power) leaves its staging directory behind, though; the names carry the builder's host and pid,
so the next start removes those whose builder is dead, and only those: a concurrent build of
the same data by a live process keeps its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

LEGACY_MAX_AGE = 24 * 3600.0
"""Seconds after which a staging directory without host and pid in its name (made before they
were named so) counts as left behind."""

_STAGING = re.compile(r"^\..+\.(?:tmp|old)-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[^/]*$")


def cache_dir_for(configured: str = "") -> Path:
    """``configured`` (a profile's ``data.cache_dir``), ``$PODIUM_CACHE``,
    ``$XDG_CACHE_HOME/podium`` or ``~/.cache/podium``, in that order."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("PODIUM_CACHE"):
        return Path(os.environ["PODIUM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "podium"
    return Path.home() / ".cache" / "podium"


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def staging_dir(final: Path, kind: str = "tmp") -> Path:
    """A fresh directory beside ``final`` to build it in (``kind``: "tmp" or "old"), named
    ``.<final>.<kind>-<host>-<pid>-<random>``; stale ones there are swept first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent)
    prefix = f".{final.name}.{kind}-{_host_tag()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_stale(directory: Path, *, depth: int = 0) -> list[Path]:
    """Remove staging directories under ``directory`` (and ``depth`` levels below) whose builder
    is dead: on this host with its pid gone, or unnamed and older than ``LEGACY_MAX_AGE``.
    Builders on other hosts (a cache on NFS) are left alone. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    here, now = _host_tag(), time.time()
    for entry in entries:
        m = _STAGING.match(entry.name)
        if m is None:
            if depth > 0 and not entry.name.startswith(".") and entry.is_dir():
                removed += sweep_stale(entry, depth=depth - 1)
            continue
        if m.group("pid") is not None:
            stale = m.group("host") == here and not _alive(int(m.group("pid")))
        else:
            try:
                stale = now - entry.lstat().st_mtime > LEGACY_MAX_AGE
            except OSError:
                continue
        if stale and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename a fully written ``tmp`` to ``final``, replacing a stale ``final`` (moved aside
    first, so a reader never sees a half-removed one); if a concurrent build published first,
    keep theirs (it was made from the same source) and drop ``tmp``."""
    import contextlib

    old = None
    if final.exists():
        old = staging_dir(final, "old")
        with contextlib.suppress(OSError):
            final.rename(old / "stale")
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
