"""Damaged, truncated and NaN checkpoints on a real run: caught, named, and never trusted.

A toy-family run is trained once (in this process, through ``new_session``); each test works on
a copy made with ``cp -a`` so that ``latest``/``best``/``epoch-*`` stay hard links to one file,
as the trainer leaves them. The damage is done with real writes to the real files.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from podium.engine.checkpoints import (
    FORMAT_VERSION,
    CheckpointConfig,
    Checkpointer,
    NonFiniteWeights,
    list_checkpoints,
    load_state,
    newest_good_checkpoint,
    read_info,
    state_checksum,
)
from podium.engine.config import load_profile
from podium.engine.errors import CheckpointError
from podium.engine.runs import RunDir
from podium.engine.session import new_session, resume_session
from podium.engine.store import RunReader

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "families" / "toy" / "toy.toml"
# 15 steps an epoch; a 256-wide layer makes the weights most of the file, as in a real model.
OVERRIDES = ["data.dim=256", "model.hidden=256", "checkpoint.keep_last=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy run stopped at step 30: epoch checkpoints at 15 and 30, ``latest`` at 30."""
    root = tmp_path_factory.mktemp("runs")
    session = new_session(load_profile(TOY, OVERRIDES), root=root, name="toy", max_steps=30)
    assert session.run_training().step == 30
    return root / "toy"


@pytest.fixture
def run(trained, tmp_path) -> RunDir:
    copy = tmp_path / "toy"
    subprocess.run(["cp", "-a", str(trained), str(copy)], check=True)
    return RunDir(copy)


def steps_by_name(run: RunDir) -> dict[str, int]:
    return {i.name: i.step for i in list_checkpoints(run.checkpoint_dir)}


def resume_and_read(run: RunDir) -> tuple[int, str]:
    """Resume ``run`` (building the session, no training) and return its step and what it said."""
    console = io.StringIO()
    session = resume_session(run, console=console)
    try:
        return session.trainer.state.step, console.getvalue()
    finally:
        session.close()


def damage_middle(path: Path, n: int = 4096) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2 - n // 2)
        fh.write(os.urandom(n))
        fh.flush()
        os.fsync(fh.fileno())


def test_the_fixture_run_has_what_the_tests_rely_on(run):
    names = steps_by_name(run)
    assert names["latest"] == 30 and names["epoch-0001-val-" + _val(run, 1)] == 15
    latest = run.checkpoint_dir / "latest.pt"
    assert latest.stat().st_size > 200_000  # the weights dominate the file
    assert read_info(run.checkpoint_dir / "latest.json").checksum


def _val(run: RunDir, epoch: int) -> str:
    (name,) = [
        i.name
        for i in list_checkpoints(run.checkpoint_dir)
        if i.name.startswith(f"epoch-000{epoch}")
    ]
    return name.split("-val-")[1]


def test_4kb_of_damage_in_the_middle_is_caught_and_resume_falls_back_saying_so(run):
    damage_middle(run.checkpoint_dir / "latest.pt")
    # torch.load itself does not notice (it does not check the zip's CRCs) ...
    raw = torch.load(run.checkpoint_dir / "latest.pt", weights_only=True)
    assert raw["train_state"]["step"] == 30
    # ... the checksum does.
    with pytest.raises(CheckpointError, match=r"latest\.pt: damaged"):
        load_state(run.checkpoint_dir / "latest.pt")
    step, said = resume_and_read(run)
    assert step == 15  # the newest good checkpoint (every name of step 30 is the damaged file)
    assert "warning: checkpoint latest (step 30) skipped: damaged" in said, said
    assert "steps 16-30 are lost" in said, said
    log = run.log_path.read_text()
    assert "checkpoint latest (step 30) skipped: damaged" in log
    reader = RunReader.open(run.db_path)  # the event log the dashboard shows
    try:
        texts = [e.payload.get("text", "") for e in reader.events()]
    finally:
        reader.close()
    assert any(t.startswith("checkpoint latest (step 30) skipped: damaged") for t in texts), texts


