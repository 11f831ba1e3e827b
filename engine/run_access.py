"""Who may read a run: its owner only (the default), or also one group, read-only.

A lab server is shared: a run directory left 0755/0644 let anyone copy its checkpoints, read its
logs and metrics, and take its lock. A run is therefore created 0700 (files 0600). The lab can
open runs to one group for reading, lab-wide in its configuration file (the one
``podium.engine.gpus.config`` reads, ``PODIUM_SYSTEM_CONFIG`` for tests)::

    [runs]
    share_group = "ml-lab"

and a user per run with ``podium train --share-group GROUP``. A shared run directory is 2750 with
that group (setgid, so everything created under it gets the group) and its files 0640: the group
reads, only the owner writes, other users see nothing.

The directory's mode is what protects a run; the process that trains it also sets its umask to
match (``RunDir.acquire``), so a user umask of 002 cannot leave group-writable files behind.
"""

from __future__ import annotations

import grp
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from podium.engine.errors import RunError
from podium.engine.gpus.config import system_config_path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SHARED_DIR_MODE = 0o2750
SHARED_FILE_MODE = 0o640


@dataclass(frozen=True)
class RunAccess:
    """A run's readers: ``group`` None is the owner only."""

    group: str | None = None
    gid: int | None = None
    source: str = ""
    """Where the group was asked for (``--share-group``, ``/etc/podium/config.toml``)."""

    @property
    def dir_mode(self) -> int:
        return PRIVATE_DIR_MODE if self.gid is None else SHARED_DIR_MODE

    @property
    def file_mode(self) -> int:
        return PRIVATE_FILE_MODE if self.gid is None else SHARED_FILE_MODE

    @property
    def umask(self) -> int:
        """The umask that makes new files and directories match ``file_mode`` and ``dir_mode``."""
        return 0o077 if self.gid is None else 0o027

    def apply(self, path: Path) -> None:
        """Give the (new, still empty) run directory ``path`` this access."""
        if self.gid is not None:
            os.chown(path, -1, self.gid)  # before chmod: a chown may clear the setgid bit
        os.chmod(path, self.dir_mode)


def lab_share_group(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """``[runs] share_group`` of the lab-wide configuration file and where it is written.

    Raises:
        RunError: the file cannot be read or parsed, or the value is not a group name.
    """
    path = system_config_path(environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise RunError(f"{path}: cannot read the lab configuration ({reason})") from None
    try:
        table = tomllib.loads(text).get("runs", {})
    except tomllib.TOMLDecodeError as err:
        raise RunError(f"{path}: TOML syntax error: {err}") from None
    where = f"{path}:{_line_of(text, 'share_group')}"
    if not isinstance(table, dict):
        raise RunError(f"{path}: runs: must be a table ([runs])")
    value = table.get("share_group")
    if value is None or value == "":
        return None, ""
    if not isinstance(value, str):
        raise RunError(f"{where}: runs.share_group: must be a group name (got {value!r})")
    return value, where


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*(runs\.)?{key}\s*=", line):
            return number
    return 1


def resolve_access(share_group: str | None = None) -> RunAccess:
    """The access of a new run: ``--share-group GROUP``, else the lab's, else private.

    Raises:
        RunError: no such group, or the user is not in it (the directory could not get it).
    """
    source = "--share-group"
    if share_group is None:
        share_group, source = lab_share_group()
        if share_group is None:
            return RunAccess()
        source = f"{source}: runs.share_group"
    try:
        gid = grp.getgrnam(share_group).gr_gid
    except KeyError:
        raise RunError(f"{source} {share_group!r}: no such group on this machine") from None
    if gid != os.getegid() and gid not in os.getgroups() and os.geteuid() != 0:
        raise RunError(
            f"{source} {share_group!r}: you are not a member of that group, so a run cannot be "
            "shared with it (`id -Gn` lists yours)"
        )
    return RunAccess(group=share_group, gid=gid, source=source)


def access_of(path: Path) -> RunAccess:
    """The access an existing run directory has: shared when its group may enter it (and other
    users may not), else private. An old world-readable run reads as private: resuming it closes
    it."""
    st = path.stat()
    if st.st_mode & 0o050 == 0o050 and not st.st_mode & 0o007:
        try:
            name = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            name = str(st.st_gid)
        return RunAccess(group=name, gid=st.st_gid, source=str(path))
    return RunAccess()
