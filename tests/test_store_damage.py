"""A damaged metrics store, read through the real reader: one ``StoreDamaged`` line naming the
file, never a bare ``sqlite3.DatabaseError``; SQLite's own checks say what is wrong."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from podium.engine.store import RunReader, RunStore
from podium.engine.store.health import (
    StoreDamaged,
    inspect_store,
    integrity_check,
    is_damage,
    set_aside,
)


def _store(path: Path, steps: int = 3000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    store = RunStore.open(path)
    for i in range(1, steps + 1):
        store.add_scalars(i, 0.0, float(i), {"train/loss": 1.0 / i, "val/loss": 2.0 / i})
    store.flush()
    store.add_event("note", {"a": 1}, step=1, wall=1.0)
    store.close()  # the last connection: the WAL is folded into metrics.db
    return path


def _truncated(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _bad_header(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"not a database, really")


def _garbage_pages(path: Path) -> None:
    rnd = random.Random(0)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(4096)  # page 1 (the schema) stays; every table page after it is noise
        fh.write(bytes(rnd.getrandbits(8) for _ in range(size - 4096)))


DAMAGE = {"truncated": _truncated, "bad header": _bad_header, "garbage pages": _garbage_pages}


@pytest.mark.parametrize("how", DAMAGE)
def test_every_read_of_a_damaged_store_is_one_line_naming_the_file(tmp_path, how):
    path = _store(tmp_path / "r1" / "metrics.db")
    DAMAGE[how](path)
    reads = {
        "progress": lambda r: r.progress(),
        "query": lambda r: r.query("train/loss", max_points=100),
        "events": lambda r: r.events(),
        "series_names": lambda r: r.series_names(),
    }
    for name, read in reads.items():
        with pytest.raises(StoreDamaged) as err:
            reader = RunReader.open(path)
            try:
                read(reader)
            finally:
                reader.close()
        text = str(err.value)
        assert len(text.splitlines()) == 1, name
        assert (
            text.startswith(f"{path}: the metrics store is damaged (")
            and "podium doctor r1" in text
        )
    state = inspect_store(path)
    assert state.kind == "damaged" and "\n" not in state.detail
    problems = integrity_check(path)
    assert problems and all("\n" not in p for p in problems)


def test_a_sound_or_empty_store_passes_and_other_sqlite_errors_keep_their_meaning(tmp_path):
    path = _store(tmp_path / "ok" / "metrics.db")
    assert integrity_check(path) == [] and inspect_store(path).kind == "ok"
    empty = tmp_path / "empty" / "metrics.db"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    assert inspect_store(empty).kind == "empty" and inspect_store(empty).detail == "0 bytes"
    assert inspect_store(tmp_path / "none" / "metrics.db").kind == "missing"
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5  # SQLITE_BUSY
    assert not is_damage(locked)


def test_set_aside_keeps_the_store_and_its_wal_under_a_new_name(tmp_path):
    path = _store(tmp_path / "r" / "metrics.db")
    code = (
        "import os, sys; from podium.engine.store import RunStore; "
        "s = RunStore.open(sys.argv[1]); s.add_scalars(3001, 0.0, 1.0, {'train/loss': 0.5}); "
        "s.flush(); os._exit(0)"  # as a killed writer leaves it: the last rows only in the WAL
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    wal = path.with_name("metrics.db-wal").read_bytes()
    kept = set_aside(path)
    assert kept is not None and kept.name.startswith("metrics.db.damaged-")
    assert not path.exists() and kept.with_name(kept.name + "-wal").read_bytes() == wal
    assert RunReader.open(kept).last("train/loss") == (3001, 0.5)  # nothing was lost
