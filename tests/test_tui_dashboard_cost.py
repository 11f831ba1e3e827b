"""What the dashboard spends on a live run: it must not repaint what did not change, and the
plots follow a run's steps at most once per ``PLOT_INTERVAL`` (bench/bench_dashboard.py measures
the CPU time and the throughput this buys).

The live run here is a real ``LiveRun`` whose inbox is fed engine events by the test (the bus
would call it the same way from the training thread); nothing trains, so each test takes a few
seconds of the UI alone.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from podium.engine import series as names
from podium.engine.events import StepMetrics
from podium.tui import format as fmt
from podium.tui.app import PodiumApp
from podium.tui.live import LiveRun, StartRequest
from podium.tui.model import RunModel
from podium.tui.screens import run as run_screen
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.panels import ResourcesPanel, StatsPanel
from tests.fake_nvml import isolate, write_fake
from tests.tui_helpers import DEMO, HEADS, sync, wait_for


def step_event(step: int, mfu: float | None = None) -> StepMetrics:
    loss = 3.0 - step / 100
    return StepMetrics(
        step=step,
        epoch=step / 46,
        wall=time.time(),
        loss=loss,
        losses={h: loss / len(HEADS) for h in HEADS},
        lr=1e-3,
        grad_norm=0.5,
        tokens_per_s=9000.0,
        samples_per_s=35.0,
        eta_s=60.0,
        mfu=mfu,
    )


@contextlib.asynccontextmanager
async def fed_run(tmp_path) -> AsyncIterator[tuple[PodiumApp, Pilot, LiveRun, RunScreen]]:
    """The dashboard at 120x40 on the run screen of a live run that the test feeds (app, pilot,
    live run, screen), past the screen's first paint; the run is marked done on the way out."""
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        live = LiveRun(StartRequest(profile_path=DEMO, root=tmp_path), app.post_message)
        m = live.model
        m.run_id, m.profile, m.family, m.state = "fed", "demo", "cp", "running"
        m.heads, m.steps_per_epoch, m.total_steps = list(HEADS), 46, 460
        live.phase = "training"
        app.live_runs[live.key] = live
        screen = RunScreen(live=live)
        app.push_screen(screen)
        await pilot.pause(0.3)
        try:
            yield app, pilot, live, screen
        finally:
            live.done.set()


def drawn_step(screen: RunScreen) -> float:
    """The last step on the total-loss plot as drawn (its series, not the model's)."""
    series = screen.query_one("#total-panel").plot.series
    return series[0].xs[-1] if series and series[0].xs else -1


@sync
async def test_plots_follow_steps_at_most_once_per_interval_and_catch_up(tmp_path):
    async with fed_run(tmp_path) as (app, pilot, live, screen):
        plot = screen.query_one("#total-panel").plot
        stats_seen: set[int] = set()
        draws = plot._version
        t0 = time.monotonic()
        step = 0
        while time.monotonic() - t0 < 8.5:  # 20 steps a second for 8.5 s
            step += 1
            live.inbox(step_event(step))
            stats_seen.add(screen.model.numbers.step)
            await pilot.pause(0.05)
        elapsed = time.monotonic() - t0
        redraws = plot._version - draws
        # 170 steps in ~5 drains (DRAIN_INTERVAL 2 s): the numbers moved at every drain, the
        # plots at most every PLOT_INTERVAL (the first drain draws at once: +1).
        assert len(stats_seen) >= 4, stats_seen
        assert 1 <= redraws <= elapsed / run_screen.PLOT_INTERVAL + 1, (redraws, elapsed)
        # The steps stop (a pause): the last ones are drawn all the same, by the timer.
        last = step
        limit = run_screen.PLOT_INTERVAL + run_screen.PLOT_LATE + app.DRAIN_INTERVAL + 2.0
        await wait_for(pilot, lambda: drawn_step(screen) == last, limit, "the last step drawn")
        # A key redraws at once, whatever the interval.
        before = plot._version
        await pilot.press("y")
        assert plot._version == before + 1


