"""Training speed of the CP model per attention backend: tokens/s of forward + backward + AdamW.

Builds the emopia-cp profile's model (~39M parameters, sequence 1024; ``--size demo`` for the
demo's) once per backend with the same weights, and trains each on the same random batches,
interleaved in rounds so drift hits all alike: ``torch`` (the pure-torch chunked form) against
``fla`` (flash-linear-attention's Triton kernel) and ``fast_transformers``, those that are
importable on this device. Under bf16 autocast on CUDA (``--precision``), as a profile's
``precision = "auto"`` trains there. Prints each backend's median tokens/s and the ratio to torch.

    .venv/bin/python bench/bench_attention_backends.py [--size emopia|demo] [--batch 4]
        [--seq 1024] [--steps 5] [--rounds 3] [--device cuda] [--precision bf16|fp32]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podium.engine.config import load_profile  # noqa: E402
from podium.engine.families.cp import vocab as V  # noqa: E402
from podium.engine.families.cp.model import CPTransformer  # noqa: E402
from podium.engine.models.linear_attention import resolve_backend  # noqa: E402

PROFILES = {"emopia": "emopia-cp", "demo": "demo"}


def batch(B: int, T: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Random valid tokens per field: the cost does not depend on what they say."""
    g = torch.Generator().manual_seed(seed)
    sizes = V.vocab_sizes()
    toks = torch.stack(
        [torch.randint(0, sizes[f], (B, T + 1), generator=g) for f in V.FIELDS], dim=-1
    )
    return {
        "x": toks[:, :-1].to(device),
        "y": toks[:, 1:].to(device),
        "mask": torch.ones(B, T, device=device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PROFILES), default="emopia")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = load_profile(
        ROOT / "profiles" / f"{PROFILES[args.size]}.toml",
        [f"model.max_len={args.seq}", f"data.seq_len={args.seq}"],
    )
    backends = ["torch"]
    for name in ("fla", "fast_transformers"):
        try:
            resolve_backend(name, device)
        except ValueError as exc:
            print(f"  ({name}: skipped: {exc})")
        else:
            backends.append(name)
    models, optims = {}, {}
    for name in backends:
        torch.manual_seed(0)  # the same weights for every backend
        cfg = dataclasses.replace(profile.model, attention_backend=name, dropout=0.0)
        models[name] = CPTransformer(cfg, V.vocab_sizes()).to(device).train()
        optims[name] = torch.optim.AdamW(models[name].parameters(), lr=1e-4)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.precision == "bf16"
        else contextlib.nullcontext()
    )
    batches = [batch(args.batch, args.seq, device, s) for s in range(args.steps)]

    def train(name: str) -> float:
        model, opt = models[name], optims[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches:
            with autocast:
                loss = sum(model(b).values())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for name in backends:  # warm-up: Triton compiles, allocator settles
        train(name)
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(args.rounds):
        for name in backends:
            times[name].append(train(name))
    tokens = args.batch * args.seq * args.steps
    n_params = sum(p.numel() for p in models["torch"].parameters())
    print(
        f"CP model {args.size} ({n_params / 1e6:.1f}M parameters), batch {args.batch} x "
        f"{args.seq} tokens, {args.precision}, {device}, {args.steps} steps a round, median "
        f"of {args.rounds} interleaved rounds:"
    )
    base = statistics.median(times["torch"])
    for name in backends:
        med = statistics.median(times[name])
        print(f"  {name:<18} {tokens / med:10.0f} tokens/s   {base / med:5.2f}x torch")


if __name__ == "__main__":
    main()
