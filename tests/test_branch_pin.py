"""A branch starts from the checkpoint the user was shown, or not at all.

The case: the dialog says ``best (step 15)``; before the user answers, the (live) parent saves
``best`` again at step 30. The branch must not quietly start from step 30. A toy-family parent
is trained once in this process; each test works on a ``cp -a`` copy of it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    CheckpointInfo,
    load_state,
    read_info,
)
from podium.engine.config import load_profile
from podium.engine.errors import CheckpointError
from podium.engine.runs import RunDir
from podium.engine.session import BRANCH_ORIGIN, branch_session, new_session
from tests.tui_helpers import sync, wait_for

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "families" / "toy" / "toy.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy run stopped at step 30 with epoch checkpoints at 15 and 30."""
    root = tmp_path_factory.mktemp("runs")
    session = new_session(
        load_profile(TOY, ["checkpoint.keep_last=0"]), root=root, name="parent", max_steps=30
    )
    assert session.run_training().step == 30
    return root / "parent"


@pytest.fixture
def parent(trained, tmp_path) -> RunDir:
    subprocess.run(["cp", "-a", str(trained), str(tmp_path / "parent")], check=True)
    run = RunDir(tmp_path / "parent")
    save_best_from(run, step=15)  # the state the user is shown: best at step 15
    return run


def save_best_from(run: RunDir, *, step: int) -> CheckpointInfo:
    """Save ``best`` again, as the parent's trainer does, with the weights of step ``step``."""
    directory = run.checkpoint_dir
    (source,) = [p for p in directory.glob("epoch-*.json") if read_info(p).step == step]
    info = read_info(source)
    state = load_state(directory / f"{info.name}.pt")
    state = {k: v for k, v in state.items() if k not in ("format", "saved")}
    ck = Checkpointer(directory, CheckpointConfig(save_latest=False), info.profile_hash)
    (written,), _ = ck.save(state, step=step, epoch=info.epoch, val_loss=0.5, kinds=("best",))
    return written


def test_a_branch_refuses_a_checkpoint_saved_again_since_it_was_chosen(parent, tmp_path):
    chosen = read_info(parent.checkpoint_dir / "best.json")
    assert chosen.step == 15 and chosen.checksum
    save_best_from(parent, step=30)  # meanwhile the parent finds a new best
    with pytest.raises(CheckpointError) as err:
        branch_session(
            parent,
            "best",
            root=tmp_path,
            name="child",
            expect_checksum=chosen.checksum,
            expect_step=chosen.step,
        )
    message = str(err.value)
    assert "checkpoint best changed since it was chosen (step 15; it now holds step 30)" in message
    assert "no run was started" in message and "\n" not in message
    assert not (tmp_path / "child").exists()  # nothing left behind
    # Without an expectation (the CLI names a checkpoint and reads it at once) it branches.
    session = branch_session(parent, "best", root=tmp_path, name="child")
    try:
        assert session.resumed_from.step == 30
    finally:
        session.close()


def test_a_checkpoint_without_a_checksum_is_pinned_by_its_step(parent, tmp_path):
    chosen = read_info(parent.checkpoint_dir / "best.json")
    save_best_from(parent, step=30)
    with pytest.raises(CheckpointError, match="changed since it was chosen"):
        branch_session(parent, "best", root=tmp_path, name="child", expect_step=chosen.step)


def test_the_branch_reads_the_bytes_it_checked_whatever_the_parent_saves_next(parent, tmp_path):
    chosen = read_info(parent.checkpoint_dir / "best.json")
    session = branch_session(
        parent, "best", root=tmp_path, name="child", expect_checksum=chosen.checksum
    )
    pinned = tmp_path / "child" / BRANCH_ORIGIN
    try:
        assert session.resumed_from.step == 15 and session.trainer.state.step == 15
        assert session.run.info().parent["checksum"] == chosen.checksum
        save_best_from(parent, step=30)  # e.g. before a DDP rank reads the file
        assert load_state(pinned)["saved"]["checksum"] == chosen.checksum
    finally:
        session.close()
    assert not pinned.exists()  # the pin lasts as long as the session


@sync
async def test_the_dashboard_branches_from_what_its_dialog_said_or_says_why_not(parent, tmp_path):
    from podium.tui.app import PodiumApp
    from podium.tui.screens.modals import ConfirmModal
    from podium.tui.widgets.checkpoints import CheckpointTable

    app = PodiumApp(root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_run(parent)
        await pilot.pause()
        table = app.screen.query_one(CheckpointTable)
        await wait_for(pilot, lambda: "best" in table.infos, 10, "the checkpoint table")
        await pilot.press("c")
        table.move_cursor(row=table.get_row_index("best"))
        await pilot.press("r")
        dialog = app.screen
        assert isinstance(dialog, ConfirmModal)
        assert "checkpoint best (step 15)" in dialog.question
        save_best_from(parent, step=30)  # while the dialog is open
        await pilot.press("enter")
        (live,) = app.live_runs.values()
        await wait_for(pilot, lambda: live.done.is_set(), 60, "the branch to give up")
        assert live.error is not None and "changed since it was chosen (step 15" in live.error
        assert sorted(p.name for p in tmp_path.iterdir()) == ["parent"]
