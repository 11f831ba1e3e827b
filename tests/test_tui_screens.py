"""Home screen, read-only run screen, the new-run form, and engine failures shown in the UI."""

from __future__ import annotations

import pytest

from podium.engine.runs import RunDir
from podium.tui.app import PodiumApp
from podium.tui.screens.home import HomeScreen, find_profiles
from podium.tui.screens.new_run import NewRunModal, parse_form
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.checkpoints import CheckpointTable
from tests.tui_helpers import DEMO, HEADS, make_stored_run, start_request, sync, wait_for

SIZE = (120, 40)


def cell_text(table, row_key, column) -> str:
    return str(table.get_cell(row_key, column))


@sync
async def test_home_lists_runs_and_profiles_and_opens_a_stored_run(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=300)
    app = PodiumApp(root=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        home = app.screen
        assert isinstance(home, HomeScreen)
        runs = home.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        assert cell_text(runs, "fixture", "profile") == "demo"
        assert "finished" in cell_text(runs, "fixture", "state")
        assert cell_text(runs, "fixture", "step") == "300"
        assert cell_text(runs, "fixture", "device") == "cpu"
        assert cell_text(runs, "fixture", "host") == "testhost"
        best = float(cell_text(runs, "fixture", "best val"))
        assert 0 < best < 20
        profiles = home.query_one("#profiles")
        assert any(p.path.name == "demo.toml" for p in home.profiles)
        assert profiles.option_count >= 1
        gpu = home.query_one("#gpu-panel")
        await wait_for(pilot, lambda: gpu.reading is not None, 10, "the GPU panel")
        assert gpu.text()  # the GPUs, or the one-line state without NVIDIA

        await pilot.press("enter")  # the runs table has focus: open the run
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is None
        model = screen.model
        await wait_for(pilot, lambda: model.numbers.step == 300, 10, "the stored history")
        assert model.heads == sorted(HEADS)
        assert model.total_steps == 300 and model.steps_per_epoch == 10
        total = screen.query_one("#total-panel").plot
        assert [s.label for s in total.series] == ["train", "val"]
        assert len(total.series[0].xs) >= 150 and len(total.series[1].xs) == 6
        assert "⠀" not in total.text() and any(0x2800 < ord(c) < 0x2900 for c in total.text())
        table = screen.query_one(CheckpointTable)
        await wait_for(pilot, lambda: set(table.infos) == {"best", "latest"}, 10, "checkpoints")
        header = str(screen.query_one("#run-header").render())
        assert "finished" in header and "read-only" in header
        log = [e.text for e in model.log]
        assert any(t.startswith("val ") and "patience 6" in t for t in log)
        assert any("state finished" in t for t in log)

        # Commands on a stored run explain why nothing happens.
        await pilot.press("space")
        assert "read-only" in app.notices[-1]
        # Checkpoint actions work on a stopped run's files.
        await pilot.press("c")
        table.move_cursor(row=table.get_row_index("best"))
        await pilot.press("k")
        await wait_for(pilot, lambda: table.infos["best"].keep, 10, "keep")
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, HomeScreen)


def test_profiles_are_found_once(tmp_path, monkeypatch):
    monkeypatch.chdir(DEMO.parent.parent)  # ./profiles and the package's profiles are the same
    names = [p.path.name for p in find_profiles()]
    assert names.count("demo.toml") == 1
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.toml").write_text('name = "mine"\nfamily = "cp"\n')
    monkeypatch.chdir(tmp_path)
    found = {p.name: p for p in find_profiles()}
    assert {"mine", "demo"} <= set(found)
    assert found["mine"].family == "cp"


def test_new_run_form_checks_fields_before_starting(tmp_path):
    (tmp_path / "taken").mkdir()
    ok = parse_form(DEMO, tmp_path, name="", seed="7", max_steps="20", overrides="train.lr=1e-3")
    assert ok.overrides == ("train.lr=1e-3", "train.seed=7") and ok.max_steps == 20
    assert ok.name is None and ok.root == tmp_path
    cases = [
        ({"name": "taken"}, "already exists"),
        ({"name": "../x"}, "not a safe run name"),
        ({"seed": "x"}, "seed:"),
        ({"max_steps": "0"}, "max steps:"),
        ({"overrides": "train.lr"}, "not KEY=VALUE"),
        ({"overrides": "train.lrr=1"}, "train.lrr"),
        ({"overrides": "train.lr=fast"}, "train.lr"),
    ]
    for fields, expected in cases:
        args = {"name": "", "seed": "", "max_steps": "", "overrides": "", **fields}
        with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
            parse_form(DEMO, tmp_path, **args)


