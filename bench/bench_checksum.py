"""What a checkpoint's integrity checks cost on the EMOPIA-size CP model (~39.2M parameters).

Measured side by side in one run, best of ``--repeat``, on the state a CP run saves (weights plus
AdamW's two moments after one step):

1. ``state_checksum`` of the weights alone and of weights + optimizer (what every save and every
   load pays), with the raw SHA-256 and blake2b rates on the same number of bytes for reference;
2. ``nonfinite_weights`` (the sum-based check every save pays) against ``isfinite().all()`` per
   tensor, the obvious way;
3. ``torch.save`` of the same state to ``--tmp`` (what a save costs without the checks), so the
   checks read as a fraction of it.

    .venv/bin/python bench/bench_checksum.py [--repeat 3] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from podium.engine.checkpoints import nonfinite_weights, state_checksum
from podium.engine.config import load_profile
from podium.engine.families.cp import vocab
from podium.engine.families.cp.model import CPTransformer

ROOT = Path(__file__).resolve().parents[1]


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()

    profile = load_profile(ROOT / "profiles" / "emopia-cp.toml")
    model = CPTransformer(profile.model, vocab.vocab_sizes())
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    weights = model.state_dict()
    full = {"model": weights, "optimizer": optimizer.state_dict()}
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    print(f"model: {n_params / 1e6:.1f}M parameters, {n_bytes / 1e6:.0f} MB of weights")

    r = args.repeat
    weights_ms = best_ms(lambda: state_checksum({"model": weights}), r)
    full_ms = best_ms(lambda: state_checksum(full), r)
    buf = bytes(n_bytes)
    sha_ms = best_ms(lambda: hashlib.sha256(buf).digest(), r)
    blake_ms = best_ms(lambda: hashlib.blake2b(buf).digest(), r)
    print(f"state_checksum, weights:             {weights_ms:7.0f} ms")
    print(f"state_checksum, weights + optimizer: {full_ms:7.0f} ms")
    print(f"raw sha256 / blake2b on the weights: {sha_ms:7.0f} / {blake_ms:.0f} ms")

    sum_ms = best_ms(lambda: nonfinite_weights(full), r)
    naive_ms = best_ms(lambda: [bool(torch.isfinite(t).all()) for t in weights.values()], r)
    print(f"nonfinite_weights:                   {sum_ms:7.0f} ms")
    print(f"isfinite().all() per tensor:         {naive_ms:7.0f} ms ({naive_ms / sum_ms:.0f}x)")

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "state.pt"
        save_ms = best_ms(lambda: torch.save(full, path), r)
        size = path.stat().st_size
    print(f"torch.save of the state ({size / 1e6:.0f} MB):    {save_ms:7.0f} ms")
    print(f"checks / save: {(full_ms + sum_ms) / save_ms:.2f}")


if __name__ == "__main__":
    main()