def test_a_truncated_newest_checkpoint_falls_back_and_says_which_and_why(run):
    latest = run.checkpoint_dir / "latest.pt"
    size = latest.stat().st_size
    with open(latest, "r+b") as fh:
        fh.truncate(size // 3)
    step, said = resume_and_read(run)
    assert step == 15
    assert (
        f"checkpoint latest (step 30) skipped: truncated ({size // 3:,} of {size:,} bytes" in said
    )
    assert "resuming from checkpoint epoch-0001" in said and "steps 16-30 are lost" in said


def test_a_nan_checkpoint_left_by_an_older_podium_is_skipped(run):
    """``latest`` holding NaN weights with a checksum that matches them (saved, not damaged)."""
    directory = run.checkpoint_dir
    state = torch.load(directory / "latest.pt", weights_only=True)
    for value in state["model"].values():
        value.fill_(math.nan)
    (directory / "latest.pt").unlink()  # its own file: the step-30 epoch checkpoint stays good
    _write_legacy(directory / "latest.pt", state)
    step, said = resume_and_read(run)
    assert step == 30  # epoch-0002 holds the same step, with finite weights
    assert "checkpoint latest (step 30) skipped: its weights hold NaN/inf" in said, said


def test_a_checkpoint_without_a_checksum_still_loads_as_unverified(run):
    directory = run.checkpoint_dir
    state = torch.load(directory / "latest.pt", weights_only=True)
    for name in [n for n, s in steps_by_name(run).items() if s == 30]:
        (directory / f"{name}.pt").unlink()
        _write_legacy(directory / f"{name}.pt", state)
        meta = json.loads((directory / f"{name}.json").read_text())
        del meta["checksum"]
        (directory / f"{name}.json").write_text(json.dumps(meta))
    assert read_info(directory / "latest.json").checksum == ""
    step, said = resume_and_read(run)
    assert step == 30
    assert "checkpoint latest has no checksum (saved by an older podium): unverified" in said


def _write_legacy(path: Path, state: dict) -> None:
    """A checkpoint as podium wrote it before checksums: no ``checksum`` in ``saved``."""
    saved = dict(state["saved"])
    saved.pop("checksum", None)
    torch.save({**state, "saved": saved}, path)


def test_the_checksum_covers_every_tensor_byte_and_value_and_survives_a_round_trip(tmp_path):
    state = {
        "format": FORMAT_VERSION,
        "model": {
            "w": torch.arange(6, dtype=torch.float32),
            "b": torch.zeros((), dtype=torch.bfloat16),
        },
        "rng": {"python": (3, tuple(range(5)), None), "cuda": []},
        "train_state": {"step": 7, "best_val": math.inf},
    }
    ck = Checkpointer(tmp_path, CheckpointConfig(), "h")
    (info,), _ = ck.save({k: v for k, v in state.items() if k != "format"}, step=7, epoch=0.5,
                         val_loss=None, kinds=("latest",))  # fmt: skip
    loaded = load_state(tmp_path / "latest.pt")
    assert state_checksum(loaded) == state_checksum(state) == info.checksum
    assert loaded["saved"]["checksum"] == info.checksum
    flipped = {**state, "model": {**state["model"], "w": state["model"]["w"].clone()}}
    flipped["model"]["w"][3] = 3.0000002
    assert state_checksum(flipped) != state_checksum(state)
    assert state_checksum({**state, "train_state": {"step": 8, "best_val": math.inf}}) != (
        state_checksum(state)
    )


def test_nan_weights_never_replace_latest_or_best(tmp_path):
    ck = Checkpointer(tmp_path, CheckpointConfig(every_epochs=1), "h")
    good = {"model": {"w": torch.ones(4)}, "train_state": {"step": 5}}
    ck.save(good, step=5, epoch=1.0, val_loss=1.0, kinds=("latest", "best", "epoch"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad = {"model": {"w": torch.tensor([1.0, math.nan, 1.0, 1.0])}, "train_state": {"step": 9}}
    for kinds in [("latest", "best"), ("latest",), ("manual",), ("epoch",)]:
        with pytest.raises(
            NonFiniteWeights, match=r"step 9 not saved: the weights hold NaN/inf \(w\)"
        ):
            ck.save(bad, step=9, epoch=2.0, val_loss=0.5, kinds=kinds)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    inf = {"model": {"w": torch.tensor([math.inf, -math.inf])}}
    with pytest.raises(NonFiniteWeights):
        ck.save(inf, step=10, epoch=2.0, val_loss=None, kinds=("latest",))
    # Finite weights whose sum overflows are saved (the cheap check confirms element-wise).
    big = {"model": {"w": torch.full((4,), 3e38)}, "train_state": {"step": 11}}
    ck.save(big, step=11, epoch=2.0, val_loss=None, kinds=("latest",))
    assert newest_good_checkpoint(tmp_path).info.step == 11


def test_doctor_names_a_damaged_checkpoint_that_a_resume_would_skip(run):
    """``podium doctor`` checked that each checkpoint file existed at its recorded size: 4 KB of
    damage in the middle (same size) passed it."""
    from podium.engine.doctor import check_checkpoints

    assert all(f.ok for f in check_checkpoints(run))
    damage_middle(run.checkpoint_dir / "latest.pt")
    bad = [f for f in check_checkpoints(run) if not f.ok]
    assert bad and all("(step 30)" in f.text for f in bad), bad
    assert any("latest.pt" in f.text for f in bad)
    proc = subprocess.run(
        [sys.executable, "-m", "podium", "doctor", str(run.path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "latest.pt (step 30)" in proc.stdout + proc.stderr, proc