@sync
async def test_the_throughput_line_shows_mfu_where_the_run_reports_one(tmp_path):
    async with fed_run(tmp_path) as (_, pilot, live, screen):
        stats = screen.query_one(StatsPanel)

        def line() -> str:
            rows = stats.render().plain.splitlines()
            return next((r for r in rows if r.startswith("tokens/s")), "")

        live.inbox(step_event(1))  # a CPU run: no peak known, no MFU
        await wait_for(pilot, lambda: screen.model.numbers.step == 1, 5, "step 1")
        assert line().split() == ["tokens/s", "9,000", "·", "MFU", fmt.DASH]
        live.inbox(step_event(2, mfu=0.3824))
        await wait_for(pilot, lambda: screen.model.numbers.step == 2, 5, "step 2")
        assert line().split()[-1] == "38.2%"
    # A stored run: the latest throughput/mfu value of its store.
    model = RunModel()
    model.load_history({}, last={names.MFU: 0.0041, names.TOKENS_PER_S: 5e5})
    assert fmt.mfu(model.numbers.mfu) == "0.41%" and fmt.mfu(None) == fmt.DASH


class PanelApp(App):
    """The resources panel alone, fed by the app's GPU monitor (nothing else repaints)."""

    def compose(self) -> ComposeResult:
        yield ResourcesPanel()


@sync
async def test_an_unchanged_gpu_reading_does_not_repaint_the_resources_panel(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    (box / "etc-podium-config.toml").write_text("[gpus]\npoll_seconds = 0.2\n")
    fake = write_fake(box / "fake.json", [], state="no NVIDIA GPU: first")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(fake))
    app = PanelApp()
    async with app.run_test(size=(60, 10)) as pilot:
        panel = app.query_one(ResourcesPanel)
        panel.sample()
        await wait_for(pilot, lambda: "first" in str(panel.visual), 10, "a GPU reading")
        shown, readings = panel.visual, set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            readings.add(id(panel._reading))
            await pilot.pause(0.05)
        assert len(readings) >= 3  # the monitor posted a new reading every 0.2 s...
        assert panel.visual is shown  # ...of the same lines: the panel was not updated
        write_fake(fake, [], state="no NVIDIA GPU: second")
        await wait_for(pilot, lambda: "second" in str(panel.visual), 10, "the changed reading")


@sync
async def test_while_steps_arrive_the_resources_panel_repaints_in_the_drains_frames(tmp_path):
    """The 2 s tick (resources, checkpoint ages) runs inside a drain's redraw while a live
    run's steps arrive, so the panel costs no frame of its own; its own timer takes over when
    the steps stop (a pause)."""
    async with fed_run(tmp_path) as (app, pilot, live, screen):
        panel = screen.query_one(ResourcesPanel)
        where: list[bool] = []
        draining = [False]
        refresh_view, sample = screen.refresh_view, panel.sample

        def watched_refresh(*, steps: bool = False) -> None:
            draining[0] = steps
            try:
                refresh_view(steps=steps)
            finally:
                draining[0] = False

        def watched_sample(gpu_line: str = "") -> None:
            where.append(draining[0])
            sample(gpu_line)

        screen.refresh_view = watched_refresh  # type: ignore[method-assign]
        panel.sample = watched_sample  # type: ignore[method-assign]
        t0, step = time.monotonic(), 0
        while time.monotonic() - t0 < 6.5:  # 10 steps a second
            step += 1
            live.inbox(step_event(step))
            await pilot.pause(0.1)
        last = step  # the drain that brings it may come a whole DRAIN_INTERVAL later
        limit = app.DRAIN_INTERVAL + 2.0
        await wait_for(pilot, lambda: screen.model.numbers.step == last, limit, "the last step")
        streamed = list(where)
        assert len(streamed) >= 2 and all(streamed), streamed
        # No more steps: the timer's ticks alone (it waits 1.5 drains past the last step).
        limit = app.DRAIN_INTERVAL * 1.5 + run_screen.TICK_INTERVAL + 2.0
        await wait_for(pilot, lambda: len(where) > len(streamed), limit, "a timer's tick")
        assert not any(where[len(streamed) :]), where


def test_a_run_trained_in_the_dashboard_switches_the_gil_quickly_then_restores_it():
    from podium.tui.live import TRAINING_SWITCH_INTERVAL, quick_gil_handoff

    before = sys.getswitchinterval()
    with quick_gil_handoff():
        assert sys.getswitchinterval() == pytest.approx(TRAINING_SWITCH_INTERVAL)
        with quick_gil_handoff():  # a second run at once
            assert sys.getswitchinterval() == pytest.approx(TRAINING_SWITCH_INTERVAL)
        assert sys.getswitchinterval() == pytest.approx(TRAINING_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before
    assert before > TRAINING_SWITCH_INTERVAL
