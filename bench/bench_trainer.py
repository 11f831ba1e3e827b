"""Engine overhead: podium's training step against a bare torch loop, same model, same batches.

Both loops run in this one process, interleaved in rounds so that drift of the machine (thermal,
other load) hits both alike. The engine runs with its real subscribers (the SQLite store writer and
a progress printer to /dev/null); the bare loop does only forward, weighted loss sum, backward,
clip, AdamW step. Prints the median step time of each and the median of the rounds' ratios, the
engine's time over the bare loop's next to it (target <= 1.03).

    .venv/bin/python bench/bench_trainer.py [--profile profiles/demo.toml] [--set KEY=VALUE ...]
        [--rounds 6] [--steps 15]

The suite (``bench/run.py``) calls ``bench_rows``: every family at tiny settings (``FAMILIES``).
Validation is off in the measured window (``train.val_every_steps=0``): the bare loop has none.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from report_rows import Row, paired_ratios, row

from podium.engine.config import load_profile
from podium.engine.events import EventBus
from podium.engine.metrics import split_output
from podium.engine.mfu import count_flops, mfu, peak_flops
from podium.engine.sinks import LineSink, StoreSink
from podium.engine.store import StoreWriter
from podium.engine.trainer import Trainer, _batch_tokens, _optimizer_groups, seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync() -> None:
    """Wait for the GPU's queued work, so a clock read after it has seen it done."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, dataset, index_lists, weights, cfg, lr_at, start_step: int) -> float:
    """Seconds for ``len(index_lists)`` optimizer steps of the plainest correct loop, in the
    engine's precision (``bare_loop.amp``: its autocast dtype, None for float32)."""
    opt, amp = bare_loop.opt, bare_loop.amp
    t0 = time.perf_counter()
    for i, idx in enumerate(index_lists):
        batch = torch.utils.data.default_collate([dataset[j] for j in idx])
        batch = {
            k: v.to(DEVICE, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        for g in opt.param_groups:
            g["lr"] = lr_at(start_step + i)
        with torch.autocast(DEVICE.type, dtype=amp) if amp else contextlib.nullcontext():
            losses, _ = split_output(model(batch))
            loss = sum(losses[h] * w for h, w in weights.items())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync()
    return time.perf_counter() - t0


FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "demo/cp": ("profiles/demo.toml", ("data.n_pieces=48", "data.bars=4", "data.seq_len=64")),
    "music-transformer-small": (
        "profiles/music-transformer-small.toml",
        ("data.n_pieces=48", "data.bars=4", "data.seq_len=64", "model.max_len=64"),
    ),
    "amt-gpt2-small": (
        "profiles/amt-gpt2-small.toml",
        ("data.n_pieces=48", "data.bars=4", "data.seq_len=64", "model.max_len=64"),
    ),
    "midikompanion": ("profiles/midikompanion.toml", ("data.examples=2000",)),
    "chord-recognition": (
        "profiles/chord-recognition.toml",
        ("data.n_train=128", "data.n_val=16", "data.clip_seconds=0.5", "train.batch_size=16"),
    ),
}
"""The suite's families at tiny settings: the engine's overhead, not the model, is measured."""


def compare_loops(
    profile_path: str | Path, overrides: tuple[str, ...] | list[str], rounds: int, steps: int
) -> dict[str, float]:
    """Median seconds per step of the engine and of the bare loop, interleaved in rounds, and
    the engine's tokens per step (0 for a family whose batches carry no token count)."""
    # Epochs enough for every round: a schedule that ends inside the rounds would time nothing.
    quiet = ["train.val_every_steps=0", "train.epochs=100000"]
    profile = load_profile(profile_path, [*quiet, *overrides])
    family = profile.family_spec
    bundle = family.build_data(profile.data, lambda s: None)
    cfg = profile.train

    seed_everything(0)
    engine_model = family.build_model(profile.model, bundle.model_info)
    seed_everything(0)
    bare_model = family.build_model(profile.model, bundle.model_info)
    bare_model.load_state_dict(engine_model.state_dict())
    bare_model.train()

    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-"))
    bus = EventBus()
    writer = StoreWriter(tmp / "metrics.db")
    bus.subscribe(StoreSink(writer))
    devnull = open(os.devnull, "w")  # noqa: SIM115
    bus.subscribe(LineSink(devnull, interval=3.0))
    trainer = Trainer(
        model=engine_model,
        train_set=bundle.train,
        val_set=None,
        cfg=cfg,
        loss_weights=profile.loss_weights,
        checkpointer=None,
        bus=bus,
        device=DEVICE,
    )
    # The engine's own parameter groups (decay only on matrices), so both optimizers do the same.
    # The engine's optimizer (fused on a GPU) and precision, so both loops do the same maths.
    bare_model.to(DEVICE)
    bare_loop.opt = torch.optim.AdamW(
        _optimizer_groups(bare_model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=DEVICE.type == "cuda" or None,
    )
    bare_loop.amp = trainer.amp_dtype

    def batches_from(step: int, n: int) -> list[list[int]]:
        """The exact micro-batches (example indices) the engine draws for steps [step, step + n)."""
        spe = trainer.steps_per_epoch
        return [trainer._epoch_batches(s // spe, s % spe)[0] for s in range(step, step + n)]

    # Warm-up both (allocator, first-call costs), not timed.
    trainer.max_steps = 3
    trainer.train()
    bare_loop(
        bare_model,
        bundle.train,
        batches_from(0, 3),
        profile.loss_weights,
        cfg,
        trainer.schedule.lr_at,
        0,
    )

    # One thread on a CPU: CPU seconds of this process (the engine's writer and bus threads
    # included), which other jobs on a shared machine skew far less than wall time; wall too.
    cpu_clock = DEVICE.type == "cpu" and torch.get_num_threads() == 1
    clock = time.process_time if cpu_clock else time.perf_counter
    times: dict[str, list[float]] = {"engine": [], "bare": []}
    walls: dict[str, list[float]] = {"engine": [], "bare": []}
    bare_step = 3
    tokens0 = trainer.state.tokens_seen
    for r in range(rounds):
        order = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
        for which in order:
            _sync()
            t0, w0 = clock(), time.perf_counter()
            if which == "engine":
                trainer.max_steps = trainer.state.step + steps
                trainer.train()
                # The writer thread's commits of these steps inside their timing: left to its
                # own pace, their CPU time landed in the next round, the bare loop's as often.
                writer.flush(timeout=60)
                _sync()
            else:
                batches = batches_from(bare_step, steps)
                bare_loop(
                    bare_model,
                    bundle.train,
                    batches,
                    profile.loss_weights,
                    cfg,
                    trainer.schedule.lr_at,
                    bare_step,
                )
                bare_step += steps
            times[which].append((clock() - t0) / steps)
            walls[which].append((time.perf_counter() - w0) / steps)
    tokens_per_step = (trainer.state.tokens_seen - tokens0) / (rounds * steps)
    writer.close()
    devnull.close()
    shutil.rmtree(tmp, ignore_errors=True)
    paired = paired_ratios(times["engine"], times["bare"])
    return {
        "engine": statistics.median(times["engine"]),
        "bare": statistics.median(times["bare"]),
        "ratio": statistics.median(paired),
        "spread": (min(paired), max(paired)),
        "wall_ratio": statistics.median(paired_ratios(walls["engine"], walls["bare"])),
        "clock": "CPU s" if cpu_clock else "wall s",
        "tokens_per_step": tokens_per_step,
        "params": sum(p.numel() for p in engine_model.parameters()),
        "model": engine_model,
        "batch": {
            k: v.to(DEVICE) if torch.is_tensor(v) else v
            for k, v in torch.utils.data.default_collate(
                [bundle.train[j] for j in batches_from(0, 1)[0]]
            ).items()
        },
    }


def mfu_note(model: torch.nn.Module, batch: dict, tokens_per_step: float, step_s: float) -> str:
    """MFU of the engine's step: the model's training FLOPs per token (torch's FLOP counter on
    one batch, ``podium.engine.mfu``) x the measured tokens/s, over the device's peak; where
    the peak is unknown (a CPU, unless ``PODIUM_PEAK_TFLOPS`` names it), the achieved GFLOP/s."""
    tokens = float(_batch_tokens(batch))
    count = count_flops(model, batch, tokens)
    achieved = count.train_per_token * tokens_per_step / step_s  # FLOP/s
    peak = peak_flops(DEVICE)
    value = mfu(count.train_per_token, tokens_per_step / step_s, peak)
    per = "token" if "mask" in batch else "example"  # the loop counts examples without a mask
    got = f"{count.train_per_token / 1e6:,.2f} MFLOP/{per}, {achieved / 1e9:,.2f} GFLOP/s"
    if value is None:
        return f"MFU n/a on {DEVICE.type}: no peak FLOPs known ({got})"
    return f"MFU {100 * value:.2f}% ({got}, peak {peak / 1e12:g} TFLOP/s)"


SUITE_SIZES = {"tiny": (1, 2), "quick": (4, 5), "full": (10, 16)}
"""Per suite size: (interleaved rounds, optimizer steps per round and loop)."""


def bench_rows(size: str = "full") -> list[Row]:
    """One row per family: the engine's median step time over the bare loop's (target <= 1.03)."""
    rounds, steps = SUITE_SIZES[size]
    rows = []
    for name, (profile, overrides) in FAMILIES.items():
        got = compare_loops(ROOT / profile, overrides, rounds, steps)
        tps = got["tokens_per_step"]
        per = "tokens" if "mask" in got["batch"] else "examples"
        lo, hi = got["spread"]
        note = f"median of {rounds} paired rounds ({lo:.3f}-{hi:.3f}), {got['clock']}; "
        note += f"wall ratio {got['wall_ratio']:.3f}; "
        note += f"{got['params'] / 1e6:.2f}M params, {tps / got['engine']:,.0f} {per}/s; "
        note += mfu_note(got["model"], got["batch"], tps, got["engine"])
        over = " ".join(f"--set {o}" for o in overrides)
        rows.append(
            row(
                f"engine vs bare step, {name}" + ("" if size == "full" else f" ({size})"),
                got["engine"] * 1e3,
                got["bare"] * 1e3,
                a_is="podium's Trainer step (store + progress subscribers)",
                b_is="bare torch loop, same model and batches",
                unit="ms/step",
                target="<= 1.03",
                ratio=got["ratio"],
                command=f"python bench/bench_trainer.py --profile {profile} {over} "
                f"--rounds {rounds} --steps {steps}",
                note=note,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="profiles/demo.toml")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per round and loop")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    got = compare_loops(args.profile, args.overrides, args.rounds, args.steps)
    e, b, tokens = got["engine"], got["bare"], got["tokens_per_step"]
    lo, hi = got["spread"]
    print(f"profile {args.profile}: torch threads {torch.get_num_threads()}")
    print(f"{'loop':<10}{'median step (ms)':>18}{'tokens/s':>12}")
    print(f"{'bare':<10}{b * 1e3:>18.1f}{tokens / b:>12,.0f}")
    print(f"{'engine':<10}{e * 1e3:>18.1f}{tokens / e:>12,.0f}")
    print(
        f"ratio engine/bare = {got['ratio']:.3f}, the median of {args.rounds} rounds' ratios "
        f"({lo:.3f}-{hi:.3f}; target <= 1.03; both load their batches inside the timing)"
    )


if __name__ == "__main__":
    main()
