"""What a new user meets first: keys that do what help says, footers and dialogs that fit an
80-column terminal, and words (not class or action names) in help and the command palette.

Each test drives the real app (Pilot) on a stored run from ``make_stored_run``: its read-only
run screen has the same widgets, keys and layout as a live one.
"""

from __future__ import annotations

import re
import time

from podium.engine.checkpoints import CheckpointInfo
from podium.engine.runs import RunDir
from podium.tui.app import PodiumApp
from podium.tui.model import LogEntry, RunModel
from podium.tui.screens.home import HomeScreen
from podium.tui.screens.modals import HelpScreen, QuitModal
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.event_log import EventLog
from podium.tui.widgets.panels import RunHeader
from tests.test_tui_snapshots import footer_drawn, rendered, screen_text
from tests.tui_helpers import ROOT, make_stored_run, sync, wait_for


def footer(app: PodiumApp) -> str:
    return rendered(app).splitlines()[-1]


async def open_run(app: PodiumApp, pilot, run_id: str = "fixture") -> RunScreen:
    runs = app.screen.query_one("#runs")
    await wait_for(pilot, lambda: runs.row_count >= 1, 10, "the runs table")
    runs.move_cursor(row=runs.get_row_index(run_id))
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, RunScreen)
    await wait_for(pilot, lambda: screen.model.numbers.step > 0, 10, "the history")
    await wait_for(pilot, lambda: screen.table.row_count > 0, 10, "the checkpoints")
    await wait_for(pilot, lambda: footer_drawn(app), 10, "the footer")
    return screen


@sync
async def test_quit_dialog_focuses_leave_it_running(tmp_path):
    """q then a reflexive Enter must not stop the training: the safe answer has the focus."""
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    answers: list[str | None] = []
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(QuitModal(["demo-1"]), answers.append)
        await wait_for(pilot, lambda: isinstance(app.screen, QuitModal), 5, "the dialog")
        await pilot.pause(0.1)
        assert app.focused is not None and app.focused.id == "leave"
        await pilot.press("enter")
        await wait_for(pilot, lambda: answers, 5, "the answer")
    assert answers == ["leave"]


@sync
async def test_space_says_resume_while_the_run_is_paused(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=60)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_run(app, pilot)
        # What the footer reads is the model's state, as a live run's events set it.
        screen.model.state = "running"
        screen.refresh_view()
        await wait_for(pilot, lambda: "space Pause" in footer(app), 5, "space Pause")
        assert "Resume" not in footer(app)
        screen.model.state = "paused"
        screen.refresh_view()
        await wait_for(pilot, lambda: "space Resume" in footer(app), 5, "space Resume")
        assert "Pause" not in footer(app)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = app.screen.text()
        assert "Resume training" in help_text and "Pause training" not in help_text
        await pilot.press("escape")
        screen.model.state = "running"
        screen.refresh_view()
        await wait_for(pilot, lambda: "space Pause" in footer(app), 5, "space Pause again")


@sync
async def test_an_ended_run_offers_no_keys_that_command_its_trainer(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=60)  # finished
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_run(app, pilot)
        line = footer(app)
        assert "y Log" in line and "esc Back" in line, line
        for key in ("space Pause", "space Resume", "s Save", "x Stop", "l LR"):
            assert key not in line, line
        await pilot.press("question_mark")
        help_text = app.screen.text()
        assert "Toggle a log scale" in help_text
        assert "Pause training" not in help_text and "Save a checkpoint now" not in help_text
        await pilot.press("escape")
        await pilot.press("s")  # hidden, not dead: the key still says why nothing happens
        assert "read-only" in app.notices[-1]
        # The keys follow the model's state: a live run shows them.
        screen.model.state = "running"
        screen.refresh_view()
        await wait_for(pilot, lambda: "x Stop" in footer(app), 5, "x Stop")
        assert "space Pause" in footer(app) and "s Save" in footer(app)


@sync
async def test_escape_from_a_run_opened_over_another_goes_home(tmp_path):
    """A run branched from the one shown opens over its parent's screen; esc goes home, as
    help says ("Back to the home screen"), not to the parent."""
    make_stored_run(tmp_path, "parent", steps=40)
    make_stored_run(tmp_path, "child", steps=20)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        parent = await open_run(app, pilot, "parent")
        app.push_screen(RunScreen(run=RunDir(tmp_path / "child")))  # as start_run pushes it
        await wait_for(pilot, lambda: app.screen is not parent, 5, "the child's screen")
        assert isinstance(app.screen, RunScreen) and app.screen.run_dir.id == "child"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), 5, "home")
        assert not any(isinstance(s, RunScreen) for s in app.screen_stack)


@sync
async def test_footer_keeps_quit_and_help_at_80_columns(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=60)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run(app, pilot)
        for focus in ("screen", "table"):
            line = footer(app)
            assert "q Quit" in line and "? Help" in line and "esc Back" in line, (focus, line)
            assert line.rstrip().endswith("^p palette"), (focus, line)  # nothing cut past it
            await pilot.press("c")  # the checkpoints table: its keys come first
            await wait_for(pilot, lambda: "d Delete" in footer(app), 5, "the table's keys")