@pytest.mark.slow
@sync
async def test_form_starts_a_run_and_home_shows_it(tmp_path):
    app = PodiumApp(root=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        home = app.screen
        await pilot.press("n")
        options = home.query_one("#profiles")
        assert app.focused is options
        options.highlighted = next(i for i, p in enumerate(home.profiles) if p.name == "demo")
        await pilot.press("enter")
        form = app.screen
        assert isinstance(form, NewRunModal)
        await pilot.press(*"formrun", "tab", "tab", *"6", "tab")
        await pilot.press(*"train.lr=bad")
        await pilot.press("enter")
        assert "train.lr" in str(form.query_one("#form-error").render())
        form.query_one("#overrides").value = " ".join(
            [*start_request(tmp_path).overrides, "train.val_every_steps=3"]
        )
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is not None
        live = screen.live
        await wait_for(pilot, lambda: not live.training, 90, "the 6-step run to end")
        assert live.model.state == "stopped" and live.model.numbers.step == 6
        assert live.model.run_id == "formrun"
        await pilot.press("escape")
        runs = home.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        assert "stopped" in cell_text(runs, "formrun", "state")


@pytest.mark.slow
@sync
async def test_nan_loss_fails_the_run_and_the_dashboard_says_why(tmp_path):
    extra = (
        "train.lr=1e4",
        "train.warmup_steps=0",
        "train.max_nonfinite_steps=1",
    )
    app = PodiumApp(root=tmp_path, request=start_request(tmp_path, extra=extra, name="nan"))
    async with app.run_test(size=SIZE) as pilot:
        (live,) = app.live_runs.values()
        await wait_for(pilot, lambda: not live.training, 90, "the run to fail")
        # The end is reported by a message the UI handles after the thread is done.
        await wait_for(pilot, lambda: any("non-finite" in n for n in app.notices), 10, "notice")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert live.model.state == "failed"
        assert "non-finite loss" in live.model.reason
        header = str(screen.query_one("#run-header").render())
        assert "failed" in header and "non-finite loss" in header and "hint:" in header
        assert any("non-finite" in n for n in app.notices)
        assert any(e.level == "error" for e in live.model.log)
        assert RunDir(tmp_path / "nan").status()[0] == "failed"
        await pilot.press("escape")  # the dashboard carries on
        assert isinstance(app.screen, HomeScreen)
    assert app.exit_code() == 1  # what `podium train` exits with


@sync
async def test_a_run_that_cannot_start_shows_the_data_error(tmp_path):
    # Two pieces leave no full batch in the train split: the engine refuses at session build.
    request = start_request(tmp_path, extra=("data.n_pieces=2",), name="tiny")
    app = PodiumApp(root=tmp_path, request=request)
    async with app.run_test(size=SIZE) as pilot:
        (live,) = app.live_runs.values()
        await wait_for(pilot, lambda: not live.training, 60, "the start to fail")
        # The UI records the end when it handles TrainingEnded, a moment after the thread ends.
        await wait_for(pilot, lambda: live.model.state != "starting", 10, "the end recorded")
        assert live.session is None and live.model.state == "failed"
        assert "fewer than one optimizer step" in live.model.reason
        header = str(app.screen.query_one("#run-header").render())
        assert "failed" in header and "fewer than one optimizer step" in header
        await pilot.press("space")
        assert "nothing to control" in app.notices[-1]
    # The engine removes a run that never trained (or, before that change, marked it failed).
    tiny = tmp_path / "tiny"
    assert not tiny.exists() or RunDir(tiny).status()[0] == "failed"


@pytest.mark.slow
@sync
async def test_resume_in_the_dashboard_shows_history_and_continues(tmp_path):
    from podium.engine.config import load_profile
    from podium.engine.session import new_session
    from podium.tui.live import ResumeRequest, branching_available
    from tests.tui_helpers import SMALL

    first = new_session(load_profile(DEMO, list(SMALL)), root=tmp_path, name="again", max_steps=8)
    assert first.run_training().step == 8
    request = ResumeRequest(run_path=tmp_path / "again", max_steps=12)
    app = PodiumApp(root=tmp_path, request=request)
    async with app.run_test(size=SIZE) as pilot:
        (live,) = app.live_runs.values()
        await wait_for(pilot, lambda: live.session is not None, 60, "the session")
        model = live.model
        await wait_for(pilot, lambda: not live.training, 60, "the resumed run to end")
        steps = model.series["train/loss"].steps
        assert steps == list(range(1, 13))  # history 1-8 from the store, 9-12 live
        assert model.run_id == "again" and model.state == "stopped"
        assert any("resumed from checkpoint" in e.text for e in model.log)
        if not branching_available():
            return
        # r on a checkpoint starts a new run from it, with the parent's history up to there.
        screen = app.screen
        table = screen.query_one(CheckpointTable)
        await wait_for(pilot, lambda: "latest" in table.infos, 10, "the checkpoint table")
        from_step = table.infos["latest"].step
        await pilot.press("c")
        table.move_cursor(row=table.get_row_index("latest"))
        await pilot.press("r", "enter")
        assert len(app.live_runs) == 2
        branch = app.live_runs[max(app.live_runs)]
        assert app.screen.live is branch
        await wait_for(pilot, lambda: branch.model.numbers.step > from_step, 60, "branch steps")
        assert branch.model.series["train/loss"].steps[0] == 1  # the parent's history
        assert branch.model.run_id != "again"
        branch.request_stop("test over")
        await wait_for(pilot, lambda: not branch.training, 30, "the branch to stop")
    assert RunDir(tmp_path / "again").status()[0] == "stopped"
