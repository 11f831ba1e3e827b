"""Engine overhead: podium's training step against a bare torch loop, same model, same batches.

Both loops run in this one process, interleaved in rounds so that drift of the machine (thermal,
other load) hits both alike. The engine runs with its real subscribers (the SQLite store writer and
a progress printer to /dev/null); the bare loop does only forward, weighted loss sum, backward,
clip, AdamW step. Prints the median step time of each and their ratio (target <= 1.03).

    .venv/bin/python bench/bench_trainer.py [--profile profiles/demo.toml] [--rounds 6] [--steps 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from podium.engine.config import load_profile
from podium.engine.events import EventBus
from podium.engine.metrics import split_output
from podium.engine.sinks import LineSink, StoreSink
from podium.engine.store import StoreWriter
from podium.engine.trainer import Trainer, seed_everything


def bare_loop(model, dataset, index_lists, weights, cfg, lr_at, start_step: int) -> float:
    """Seconds for ``len(index_lists)`` optimizer steps of the plainest correct loop."""
    opt = bare_loop.opt
    t0 = time.perf_counter()
    for i, idx in enumerate(index_lists):
        batch = torch.utils.data.default_collate([dataset[j] for j in idx])
        for g in opt.param_groups:
            g["lr"] = lr_at(start_step + i)
        losses, _ = split_output(model(batch))
        loss = sum(losses[h] * w for h, w in weights.items())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="profiles/demo.toml")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per round and loop")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    profile = load_profile(args.profile)
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
        device=torch.device("cpu"),
    )
    bare_loop.opt = torch.optim.AdamW(
        bare_model.configure_optimizer_groups(cfg.weight_decay)
        if hasattr(bare_model, "configure_optimizer_groups")
        else bare_model.parameters(),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
    )

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

    engine_times, bare_times = [], []
    bare_step = 3
    for r in range(args.rounds):
        order = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
        for which in order:
            if which == "engine":
                start = trainer.state.step
                trainer.max_steps = start + args.steps
                t0 = time.perf_counter()
                trainer.train()
                engine_times.append((time.perf_counter() - t0) / args.steps)
            else:
                batches = batches_from(bare_step, args.steps)
                secs = bare_loop(
                    bare_model,
                    bundle.train,
                    batches,
                    profile.loss_weights,
                    cfg,
                    trainer.schedule.lr_at,
                    bare_step,
                )
                bare_step += args.steps
                bare_times.append(secs / args.steps)
    writer.close()
    devnull.close()

    e, b = statistics.median(engine_times), statistics.median(bare_times)
    tokens = cfg.batch_size * cfg.grad_accum * profile.data.seq_len
    print(
        f"profile {args.profile}: batch {cfg.batch_size} x seq {profile.data.seq_len}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'loop':<10}{'median step (ms)':>18}{'tokens/s':>12}")
    print(f"{'bare':<10}{b * 1e3:>18.1f}{tokens / b:>12,.0f}")
    print(f"{'engine':<10}{e * 1e3:>18.1f}{tokens / e:>12,.0f}")
    print(
        f"ratio engine/bare = {e / b:.3f} (target <= 1.03; both load their batches inside the timing)"
    )


if __name__ == "__main__":
    main()
