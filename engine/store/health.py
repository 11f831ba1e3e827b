"""Whether a run's store can be read: damage reported in one line, SQLite's own checks, and
setting a damaged file aside.

A truncated, overwritten or half-copied ``metrics.db`` makes SQLite raise ``DatabaseError``
(``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) from whichever query first touches a bad page. The reader
turns exactly those into ``StoreDamaged``, a ``RunError`` that names the file and what to do; other
SQLite errors (a locked file, a full disk) keep their own meaning and handling.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from podium.engine.errors import RunError

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DAMAGE_TEXT = ("malformed", "not a database", "corrupt")
SIDE_FILES = ("-wal", "-shm")
"""SQLite's companions of a WAL-mode database, named ``metrics.db-wal`` and ``metrics.db-shm``."""


class StoreDamaged(RunError):
    """A run's ``metrics.db`` is not a readable SQLite database any more."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        run = self.path.parent.name
        super().__init__(
            f"{self.path}: the metrics store is damaged ({reason}); `podium doctor {run}` checks "
            f"it, `podium resume {run} --allow-new-history` sets it aside and starts a new history"
        )


def is_damage(exc: BaseException) -> bool:
    """Is ``exc`` SQLite saying the file itself is broken (not locked, full or missing)?"""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return any(t in str(exc) for t in _DAMAGE_TEXT)


_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


def connect_ro(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the store at ``path``, also for a reader who may not write in
    its directory (a group a run is shared with).

    A WAL-mode file needs its ``-shm`` index: while a writer has the store open it exists and
    a read-only reader uses it; once the writer is gone SQLite removed it, and a reader that
    cannot create it fails ("attempt to write a readonly database"). The file is then complete
    on its own (the writer folded the WAL back on close), so it is read as immutable.
    """
    path = Path(path)
    # quote() keeps '/' but escapes '?', '#', '%' and spaces that would break the URI.
    base = f"file:{quote(str(path.resolve()))}?mode=ro"
    con = sqlite3.connect(base, uri=True, timeout=timeout, isolation_level=None)
    try:
        con.execute("PRAGMA user_version").fetchone()
        return con
    except sqlite3.OperationalError as exc:
        con.close()
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        shm = path.with_name(path.name + "-shm")
        if code not in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or shm.exists():
            raise
    except BaseException:
        con.close()
        raise
    return sqlite3.connect(f"{base}&immutable=1", uri=True, timeout=timeout, isolation_level=None)


StoreKind = Literal["ok", "missing", "empty", "damaged"]


@dataclass(frozen=True)
class StoreState:
    """What a run's store holds, as far as continuing its history is concerned."""

    kind: StoreKind
    detail: str = ""
    history_from: int | None = None
    """The step a history started over at (``meta`` key ``history_from``), if it did."""


HISTORY_FROM = "history_from"
"""``meta`` key: the step a run's history started at after an earlier one was lost."""


def inspect_store(path: Path, *, thorough: bool = True) -> StoreState:
    """Is the store at ``path`` there, empty, damaged or readable? Never raises for damage.

    ``thorough`` runs ``PRAGMA quick_check`` (every page, about a second per few hundred MB);
    without it only the schema and the meta table are read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return StoreState("missing", f"{path} does not exist")
    except OSError as exc:
        return StoreState("damaged", f"cannot read it ({exc.strerror or exc})")
    try:
        con = connect_ro(path)
    except sqlite3.Error as exc:
        if is_damage(exc):
            return StoreState("damaged", str(exc))
        raise RunError(f"{path}: cannot read the metrics store ({exc})") from None
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            return StoreState("empty", "0 bytes" if size == 0 else "no metrics tables")
        if thorough:
            problems = _problems(con.execute("PRAGMA quick_check(5)"))
            if problems:
                more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
                return StoreState("damaged", "; ".join(problems[:3]) + more)
        row = con.execute("SELECT value FROM meta WHERE key = ?", (HISTORY_FROM,)).fetchone()
        con.execute("SELECT count(*) FROM series").fetchone()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return StoreState("damaged", str(exc))
    finally:
        con.close()
    start = int(row[0]) if row is not None and str(row[0]).lstrip("-").isdigit() else None
    return StoreState("ok", history_from=start)


def integrity_check(path: Path, *, limit: int = 20) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` of the store: its problems, [] when it is sound."""
    try:
        con = connect_ro(path)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        return _problems(con.execute(f"PRAGMA integrity_check({int(limit)})"))
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        con.close()


def _problems(rows: Iterable[tuple[str]]) -> list[str]:
    """The lines of an integrity or quick check ([] for "ok"); SQLite may put several lines in
    one row, under a "*** in database main ***" heading."""
    lines = [ln.strip() for (text,) in rows for ln in str(text).splitlines()]
    return [ln for ln in lines if ln and ln != "ok" and not ln.startswith("***")]


def set_aside(path: Path) -> Path | None:
    """Rename the store and its WAL companions to ``metrics.db.damaged-<time>`` (kept, for
    recovery by hand); returns the new name, None when there was nothing to move."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    moved = None
    for suffix in ("", *SIDE_FILES):
        src = path.with_name(path.name + suffix)
        if src.exists():
            os.replace(src, target.with_name(target.name + suffix))
            moved = target if moved is None else moved
    return target if moved is not None else None
