"""What the GPU telemetry thread costs training: the engine's step with a ``GpuMonitor`` polling
against the same trainer with none, interleaved in rounds in this one process.

The monitor is the dashboard's (``podium.engine.gpus.nvml.GpuMonitor``: a daemon thread reading
every GPU's gauges and, less often, the process tables). On a machine without a GPU it reads a
FAKE NVML of four GPUs (``PODIUM_FAKE_NVML`` when set, else a file written here) so the thread
does its full work of parsing and snapshotting; on a GPU machine it reads NVML itself. It polls
at ``--poll`` seconds (default the floor, 0.1 s: ten times faster than the default config, the
worst case); the suite's rows are at the config's default (1 s) and at the floor, interleaved
with no monitor, each round's ratio to its own "off", the median over the rounds. Target:
on / off <= 1.02. The monitor's own CPU per poll, measured alone, is printed beside it.

    .venv/bin/python bench/bench_telemetry.py [--rounds 6] [--steps 10] [--poll 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from report_rows import Row, paired_ratios, row

from podium.engine.config import load_profile
from podium.engine.gpus.config import GpuConfig
from podium.engine.gpus.nvml import FAKE_ENV, MIN_POLL_SECONDS, FakeNvmlProvider, GpuMonitor
from podium.engine.trainer import Trainer, seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "profiles" / "demo.toml"
TINY = ("data.n_pieces=48", "data.bars=4", "data.seq_len=128", "train.val_every_steps=0")
GIB = 1 << 30


def _source() -> FakeNvmlProvider | None:
    """NVML when a GPU is here, else the named fake, else a four-GPU fake written to a temp file."""
    if torch.cuda.is_available() or os.environ.get(FAKE_ENV):
        return None  # GpuMonitor's own provider(): NVML or the named fake
    devices = [
        {
            "name": "NVIDIA A100-SXM4-80GB",
            "utilization": 50,
            "memory_used": 10 * GIB,
            "memory_total": 80 * GIB,
            "temperature": 60,
            "power_draw": 250_000,
            "power_limit": 400_000,
            "processes": [{"pid": 1000 + i, "gpu_memory": GIB, "command": "python", "kind": "C"}],
        }
        for i in range(4)
    ]
    path = Path(tempfile.mkdtemp(prefix="podium-bench-nvml-")) / "fake.json"
    path.write_text(json.dumps({"devices": devices, "state": None}))
    return FakeNvmlProvider.from_file(path)


def compare(
    rounds: int, steps: int, polls: dict[str, float], source: FakeNvmlProvider | None
) -> dict[str, dict[str, float]]:
    """Median seconds per step with no monitor ("off") and with one polling ``source`` (see
    ``_source``) at each of ``polls`` (name -> seconds), interleaved; and the polls each made."""
    profile = load_profile(DEMO, list(TINY))
    family = profile.family_spec
    bundle = family.build_data(profile.data, lambda s: None)
    seed_everything(0)
    model = family.build_model(profile.model, bundle.model_info)
    trainer = Trainer(
        model=model,
        train_set=bundle.train,
        val_set=None,
        cfg=profile.train,
        loss_weights=profile.loss_weights,
        checkpointer=None,
        device=torch.device("cpu"),
    )
    trainer.max_steps = 3  # warm-up, not timed
    trainer.train()
    # One thread: CPU seconds of this process, the monitor's thread included (its cost), which
    # other jobs on a shared machine skew far less than wall time.
    cpu_clock = not torch.cuda.is_available() and torch.get_num_threads() == 1
    clock = time.process_time if cpu_clock else time.perf_counter
    modes = ["off", *polls]
    times: dict[str, list[float]] = {m: [] for m in modes}
    seen = dict.fromkeys(modes, 0)
    for r in range(rounds):
        for which in modes if r % 2 == 0 else modes[::-1]:
            monitor, got = None, []
            if which != "off":  # a stopped monitor cannot restart: a new one per round
                poll = polls[which]
                monitor = GpuMonitor(source, poll_seconds=poll, process_poll_seconds=poll * 5)
                monitor.subscribe(got.append)
                monitor.start()
            trainer.max_steps = trainer.state.step + steps
            t0 = clock()
            trainer.train()
            times[which].append((clock() - t0) / steps)
            if monitor is not None:
                monitor.stop()
            seen[which] += len(got)
    return {
        m: {
            "step": statistics.median(times[m]),
            "ratio": statistics.median(paired_ratios(times[m], times["off"])),
            "polls": seen[m],
            "cpu_clock": cpu_clock,
        }
        for m in modes
    }


def monitor_cpu(source: FakeNvmlProvider | None, poll: float, seconds: float) -> float:
    """Milliseconds of CPU per poll of a ``GpuMonitor`` running alone (no training): the
    thread's own cost, which the on/off ratio (noise of a few percent here) cannot resolve."""
    got: list = []
    monitor = GpuMonitor(source, poll_seconds=poll, process_poll_seconds=poll * 5)
    monitor.subscribe(got.append)
    c0 = time.process_time()
    monitor.start()
    time.sleep(seconds)
    monitor.stop()
    return 1e3 * (time.process_time() - c0) / max(len(got), 1)


