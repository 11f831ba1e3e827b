"""Time from ``podium attach`` to a fully drawn run screen, for a live run with 1M points per series.

The run: ``bench_dashboard.build_big_run`` writes a run whose 24 series hold ``--points`` steps
each (cached under ``--tmp``). A server process makes it live the way a training process does:
it takes the run's lock, serves the real control socket (``podium.engine.control.ControlServer``) and
publishes a step event every 0.1 s on its bus. Two measurements, side by side in one run:

1. in-process: ``PodiumApp`` (Textual's headless driver, 120x40) from ``app.attach(run)`` to
   the run screen with the history folded in and both plots drawn: connect and subscribe,
   ``status``, the store reads, the model and the plots. Median of ``--repeats``.
2. the command, as a user runs it: ``python -m podium attach RUN`` in a tmux pane (a real
   terminal, 120x40), from the spawn to the first ``capture-pane`` that shows the header with
   the run's step and the loss plot's axis. Includes interpreter start and imports. Median of
   ``--repeats``; tmux polling adds up to ~20 ms.

Target: <= 1 s.

    .venv/bin/python bench/bench_attach.py [--points 1000000] [--repeats 5] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TMUX = shutil.which("tmux") or "/usr/bin/tmux"


def serve(run_path: Path) -> None:
    """The stand-in training process: lock, control socket, a step every 0.1 s (until killed)."""
    import math

    from podium.engine.control import ControlServer
    from podium.engine.events import EventBus, StepMetrics
    from podium.engine.runs import RunDir

    run = RunDir(run_path)
    run.clear_end()
    run.acquire()
    bus = EventBus()
    state = {"step": 0}

    def status(_args):
        return {
            "run": run.id,
            "profile": "demo",
            "family": "cp",
            "state": "running",
            "step": state["step"],
            "total_steps": 2_000_000,
            "steps_per_epoch": 1000,
            "device": "cpu",
            "lr": 1e-3,
        }

    server = ControlServer(run.path, handlers={"status": status}, bus=bus).start()
    heads = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion")
    step = 1_000_000
    print("ready", flush=True)
    try:
        while True:
            step += 1
            state["step"] = step
            loss = 0.5 + 0.01 * math.sin(step)
            bus.publish(
                StepMetrics(
                    step=step,
                    epoch=step / 1000,
                    wall=time.time(),
                    loss=loss,
                    losses={h: loss / 8 for h in (*heads, "key")},
                    lr=1e-3,
                    grad_norm=1.0,
                    tokens_per_s=9000.0,
                    samples_per_s=140.0,
                    eta_s=100.0,
                )
            )
            time.sleep(0.1)
    finally:
        server.close()


def in_process(run, repeats: int) -> list[float]:
    from podium.tui.app import PodiumApp
    from podium.tui.screens.run import RunScreen

    times: list[float] = []

    async def drive() -> None:
        app = PodiumApp(root=run.path.parent, profile_dirs=[])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            for _ in range(repeats):
                t0 = time.perf_counter()
                attached = app.attach(run)
                screen = app.screen
                assert isinstance(screen, RunScreen)
                while True:
                    await asyncio.sleep(0.002)
                    if attached.phase != "training" or not screen.is_mounted:
                        continue
                    try:
                        key = screen.query_one("#total-panel").plot._cache_key
                    except Exception:  # not composed yet
                        continue
                    if key is not None and key[2] >= 2:
                        break
                times.append(time.perf_counter() - t0)
                app.pop_screen()
                attached.close()
                await pilot.pause(0.3)

    asyncio.run(drive())
    return times


def command(run, repeats: int) -> list[float]:
    times: list[float] = []
    env = f"-u COLUMNS -u LINES TERM=xterm-256color PODIUM_RUNS={shlex.quote(str(run.path.parent))}"
    cmd = (
        f"cd {shlex.quote(str(ROOT))} && env {env} {shlex.quote(sys.executable)} -m podium "
        f"attach {run.id}"
    )
    for i in range(repeats):
        sock = f"podium-bench-{os.getpid()}-{i}"

        def tmux(*args: str, sock: str = sock) -> subprocess.CompletedProcess:
            return subprocess.run(
                [TMUX, "-L", sock, "-f", "/dev/null", *args], capture_output=True, text=True
            )

        t0 = time.perf_counter()
        tmux("new-session", "-d", "-s", "b", "-x", "120", "-y", "40", cmd)
        try:
            while True:
                screen = tmux("capture-pane", "-p", "-t", "b").stdout
                stepped = "step 1,000," in screen or "step 1000" in screen
                if stepped and "loss · total" in screen and "┤" in screen:
                    break
                if time.perf_counter() - t0 > 30:
                    raise SystemExit(f"the attached screen did not appear:\n{screen}")
                time.sleep(0.01)
            times.append(time.perf_counter() - t0)
        finally:
            tmux("kill-server")
        time.sleep(0.5)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()) / "podium-bench")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from bench.bench_dashboard import build_big_run

    args.tmp.mkdir(parents=True, exist_ok=True)
    run = build_big_run(args.tmp, args.points)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(run.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        inproc = in_process(run, args.repeats)
        whole = command(run, args.repeats) if Path(TMUX).exists() else []
    finally:
        server.terminate()
        server.wait(10)
        run.mark_end("finished", "bench fixture", args.points)
    ms = 1000.0
    print(f"attach to a live run with {args.points:,} points in each of its 24 series:")
    print(
        f"  in-process, attach() to drawn run screen: median {statistics.median(inproc) * ms:.0f} ms "
        f"(min {min(inproc) * ms:.0f}, max {max(inproc) * ms:.0f})"
    )
    if whole:
        print(
            f"  `podium attach` command to drawn screen in tmux: median "
            f"{statistics.median(whole) * ms:.0f} ms (min {min(whole) * ms:.0f}, "
            f"max {max(whole) * ms:.0f})"
        )
    worst = max(statistics.median(inproc), statistics.median(whole) if whole else 0.0)
    print(f"  target <= 1000 ms: {'met' if worst <= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
