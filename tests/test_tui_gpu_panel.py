"""The GPU panels (home screen and run screen) on the FAKE NVML: states, gauges, processes.

The lab: GPU 0 reserved (lab-wide config), GPU 1 busy (another user's compute process), GPU 2
leased by another podium run (a real child process holds the lease), GPU 3 free.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from podium.tui.app import PodiumApp
from podium.tui.screens.home import HomeScreen
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.gpu_panel import GpuPanel
from podium.tui.widgets.panels import ResourcesPanel
from tests.fake_nvml import GIB, end, hold_lease, isolate, lab_devices, uuid, write_fake
from tests.tui_helpers import make_stored_run, sync, wait_for

SIZE = (120, 40)
NO_GPU = "no NVIDIA GPU: NVML library not found"


def lab(box: Path, *, extra: str = "") -> Path:
    """The lab-wide config (GPU 0 reserved, fast polling) and the fake NVML's four GPUs."""
    devices = lab_devices()
    devices[1]["processes"] = [
        {"pid": 5001, "user": "bob", "command": "python train_big.py", "gpu_memory": 30 * GIB}
    ]
    devices[1]["memory_used"] = 31 * GIB
    (box / "etc-podium-config.toml").write_text(
        f'[gpus]\nreserved = ["0"]\nlease_dir = "{box / "leases"}"\npoll_seconds = 0.2\n'
        f"admin = {os.getuid()}\n" + extra  # the test's user owns the test's lease directory
    )
    return write_fake(box / "fake.json", devices)


def monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "podium-gpu-monitor"]


@sync
async def test_home_panel_shows_each_gpu_state_gauges_and_processes(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    fake = lab(box)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(fake))
    holder = hold_lease(uuid(2), "someone-elses-run", box / "leases")
    try:
        app = PodiumApp(root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            panel = app.screen.query_one("#gpu-panel", GpuPanel)
            await wait_for(pilot, lambda: panel.reading is not None, 10, "a GPU reading")
            lines = panel.text().splitlines()
            heads = [line for line in lines if line[:1].isdigit()]
            assert [h.split()[:2] for h in heads] == [
                ["0", "RESERVED"],
                ["1", "BUSY"],
                ["2", "LEASED"],
                ["3", "FREE"],
            ]
            assert heads[0].split()[2:] == ["97%", "70/80", "GiB", "71°C", "380W"]
            text = panel.text()
            assert "lab-wide as '0'" in text
            assert "user bob" in text and "5001 bob 30.0 GiB python train_big.py" in text
            assert "(run someone-elses-run)" in text
            assert "4000 prod 69.0 GiB tritonserver" in text
            assert panel.border_title == "GPUs (1/4 GPUs free)"
            assert len(monitor_threads()) == 1  # one monitor, in its own thread

            # The gauges follow the provider (the fake re-reads its file when it changes).
            devices = lab_devices()
            devices[3]["utilization"] = 88
            write_fake(fake, devices)
            await wait_for(pilot, lambda: " 88% " in panel.text(), 10, "the new utilisation")
            # The lease is gone once its holder ends: GPU 2 is free again.
            end(holder)
            await wait_for(pilot, lambda: "2 FREE" in panel.text(), 10, "the lease released")
        assert monitor_threads() == []  # the app's exit stopped the monitor
    finally:
        end(holder)


@sync
async def test_without_nvidia_the_panels_say_so_in_one_line(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", [], state=NO_GPU)))
    make_stored_run(tmp_path / "runs", "cpu-run", steps=60, checkpoints=False)
    app = PodiumApp(root=tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        home = app.screen
        assert isinstance(home, HomeScreen)
        panel = home.query_one("#gpu-panel", GpuPanel)
        await wait_for(pilot, lambda: panel.reading is not None, 10, "a GPU reading")
        assert panel.text() == NO_GPU
        runs = home.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        resources = screen.query_one(ResourcesPanel)
        await wait_for(pilot, lambda: screen.model.device == "cpu", 10, "the run's facts")
        await wait_for(
            pilot, lambda: resources.gpu_lines() == [f"on cpu · {NO_GPU}"], 10, "GPU line"
        )
        # At 80 columns the line wraps under its value, read whole (it ended "NVML library no…").
        shown = str(resources.render()).split("GPU        ", 1)[1]
        assert "…" not in shown and NO_GPU in " ".join(shown.split())
        await pilot.press("escape")
    assert monitor_threads() == []


@sync
async def test_run_screen_shows_the_gpus_its_run_leases(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(lab(box)))
    run = make_stored_run(tmp_path / "runs", "on-gpu", steps=60, checkpoints=False)
    log = run.log_path.read_text().replace("device cpu", "device cuda")
    run.log_path.write_text(log)
    holder = hold_lease(uuid(2), run.id, box / "leases")  # as claim_gpus leaves it while training
    try:
        app = PodiumApp(root=tmp_path / "runs")
        async with app.run_test(size=SIZE) as pilot:
            runs = app.screen.query_one("#runs")
            await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
            await pilot.press("enter")
            screen = app.screen
            assert isinstance(screen, RunScreen)
            resources = screen.query_one(ResourcesPanel)
            await wait_for(pilot, lambda: screen.model.device == "cuda", 10, "the run's facts")
            await wait_for(
                pilot, lambda: resources.gpu_lines()[0].startswith("GPU 2:"), 10, "its GPU"
            )
            assert resources.gpu_lines() == ["GPU 2: 35% 2.0/80 GiB 55°C 200W"]
            end(holder)  # the run let its GPU go
            await wait_for(
                pilot,
                lambda: resources.gpu_lines() == ["holds no GPU now · 2/4 GPUs free"],
                10,
                "the GPU released",
            )
    finally:
        end(holder)


@sync
async def test_a_broken_gpu_config_shows_gauges_without_guessing_states(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(lab(box, extra="bogus_key = 1\n")))
    app = PodiumApp(root=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        panel = app.screen.query_one("#gpu-panel", GpuPanel)
        await wait_for(pilot, lambda: panel.reading is not None, 10, "a GPU reading")
        lines = panel.text().splitlines()
        assert lines[0].startswith("GPU config: ") and "bogus_key" in lines[0]
        assert [line.split()[:2] for line in lines[1:] if line[:1].isdigit()] == [
            ["0", "?"],
            ["1", "?"],
            ["2", "?"],
            ["3", "?"],
        ]
        assert "FREE" not in panel.text()


@sync
async def test_an_unreadable_fake_nvml_file_is_one_line_not_a_crash(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(tmp_path / "missing.json"))
    app = PodiumApp(root=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        panel = app.screen.query_one("#gpu-panel", GpuPanel)
        await wait_for(pilot, lambda: panel.reading is not None, 10, "a GPU reading")
        assert panel.text().startswith("no GPU readings: PODIUM_FAKE_NVML=")
        assert "cannot read the fake NVML file" in panel.text()
        assert monitor_threads() == []  # nothing polls
