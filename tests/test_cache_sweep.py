"""Staging directories that killed runs leave in the data cache are removed on the next start;
a live builder's are kept (real processes: a dead pid is one that has just exited)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from podium.engine.data.cache import _host_tag, staging_dir
from podium.engine.families.cp.config import DataConfig
from podium.engine.families.cp.data import build_datasets


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def leftover(parent: Path, name: str, *, age: float = 0.0) -> Path:
    path = parent / name
    (path / "midi").mkdir(parents=True)
    (path / "midi" / "half.mid").write_bytes(b"MThd")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_the_next_start_removes_what_killed_builders_left(tmp_path):
    root = tmp_path / "cache"
    here = _host_tag()
    dead = dead_pid()
    killed = [
        leftover(root, f".demo-v1-n8-s0-b8.tmp-{here}-{dead}-abc"),
        leftover(root / "prepared", f".demo-0123456789ab.tmp-{here}-{dead}-def"),
        leftover(root, f".demo-v1-n8-s0-b8.old-{here}-{dead}-ghi"),
        leftover(root, ".demo-v1-n9-s0-b8.tmp-k3j4", age=3 * 24 * 3600),  # before pids in names
    ]
    kept = [
        leftover(root, f".demo-v1-n8-s0-b8.tmp-{here}-{os.getpid()}-live"),  # a live build
        leftover(root, f".demo-v1-n8-s0-b8.tmp-0000beef-{dead}-nfs"),  # another host's
        leftover(root, ".demo-v1-n9-s0-b8.tmp-recent"),
    ]
    build_datasets(DataConfig(n_pieces=8, seq_len=32, cache_dir=str(root)), log=lambda s: None)
    assert [p for p in killed if p.exists()] == []
    assert all(p.exists() for p in kept)
    # What this start built is there, and it left no staging directory of its own behind.
    names = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
    assert names == sorted(p.name for p in kept)


def test_a_staging_dir_names_its_builder(tmp_path):
    made = staging_dir(tmp_path / "final")
    assert made.parent == tmp_path and made.is_dir()
    assert made.name.startswith(f".final.tmp-{_host_tag()}-{os.getpid()}-")