@sync
async def test_help_and_palette_speak_words_not_class_names(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=60)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        home = app.screen
        await wait_for(pilot, lambda: home.query_one("#runs").row_count == 1, 10, "runs")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        home_help = app.screen.text()
        assert re.search(r"enter\s+Open the run under the cursor", home_help), home_help
        await pilot.press("escape")

        await open_run(app, pilot)
        await pilot.press("question_mark")
        help_text = app.screen.text(width=60)
        assert "EventLog" not in help_text and "events log (when focused)" in help_text
        assert "footer" not in help_text.lower()
        # A description that wraps continues under itself, not at the dialog's edge.
        lines = help_text.splitlines()
        at = next(i for i, line in enumerate(lines) if "ctrl+d" in line)
        column = lines[at].index("Detach")
        assert lines[at + 1][:column].strip() == "" and lines[at + 1][column:].strip()
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await pilot.pause(0.5)
        shown = screen_text(app)
        assert "Toggle a log scale on the loss axis (y)" in shown
        for internal in ("PodiumApp", "RunScreen", "toggle_", ": quit", "_"):
            assert internal not in shown.split("Toggle")[1], internal
        assert "Quit the application as soon as possible" not in shown  # Textual's, replaced
        await pilot.press("escape")


def info(name: str, step: int, *, keep: bool = False) -> CheckpointInfo:
    return CheckpointInfo(
        name=name,
        step=step,
        epoch=step / 10,
        wall=time.time() - 7200,
        kind="epoch",
        val_loss=2.4567,
        profile_hash="",
        size=4_200_000,
        keep=keep,
    )


@sync
async def test_checkpoint_table_keeps_age_and_keep_with_epoch_names(tmp_path):
    """An ``epoch-*`` name used to widen the name column until age and keep fell off."""
    make_stored_run(tmp_path, "fixture", steps=60)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    for size in ((120, 40), (80, 24)):
        async with app.run_test(size=size) as pilot:
            screen = await open_run(app, pilot)
            table = screen.table
            long = "epoch-0003-val-2.4567"
            table.show([info(long, 350, keep=True), info("latest", 350)])
            # a loaded box draws the table a few frames later
            await wait_for(pilot, lambda a=app: "✓" in rendered(a), 10, "the checkpoint table")
            keys = [c.key.value for c in table.columns.values()]
            assert keys[0] == "name" and keys[-2:] == ["age", "keep"], (size, keys)
            width = sum(c.get_render_width(table) for c in table.columns.values())
            assert width <= table.scrollable_content_region.width, size
            text = rendered(app)
            assert "keep" in text and "✓" in text and "2h" in text, size
            if size == (120, 40):
                assert long in text  # the space the dropped columns left holds it whole
            await pilot.press("escape")
        app = PodiumApp(root=tmp_path, profile_dirs=[])


@sync
async def test_event_log_wraps_whole_words_in_the_side_panel(tmp_path):
    make_stored_run(tmp_path, "fixture", steps=60)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    text = "checkpoint epoch-0035-val-2.4567 saved; the run has no complete epoch since 350"
    async with app.run_test(size=(80, 40)) as pilot:
        screen = await open_run(app, pilot)
        screen.model.add_log(LogEntry(time.time(), 350, "warning", text))
        screen.refresh_view()
        log = screen.query_one(EventLog)
        await pilot.pause(0.2)
        width = log.scrollable_content_region.width
        assert all(strip.cell_length <= width for strip in log.lines), width
        tail = " ".join(strip.text for strip in log.lines)
        assert " ".join(text.split()) in " ".join(tail.split())
        # Wider: written again at the new width.
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.3)
        assert log.scrollable_content_region.width > width
        assert all(s.cell_length <= log.scrollable_content_region.width for s in log.lines)
        assert " ".join(text.split()) in " ".join(" ".join(s.text for s in log.lines).split())


@sync
async def test_run_header_grows_a_line_when_its_text_wraps(tmp_path):
    """The attached note made the header longer than 80 columns; the end was cut."""
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(80, 24)) as pilot:
        model = RunModel()
        model.run_id, model.profile, model.family, model.state = "demo-1", "demo", "cp", "running"
        header = RunHeader()
        await app.screen.mount(header)
        header.show(model, note="attaching…")
        await pilot.pause(0.1)
        assert header.size.height == 1
        note = "(attached: q or ctrl+d leaves it training)"
        header.show(model, note=note + " " + "and a long tail " * 3)
        await pilot.pause(0.1)
        assert header.size.height == 2
        shown = " ".join(screen_text(app).split())
        assert "and a long tail and a long tail and a long tail" in shown


@sync
async def test_a_long_profile_description_wraps_under_itself(tmp_path):
    """At 80 columns a description has no room beside the longest name and family: it goes
    under its name, indented, and its wrapped lines start where it starts."""
    app = PodiumApp(root=tmp_path, profile_dirs=[ROOT / "profiles"])
    async with app.run_test(size=(80, 24)) as pilot:
        options = app.screen.query_one("#profiles")
        await wait_for(pilot, lambda: options.option_count, 5, "list")
        names = [str(options.get_option_at_index(i).id) for i in range(options.option_count)]
        options.highlighted = next(i for i, n in enumerate(names) if n.endswith("emopia-cp.toml"))
        await pilot.pause(0.3)
        lines = rendered(app).splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(" emopia-cp "))
        assert lines[at].split()[:2] == ["emopia-cp", "cp"]
        assert lines[at + 1].startswith("   EMOPIA-style"), lines[at : at + 3]
        column = lines[at + 1].index("EMOPIA-style")
        second = lines[at + 2]
        assert second[:column].strip() == "" and second[column : column + 1].strip(), lines[
            at : at + 3
        ]