SUITE_SIZES = {"tiny": (1, 2), "quick": (4, 8), "full": (8, 12)}
"""Per suite size: (interleaved rounds, steps per round and mode)."""


def bench_rows(size: str = "full") -> list[Row]:
    """On over off at the GPU config's default interval (what the dashboard runs) and at the
    floor (the worst a lab's config allows)."""
    rounds, steps = SUITE_SIZES[size]
    polls = {"default": GpuConfig().settings.poll_seconds, "floor": MIN_POLL_SECONDS}
    fake = _source()
    got = compare(rounds, steps, polls, fake)
    seconds = 2.0 if size == "tiny" else 10.0
    alone = {which: monitor_cpu(fake, poll, seconds) for which, poll in polls.items()}
    source = "NVML" if torch.cuda.is_available() else "fake NVML (4 GPUs)"
    clock = "CPU s" if got["off"]["cpu_clock"] else "wall s"
    return [
        row(
            f"telemetry thread on vs off, poll {poll} s ({which}), demo/cp"
            + ("" if size == "full" else f" ({size})"),
            got[which]["step"] * 1e3,
            got["off"]["step"] * 1e3,
            a_is=f"engine step, GpuMonitor polling {source} every {poll} s",
            b_is="engine step, no monitor",
            unit="ms/step",
            target="<= 1.02",
            ratio=got[which]["ratio"],
            command=f"python bench/bench_telemetry.py --rounds {rounds} --steps {steps} "
            f"--poll {poll}",
            note=f"median of {rounds} paired rounds, {clock}; {got[which]['polls']} polls while "
            f"on; the monitor alone: {alone[which]:.2f} ms CPU per poll "
            f"({alone[which] / poll / 10:.2f}% of a core)",
        )
        for which, poll in polls.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--poll", type=float, default=MIN_POLL_SECONDS, help="seconds per poll")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fake = _source()
    got = compare(args.rounds, args.steps, {"on": args.poll}, fake)
    on, off = got["on"], got["off"]
    print(f"demo (tiny), torch threads {torch.get_num_threads()}, poll {args.poll} s")
    print(f"  monitor on : {on['step'] * 1e3:8.1f} ms/step ({on['polls']} polls)")
    print(f"  monitor off: {off['step'] * 1e3:8.1f} ms/step")
    print(f"  on / off = {on['ratio']:.3f}, the median of the rounds' ratios (target <= 1.02)")
    ms = monitor_cpu(fake, args.poll, 10.0)
    print(f"  the monitor alone: {ms:.2f} ms CPU per poll ({ms / args.poll / 10:.2f}% of a core)")


if __name__ == "__main__":
    main()
