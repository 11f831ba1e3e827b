"""The queue's scripted scenario: 3 queued runs, 2 free fake GPUs, one run ending. Who starts when.

The FAKE NVML lab of the tests (GPUs 0 and 1 reserved lab-wide, 2 and 3 free), a private lease
directory, queue state and runs root under a temporary directory; the toy profile with many
epochs so that runs last until the script ends them. Prints a timeline (seconds since the first
``podium queue``) from the script's observations and the waiter's log, then stops everything.

    .venv/bin/python bench/queue_scenario.py [--poll 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podium.engine.queue.store import Queue  # noqa: E402
from tests.fake_nvml import lab_devices, write_fake  # noqa: E402

TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll", type=float, default=0.5, help="the waiter's poll, seconds")
    args = parser.parse_args()
    box = Path(tempfile.mkdtemp(prefix="podium-queue-scenario-"))
    lab = box / "lab.toml"
    lab.write_text(
        f'[gpus]\nreserved = ["0", "1"]\nlease_dir = "{box / "leases"}"\nadmin = {os.getuid()}\n'
    )
    env = {
        **os.environ,
        "PODIUM_SYSTEM_CONFIG": str(lab),
        "PODIUM_FAKE_NVML": str(write_fake(box / "fake.json", lab_devices())),
        "XDG_STATE_HOME": str(box / "state"),
        "XDG_CONFIG_HOME": str(box / "xdg"),
        "PODIUM_QUEUE_POLL_S": str(args.poll),
        "PODIUM_CACHE": str(box / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    os.environ.update(env)
    queue = Queue()
    t0 = time.monotonic()
    events: list[tuple[float, str]] = []

    def note(text: str) -> None:
        events.append((time.monotonic() - t0, text))

    def podium(*argv: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "podium", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        return (out.stdout + out.stderr).strip()

    long = ["--set", "train.epochs=2000", "--set", "train.cpu_threads=1"]
    try:
        for _ in range(3):
            line = podium("queue", TOY, "--gpus", "1", *long, "--runs-dir", str(box / "runs"))
            note(f"podium queue: {line.splitlines()[0]}")
        seen: dict[int, str] = {}
        ended = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = {e.id: e for e in queue.entries()}
            for e in entries.values():
                key = f"{e.state}:{e.waiting[:40]}"
                if seen.get(e.id) != key:
                    seen[e.id] = key
                    what = e.waiting if e.state == "queued" else f"run {e.run_id}"
                    gpus = f" on GPU {e.gpu_indices[0]}" if e.gpu_indices else ""
                    note(f"entry {e.id}: {e.state}{gpus}: {what}")
            if ended is None and all(entries[i].state == "started" for i in (1, 2)):
                time.sleep(1.0)
                ended = entries[1]
                os.kill(ended.pid, signal.SIGTERM)
                note(f"SIGTERM to run {ended.run_id} (entry 1, GPU {ended.gpu_indices[0]})")
            if entries[3].state == "started":
                break
            time.sleep(0.1)
        print(f"scenario under {box}; waiter poll {args.poll} s\n")
        for t, text in events:
            print(f"T+{t:6.2f}s  {text}")
        print("\nwaiter log:")
        print(queue.waiter_log_path.read_text().rstrip())
    finally:
        waiter = queue.waiter_pid()
        if waiter:
            os.kill(waiter, signal.SIGTERM)
        for e in queue.entries():
            if e.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(e.pid, signal.SIGTERM)
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
