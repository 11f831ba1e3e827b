"""Snapshots of the home and run screens at 80x24 and 120x40, and of every dialog at 80x24,
from a deterministic stored run.

Each snapshot is the screen's SVG (``App.export_screenshot``: colours and layout) and its plain
text (for a readable diff), kept in ``tests/snapshots_tui/``. What would change from one run to
the next is fixed here: the clock ages are measured against, the time zone, this process's RAM
and CPU readings, the profiles shown, and the GPUs (the FAKE NVML's four-GPU lab, GPU 0 reserved).

    PODIUM_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_tui_snapshots.py   # accept new ones
"""

from __future__ import annotations

import difflib
import io
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from podium.tui import format as fmt
from podium.tui.app import PodiumApp
from podium.tui.live import branching_available
from podium.tui.screens.modals import ConfirmModal, HelpScreen, LrModal, QuitModal
from podium.tui.screens.run import RunScreen, stop_dialog
from podium.tui.widgets import panels
from podium.tui.widgets.checkpoints import CheckpointTable
from podium.tui.widgets.gpu_panel import GpuPanel
from tests.fake_nvml import isolate, lab_devices, write_fake
from tests.tui_helpers import FIXED_WALL, make_stored_run, sync, wait_for

SNAPSHOTS = Path(__file__).parent / "snapshots_tui"
UPDATE = os.environ.get("PODIUM_UPDATE_SNAPSHOTS") == "1"
PROFILE = """\
name = "demo"
family = "cp"
description = "tiny CP transformer on the generated demo corpus (CPU friendly)"

[train]
seed = 0
"""


@pytest.fixture
def frozen(tmp_path, monkeypatch):
    """A runs root with one stored run, in a world whose clock and readings stand still."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(fmt, "clock", lambda: FIXED_WALL + 3 * 86400)
    monkeypatch.setattr(panels, "rss_bytes", lambda: 300 << 20)
    monkeypatch.setattr(panels, "total_ram_bytes", lambda: 16 << 30)
    monkeypatch.setattr(panels, "cuda_memory", lambda: None)
    monkeypatch.setattr(panels.CpuMeter, "percent", lambda self: 12.0)
    box = isolate(monkeypatch, tmp_path)
    # Reserved through the environment: its source ("env ...") has no temporary path in it.
    Path(os.environ["PODIUM_SYSTEM_CONFIG"]).write_text(
        f'[gpus]\nlease_dir = "{box / "leases"}"\npoll_seconds = 0.2\n'
    )
    monkeypatch.setenv("PODIUM_RESERVED_GPUS", "0")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "demo.toml").write_text(PROFILE)
    make_stored_run(Path("runs"), "fixture", steps=300)
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


def screen_text(app: PodiumApp) -> str:
    """The screen's characters, as ``export_screenshot`` renders them, without styles."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def rendered(app: PodiumApp) -> str:
    """The screen's text as a screenshot would show it now (exporting brings it up to date)."""
    app.export_screenshot()
    return screen_text(app)


def footer_drawn(app: PodiumApp) -> bool:
    """Whether the footer's keys are on screen (it recomposes when the bindings change)."""
    return rendered(app).splitlines()[-1].replace("▏^p palette", "").strip() != ""


async def settled(app: PodiumApp, pilot, timeout: float = 10.0) -> None:
    """Until two renders 0.3 s apart agree and the footer is drawn: a dialog opened just after
    another closed finds the footer recomposing its keys, which a loaded machine (CI, two cores
    shared) takes longer than a fixed pause to finish."""
    last, t0 = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        await pilot.pause(0.3)
        now = rendered(app)
        if now == last and footer_drawn(app):
            return
        last = now
    raise AssertionError(f"the screen did not settle within {timeout:g} s")


