"""The dashboard driving a real demo run in its own process (Pilot, 120x40).

Each test starts a small demo run through ``PodiumApp(request=...)``, exactly as ``podium train``
does, presses keys, and checks the engine, the run directory and the store, not just the screen.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from podium.engine.store import RunStore
from podium.tui.app import PodiumApp
from podium.tui.commands import describe
from podium.tui.live import branching_available
from podium.tui.screens.modals import ConfirmModal, HelpScreen, LrModal, QuitModal
from podium.tui.screens.preview import GenerateModal
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.checkpoints import CheckpointTable
from tests.tui_helpers import start_request, sync, wait_for, wait_sync

pytestmark = pytest.mark.slow

SIZE = (120, 40)


def footer_keys(app: PodiumApp) -> str:
    return " ".join(f"{k.key_display} {k.description}" for k in app.screen.query("FooterKey"))


def header_step(screen: RunScreen) -> int:
    """The step the run screen's header shows now."""
    found = re.search(r"step (\d+)", str(screen.query_one("#run-header").render()))
    return int(found.group(1)) if found else -1


def the_live(app: PodiumApp):
    (live,) = app.live_runs.values()
    return live


async def started(pilot, app: PodiumApp, min_step: int = 2, *, pause: bool = False):
    """The live run once it trained ``min_step`` steps; paused first when ``pause``.

    Pilot waits after each key until the process is idle (at most a second): a paused run
    lets the keys that need no training go through quickly.
    """
    live = the_live(app)
    try:  # a slow shared CI box needs a while to build the data and model
        await wait_for(pilot, lambda: live.session is not None or live.error, 120, "the session")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; phase {live.phase}, notices {list(app.notices)}") from None
    assert live.session is not None, f"the run failed to start: {live.error}"
    await wait_for(pilot, lambda: live.model.numbers.step >= min_step, 60, f"step {min_step}")
    if pause:
        live.session.trainer.pause().result(timeout=30)
        await wait_for(pilot, lambda: live.model.state == "paused", 10, "the run to pause")
    return live


@sync
async def test_pause_save_lr_and_stop_reach_the_engine(tmp_path):
    app = PodiumApp(root=tmp_path, request=start_request(tmp_path, name="live"))
    async with app.run_test(size=SIZE) as pilot:
        live = await started(pilot, app)
        trainer = live.session.trainer
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is live

        # space pauses: the engine says paused and the step counter stops.
        await pilot.press("space")
        await wait_for(pilot, lambda: trainer.run_state == "paused", 20, "the trainer to pause")
        await wait_for(pilot, lambda: live.model.state == "paused", 5, "the model to show paused")
        paused_at = trainer.state.step
        await pilot.pause(1.0)
        assert trainer.state.step == paused_at
        assert live.model.numbers.step == paused_at
        assert "paused" in str(screen.query_one("#run-header").render())

        # s saves now (served while paused): a manual checkpoint on disk and in the table.
        await pilot.press("s")
        name = f"step-{paused_at:08d}"
        ckpt_dir = live.session.run.checkpoint_dir
        await wait_for(pilot, lambda: (ckpt_dir / f"{name}.pt").is_file(), 20, "the manual save")
        table = screen.query_one(CheckpointTable)
        await wait_for(pilot, lambda: name in table.infos, 10, "the checkpoint table row")

        # l opens the LR dialog; the new rate reaches the store's lr series after resuming.
        await pilot.press("l")
        assert isinstance(app.screen, LrModal)
        lr_input = app.screen.query_one("Input")
        lr_input.value = ""
        await pilot.press(*"2.5e-4")
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        await wait_for(
            pilot, lambda: any("learning rate set" in n for n in app.notices), 10, "set_lr"
        )
        assert "space Resume" in footer_keys(app)  # what space does now
        await pilot.press("space")
        await wait_for(pilot, lambda: trainer.run_state == "running", 10, "resume")
        await wait_for(pilot, lambda: "space Pause" in footer_keys(app), 10, "Pause again")
        await wait_for(pilot, lambda: trainer.state.step >= paused_at + 2, 30, "steps after resume")

        # A dialog open over the run screen: the numbers under it keep moving (they froze).
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        opened_at = header_step(screen)
        await wait_for(pilot, lambda: header_step(screen) > opened_at, 90, "a step under help")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        live.session.writer.flush(timeout=10)
        store = RunStore.open(live.session.run.db_path, readonly=True)
        try:
            after = [v for s, v in store.query("lr") if s == paused_at + 1]
        finally:
            store.close()
        assert after and math.isclose(after[0], 2.5e-4, rel_tol=1e-6), after

        # x asks first; confirming ends the run as stopped, with a checkpoint at its last step.
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not live.training, 30, "the run to stop")
        assert live.model.state == "stopped"
        end = json.loads((live.session.run.path / "end.json").read_text())
        assert end["status"] == "stopped"
        assert live.session.run.status()[0] == "stopped"
        # Commands after the end explain themselves instead of failing.
        await pilot.press("space")
        assert "nothing to control" in app.notices[-1]


