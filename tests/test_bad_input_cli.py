"""Bad input at the command line: one line naming what is wrong, exit 2, never a traceback.

The console script's ``main`` is called in this process (a traceback would fail the test as an
exception; a subprocess per case costs seconds of torch import), against real files and
directories; the toy run that ``generate`` reads is trained by a real ``python -m podium``. A directory the user
cannot write is made with ``chmod 0555`` for a normal user and ``chattr +i`` (immutable) for root,
whom permissions do not stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.tui.cli import main
from tests.podium_cli import ROOT, podium

TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (a directory) made unwritable for this user, restored afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
            pytest.skip("root, and no chattr +i to make a directory read-only")
        undo = [chattr, "-i", str(path)]
    else:
        path.chmod(0o555)
        undo = ["chmod", "755", str(path)]
    try:
        yield path
    finally:
        subprocess.run(undo, check=True)


@pytest.fixture
def refused(capsys):
    """``refused(fragment, *args)``: ``podium ARGS`` exits 2 with one line holding ``fragment``."""

    def run(fragment: str, *args: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            sys.exit(main(list(args)))
        err = capsys.readouterr().err
        assert exited.value.code == 2, (exited.value.code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("podium") and fragment in lines[0], lines[0]
        return lines[0]

    return run


def test_deeply_nested_toml_is_one_line(tmp_path, refused):
    deep = tmp_path / "deep.toml"
    deep.write_text('name = "deep"\nfamily = "cp"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    refused("nested too deeply", "train", str(deep), "--headless", "--runs-dir", str(tmp_path))


def test_a_seed_beyond_64_bits_is_one_line(tmp_path, refused):
    runs = tmp_path / "runs"
    big = "1180591620717411303424"
    line = refused("64 bits", "train", TOY, "--headless", "--seed", big, "--runs-dir", str(runs))
    assert "--seed" in line
    overflow = f"train.seed={big}"
    line = refused(
        "out of range", "train", TOY, "--headless", "--set", overflow, "--runs-dir", str(runs)
    )
    assert "train.seed" in line
    assert not runs.exists() or not any(runs.iterdir())


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path, refused):
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    for args in (("train", TOY, "--headless"), ("runs",)):
        refused("is a file", *args, "--runs-dir", str(afile))
    assert afile.read_text() == "root:x:0:0\n"


def test_a_runs_dir_the_user_cannot_write_is_one_line(tmp_path, refused):
    with read_only(tmp_path / "shared") as shared:
        for runs in (shared, shared / "runs"):
            line = refused(
                "cannot create runs", "train", TOY, "--headless", "--runs-dir", str(runs)
            )
            assert str(runs) in line
            # The dashboard is refused before it starts, the same way (no terminal needed).
            refused("cannot create", "train", TOY, "--runs-dir", str(runs))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    podium("train", TOY, "--headless", "--max-steps", "3", "--name", "toy", "--runs-dir",
           str(runs))  # fmt: skip
    return runs / "toy"


def test_generate_into_a_directory_the_user_cannot_write_is_one_line(tmp_path, refused, toy_run):
    with read_only(tmp_path / "out") as out:
        target = out / "a.mid"
        refused(str(out), "generate", str(toy_run), "-o", str(target))
        assert list(out.iterdir()) == []
    with read_only(toy_run / "samples"):  # someone else's run: its samples are not ours to add
        refused(str(toy_run / "samples"), "generate", str(toy_run))


def test_a_lease_dir_the_user_cannot_write_is_one_line(tmp_path, monkeypatch, refused):
    from tests.fake_nvml import isolate, lab_config, lab_devices, write_fake

    box = isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    with read_only(tmp_path / "leases") as leases:
        lab_config(box, leases)
        runs = tmp_path / "runs"
        line = refused(
            str(leases), "train", TOY, "--headless", "--gpus", "3,", "--runs-dir", str(runs)
        )
        assert "GPU" in line or "lease" in line or str(leases) in line
        assert list(leases.iterdir()) == []
