"""Generation speed: the recurrent form of linear attention against naive recomputation.

Both generate ``--tokens`` CP tokens with the demo profile's model (random weights, EOS disabled
so both run the full length, ``max_len`` raised to fit), same seed, one process, side by side:

- recurrent: ``podium.engine.families.cp.sampler.sample_one`` (``CPStepper``: the recurrent form of linear attention,
  constant state per token, weights folded for one-token steps);
- naive: at every token, the whole prefix through ``model.hidden`` (what a model without a cache
  does), then the same two-stage sampling.

Rounds alternate the two, so load on a shared machine hits both alike; prints the median
time and tokens/s of each and the ratio of the medians (target >= 10x at 1024 tokens).

    .venv/bin/python bench/bench_generate.py [--tokens 1024] [--size demo|medium] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from podium.engine.config import load_profile  # noqa: E402
from podium.engine.families.cp import vocab as V  # noqa: E402
from podium.engine.families.cp.model import CPTransformer  # noqa: E402
from podium.engine.families.cp.sampler import sample_one  # noqa: E402
from podium.engine.families.cp.tokens import emotion_token  # noqa: E402
from podium.engine.families.registry import SampleRequest  # noqa: E402
from podium.engine.generate import sample_logits  # noqa: E402

TYPE = V.FIELDS.index("type")


SIZES = {
    "demo": [],
    "medium": ["model.d_model=256", "model.n_layers=6", "model.n_heads=8", "model.d_ff=1024"],
}
"""``demo``: the demo profile's model as it is; ``medium``: a mid-size CP model (a few M
parameters), where the prefix recomputation costs what it costs real models."""


def build(tokens: int, size: str = "demo") -> tuple[CPTransformer, object]:
    over = [f"model.max_len={tokens + 1}", *SIZES[size]]
    profile = load_profile(ROOT / "profiles" / "demo.toml", over)
    torch.manual_seed(0)
    model = CPTransformer(profile.model, V.vocab_sizes()).eval()
    with torch.no_grad():
        model.heads[TYPE].bias[V.TYPE_EOS] = -1e4  # never end early
    return model, profile.section("generate")


@torch.no_grad()
def naive(model: CPTransformer, cfg, tokens: int, seed: int) -> int:
    gen = np.random.Generator(np.random.PCG64(seed))
    x = torch.as_tensor(emotion_token("Q1", "C:maj")).view(1, 1, -1)
    t, p = cfg.temperature, cfg.top_p
    for _ in range(tokens):
        h = model.hidden(x)[:, -1]  # the whole prefix again
        kind = sample_logits(model.type_logits(h), t, p, gen, "type")
        rest = model.field_logits(h, torch.tensor([kind]), x[:, 0, V.FIELDS.index("key")])
        row = torch.zeros(len(V.FIELDS), dtype=torch.long)
        row[TYPE] = kind
        for i, f in enumerate(V.FIELDS):
            if i != TYPE:
                row[i] = sample_logits(rest[f], t, p, gen, f)
        x = torch.cat([x, row.view(1, 1, -1)], dim=1)
    return x.shape[1] - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    args = parser.parse_args()
    model, cfg = build(args.tokens, args.size)
    n_params = sum(p.numel() for p in model.parameters())
    sample_one(model, cfg, SampleRequest(tokens=16, bars=None))  # warm up
    rec, slow = [], []
    for r in range(args.rounds):  # interleaved, so drift of a shared machine hits both alike
        req = SampleRequest(
            conditioning={"emotion": "Q1", "key": "C:maj"}, bars=None, tokens=args.tokens, seed=r
        )
        t0 = time.perf_counter()
        sample = sample_one(model, cfg, req)
        rec.append(time.perf_counter() - t0)
        assert len(sample.tokens) - 1 == args.tokens, sample.ended
        t0 = time.perf_counter()
        assert naive(model, cfg, args.tokens, r) == args.tokens
        slow.append(time.perf_counter() - t0)
    rec_s, naive_s = statistics.median(rec), statistics.median(slow)
    print(
        f"CP model, {args.size} size ({n_params / 1e6:.2f}M parameters), {args.tokens} tokens, "
        f"median of {args.rounds} interleaved rounds:"
    )
    for name, s, runs in (
        ("recurrent (constant state):", rec_s, rec),
        ("naive (recompute prefix):  ", naive_s, slow),
    ):
        spread = f"{min(runs):.2f}-{max(runs):.2f}"
        print(f"  {name}  {s:7.2f} s ({spread})  {args.tokens / s:8.0f} tokens/s")
    print(f"  speed-up: {naive_s / rec_s:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