@sync
async def test_view_keys_help_and_palette(tmp_path):
    app = PodiumApp(root=tmp_path, request=start_request(tmp_path, name="view"))
    async with app.run_test(size=SIZE) as pilot:
        live = await started(pilot, app, min_step=3, pause=True)
        screen = app.screen
        total = screen.query_one("#total-panel")
        heads = screen.query_one("#heads-panel")
        opts = screen.options

        await pilot.press("y")
        assert screen.options.log_y and "y log" in total.border_title
        await pilot.press("t")
        assert screen.options.x == "wall" and "x wall" in total.border_title
        await pilot.press("t")
        assert screen.options.x == "step"
        await pilot.press("h")
        assert screen.options.head_index == 0
        assert heads.border_title.startswith(f"head {live.model.heads[0]}")
        assert [s.label for s in heads.plot.series] == ["train", "val"]
        for _ in live.model.heads:
            await pilot.press("h")
        assert screen.options.head_index == -1  # wrapped back to all heads
        assert len(heads.plot.series) == len(live.model.heads)
        await pilot.press("left_square_bracket")
        assert screen.options.smoothing_index == opts.smoothing_index - 1
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.options.smoothing_index == opts.smoothing_index + 1
        await pilot.press("g")  # the preview form (tests/test_tui_preview.py generates)
        assert isinstance(app.screen, GenerateModal)
        assert app.screen.query_one("#f-checkpoint").value == "live"
        # Its fields are the CP sampler's options, between the checkpoint and the length.
        ids = [w.id for w in app.screen.query("Input")]
        assert ids == [
            "f-checkpoint",
            "f-emotion",
            "f-key",
            "f-bars",
            "f-temperature",
            "f-top-p",
            "f-seed",
        ]
        assert app.screen.query_one("#f-emotion").placeholder.startswith("Q1..Q4")
        await pilot.press("escape")
        assert app.screen is screen
        # A CP run has no matrix metric: m does nothing and is in neither the footer nor help.
        await pilot.press("m")
        assert app.screen is screen and screen.check_action("show_matrix", ()) is False

        # c focuses the checkpoint table; escape leaves the table, then the screen.
        await pilot.press("c")
        assert isinstance(app.focused, CheckpointTable)
        await pilot.press("escape")
        assert app.focused is None and app.screen is screen

        # ? lists every binding of the screen and the app.
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        # Long descriptions wrap in help: compare words.
        text = " ".join(str(app.screen.query_one("#help-text").render()).split())
        # (why_no_trainer is the keys' read-only fallback, never shown: not a hidden command)
        bindings = [b for b in type(screen).BINDINGS if b.action != "why_no_trainer"]
        hidden = [b for b in bindings if screen.check_action(b.action, ()) is False]
        # Paused: space resumes (its "pause" binding is hidden); no matrix metric: no m.
        assert [b.action for b in hidden] == ["pause", "show_matrix"]
        shown = [b for b in bindings if b not in hidden]
        for binding in [*shown, *PodiumApp.BINDINGS, *CheckpointTable.BINDINGS]:
            assert " ".join(describe(binding).split()) in text, binding
        assert all(describe(b) not in text for b in hidden)
        assert "footer" not in text
        await pilot.press("escape")
        assert app.screen is screen

        # The command palette runs actions by name.
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"log scale")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen, 5, "the palette to close")
        await wait_for(pilot, lambda: not screen.options.log_y, 5, "log y toggled off")

        # escape goes home; the run keeps training and shows in the runs table as here.
        await pilot.press("escape")
        assert type(app.screen).__name__ == "HomeScreen"
        assert live.training
        live.request_stop("test over")
        await wait_for(pilot, lambda: not live.training, 30, "the run to stop")


@sync
async def test_checkpoint_keep_delete_and_quit_with_a_live_run(tmp_path):
    app = PodiumApp(root=tmp_path, request=start_request(tmp_path, name="ck"))
    async with app.run_test(size=SIZE) as pilot:
        live = await started(pilot, app, pause=True)
        screen = app.screen
        table = screen.query_one(CheckpointTable)
        ckpt_dir = live.session.run.checkpoint_dir
        await pilot.press("s")
        await wait_for(pilot, lambda: any(n.startswith("step-") for n in table.infos), 30, "save")
        name = next(n for n in table.infos if n.startswith("step-"))

        await pilot.press("c")
        table.move_cursor(row=table.get_row_index(name))
        await pilot.press("k")
        meta = ckpt_dir / f"{name}.json"
        await wait_for(pilot, lambda: json.loads(meta.read_text())["keep"], 10, "keep on disk")
        await wait_for(pilot, lambda: table.infos[name].keep, 10, "keep in the table")

        await pilot.press("r")  # a new run from this checkpoint: asks first (cancelled here)
        if branching_available():
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("escape")
        else:
            assert "not available yet" in app.notices[-1]
        assert len(app.live_runs) == 1

        table.move_cursor(row=table.get_row_index(name))
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("escape")  # cancel keeps it
        assert (ckpt_dir / f"{name}.pt").exists()
        await pilot.press("d")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not (ckpt_dir / f"{name}.pt").exists(), 10, "the delete")
        await wait_for(pilot, lambda: name not in table.infos, 10, "the row to go")
        await wait_for(
            pilot,
            lambda: any(f"removed checkpoint {name}" in e.text for e in live.model.log),
            10,
            "log",
        )
        live.session.writer.flush(timeout=10)
        store = RunStore.open(live.session.run.db_path, readonly=True)
        try:
            assert name not in [c.name for c in store.checkpoints()]
        finally:
            store.close()

        # q with a live run asks, "Leave it running" focused (Enter must not end the training);
        # "stop and quit" stops the run (with a checkpoint) and exits.
        await pilot.press("escape")
        await pilot.press("q")
        assert isinstance(app.screen, QuitModal)
        assert not app.screen.query_one("#leave").disabled
        assert app.focused is app.screen.query_one("#leave")
        await pilot.click("#stop")
        await wait_for(pilot, lambda: not live.training, 30, "the run to stop")
    assert app.return_code == 0
    assert live.session.run.status()[0] == "stopped"
    wait_sync(lambda: (live.session.run.path / "end.json").exists(), 5)
