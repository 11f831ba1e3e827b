"""Checkpoint files: atomic, counted only when complete, loadable from wrapped models."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    atomic_path,
    capture_rng,
    checked_info,
    list_checkpoints,
    load_state,
    newest_checkpoint,
    read_info,
    restore_rng,
    strip_wrapper_prefixes,
)
from podium.engine.errors import CheckpointError


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "x.pt"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert final.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.pt"]


def test_save_names_links_and_metadata(tmp_path):
    ck = Checkpointer(tmp_path, CheckpointConfig(), "abc")
    written, removed = ck.save(
        state(1.0), step=10, epoch=1.0, val_loss=2.5, kinds=("latest", "best", "epoch")
    )
    assert [i.name for i in written] == [
        "epoch-0001-val-2.5000",
        "best",
        "latest",
    ] and removed == []
    st = (tmp_path / "latest.pt").stat()
    assert st.st_ino == (tmp_path / "best.pt").stat().st_ino  # serialised once, linked
    meta = json.loads((tmp_path / "best.json").read_text())
    assert meta["step"] == 10 and meta["val_loss"] == 2.5 and meta["profile_hash"] == "abc"
    # The next save replaces latest without touching best's bytes.
    ck.save(state(2.0), step=20, epoch=2.0, val_loss=None, kinds=("latest",))
    assert torch.equal(load_state(tmp_path / "best.pt")["model"]["w"], torch.full((3,), 1.0))
    assert torch.equal(load_state(tmp_path / "latest.pt")["model"]["w"], torch.full((3,), 2.0))
    assert newest_checkpoint(tmp_path)[0].step == 20


def test_a_weights_file_without_metadata_does_not_count(tmp_path):
    ck = Checkpointer(tmp_path, CheckpointConfig(), "abc")
    ck.save(state(1.0), step=5, epoch=0.5, val_loss=None, kinds=("latest",))
    # A process killed between the two renames leaves weights whose metadata never landed.
    torch.save({"format": 1, **state(9.0)}, tmp_path / "step-00000099.pt")
    (tmp_path / ".tmp-latest.pt-123-456").write_bytes(b"half")
    infos = list_checkpoints(tmp_path)
    assert [(i.name, i.step) for i in infos] == [("latest", 5)]


def test_a_resaved_name_killed_between_its_renames_is_the_newer_save(tmp_path):
    """``latest.pt`` replaced, ``latest.json`` not yet: the weights are step 6, so a resume must
    say step 6 (and cut the metrics after 6, not after 5), and the .json is repaired."""
    ck = Checkpointer(tmp_path, CheckpointConfig(), "abc")
    ck.save(state(1.0), step=5, epoch=0.5, val_loss=None, kinds=("latest",))
    old_meta = (tmp_path / "latest.json").read_bytes()
    ck.save(state(2.0), step=6, epoch=0.6, val_loss=4.25, kinds=("latest",))
    (tmp_path / "latest.json").write_bytes(old_meta)  # the kill landed between the renames
    assert [i.step for i in list_checkpoints(tmp_path)] == [5]  # what the stale .json says
    info, loaded = newest_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))
    assert (info.step, info.epoch, info.val_loss) == (6, 0.6, 4.25)
    assert read_info(tmp_path / "latest.json").step == 6  # repaired on disk
    # A consistent pair is left as it is.
    assert checked_info(tmp_path, info, loaded) is info


def test_damaged_newest_falls_back_to_the_previous(tmp_path):
    ck = Checkpointer(tmp_path, CheckpointConfig(), "abc")
    ck.save(state(1.0), step=5, epoch=0.5, val_loss=None, kinds=("manual",))
    ck.save(state(2.0), step=9, epoch=0.9, val_loss=None, kinds=("manual",))
    os.unlink(tmp_path / "latest.pt")
    (tmp_path / "step-00000009.pt").write_bytes(b"garbage")
    info, loaded = newest_checkpoint(tmp_path)
    assert info.step == 5 and torch.equal(loaded["model"]["w"], torch.full((3,), 1.0))


def test_load_state_refuses_foreign_files(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_state(tmp_path / "x.pt")
    torch.save({"weights": 1}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a podium checkpoint"):
        load_state(tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        newest_checkpoint(tmp_path)


def test_state_dict_from_ddp_or_compile_loads():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    wrapped = {f"module._orig_mod.{k}": v + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(strip_wrapper_prefixes(wrapped))
    assert torch.equal(model[0].bias, wrapped["module._orig_mod.0.bias"])


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    rng = capture_rng()
    torch.save({"format": 1, "rng": rng}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(load_state(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_keep_exempts_from_retention(tmp_path):
    ck = Checkpointer(tmp_path, CheckpointConfig(keep_last=1), "abc")
    ck.save(state(1.0), step=1, epoch=1.0, val_loss=1.0, kinds=("epoch",))
    ck.set_keep("epoch-0001-val-1.0000", True)
    ck.save(state(2.0), step=2, epoch=2.0, val_loss=0.9, kinds=("epoch",))
    _, removed = ck.save(state(3.0), step=3, epoch=3.0, val_loss=0.8, kinds=("epoch",))
    names = [i.name for i in list_checkpoints(tmp_path)]
    assert removed == ["epoch-0002-val-0.9000"]
    assert "epoch-0001-val-1.0000" in names and "epoch-0003-val-0.8000" in names