def check(app: PodiumApp, name: str, tmp_path: Path) -> None:
    svg, text = app.export_screenshot(title="podium"), screen_text(app)
    want_svg, want_text = SNAPSHOTS / f"{name}.svg", SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        want_svg.write_text(svg, encoding="utf-8")
        want_text.write_text(text + "\n", encoding="utf-8")
        return
    if not want_svg.exists():
        pytest.fail(f"no snapshot {want_svg}; run with PODIUM_UPDATE_SNAPSHOTS=1 and review it")
    (tmp_path / f"{name}.svg").write_text(svg, encoding="utf-8")
    expected = want_text.read_text(encoding="utf-8").rstrip("\n")
    if text != expected:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), text.splitlines(), "snapshot", "now", lineterm=""
            )
        )
        pytest.fail(f"{name}: the screen changed (new SVG: {tmp_path / name}.svg)\n{diff}")
    assert svg == want_svg.read_text(encoding="utf-8"), (
        f"{name}: same text, different colours or styles (new SVG: {tmp_path / name}.svg)"
    )


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@sync
async def test_home_and_run_screen_snapshots(frozen, size):
    app = PodiumApp(root=Path("runs"), profile_dirs=[Path("profiles")])
    async with app.run_test(size=size) as pilot:
        runs = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        # The table sizes its columns on an idle pass after the rows arrive.
        await wait_for(pilot, lambda: "fixture" in rendered(app), 10, "column widths")
        gpus = app.screen.query_one("#gpu-panel", GpuPanel)
        await wait_for(pilot, lambda: gpus.reading is not None, 10, "the GPU panel")
        await wait_for(pilot, lambda: footer_drawn(app), 10, "the footer")
        await pilot.pause(0.2)
        check(app, f"home-{size[0]}x{size[1]}", frozen)

        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        table = screen.query_one(CheckpointTable)
        await wait_for(pilot, lambda: screen.model.numbers.step == 300, 10, "the history")
        await wait_for(pilot, lambda: table.row_count == 2, 10, "the checkpoints")
        resources = screen.query_one(panels.ResourcesPanel)
        await wait_for(pilot, lambda: "GPUs free" in resources.gpu_lines()[0], 10, "GPU line")
        await wait_for(pilot, lambda: footer_drawn(app), 10, "the footer")
        await pilot.pause(0.2)
        check(app, f"run-{size[0]}x{size[1]}", frozen)


async def opened_run(app: PodiumApp, pilot) -> RunScreen:
    """The fixture run's screen, drawn whole (history, checkpoints, GPU line, footer)."""
    runs = app.screen.query_one("#runs")
    await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, RunScreen)
    table = screen.query_one(CheckpointTable)
    await wait_for(pilot, lambda: screen.model.numbers.step == 300, 10, "the history")
    await wait_for(pilot, lambda: table.row_count == 2, 10, "the checkpoints")
    resources = screen.query_one(panels.ResourcesPanel)
    await wait_for(pilot, lambda: "GPUs free" in resources.gpu_lines()[0], 10, "GPU line")
    await wait_for(pilot, lambda: footer_drawn(app), 10, "the footer")
    return screen


@sync
async def test_dialog_snapshots_at_80x24(frozen):
    """Every dialog's sentences wrap inside it at 80 columns (they were cut mid-sentence), the
    quit dialog focuses "Leave it running", and help's long lines wrap under their text."""
    app = PodiumApp(root=Path("runs"), profile_dirs=[Path("profiles")])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened_run(app, pilot)

        async def snap(name: str, modal_type: type) -> None:
            await wait_for(pilot, lambda: isinstance(app.screen, modal_type), 5, name)
            await settled(app, pilot)
            check(app, f"dialog-{name}-80x24", frozen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen, 5, f"{name} to close")

        app.push_screen(stop_dialog("fixture"))
        await snap("stop", ConfirmModal)
        app.push_screen(QuitModal(["fixture"]))
        await snap("quit", QuitModal)
        app.push_screen(LrModal(1e-3))
        await snap("lr", LrModal)
        await pilot.press("question_mark")
        await snap("help", HelpScreen)
        if branching_available():
            await pilot.press("c")  # the checkpoints table; r on a row: a new run from it
            await pilot.press("r")
            await snap("branch", ConfirmModal)
            await pilot.press("escape")  # leave the table
        await wait_for(pilot, lambda: footer_drawn(app), 10, "the footer")
        await pilot.pause(0.2)
        assert "q Quit" in rendered(app).splitlines()[-1]  # back after the dialogs
