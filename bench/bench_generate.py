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

from report_rows import Row, row  # noqa: E402

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
    over = [f"model.max_len={tokens + 1}", f"data.seq_len={min(256, tokens)}", *SIZES[size]]
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


# -- the suite's rows: CP, GPT-2 (amt) and Music Transformer, cached vs recomputed -------------


SUITE_SIZES = {"tiny": (16, 4), "quick": (256, 16), "full": (1024, 16)}
"""Per suite size: (tokens generated, the Music Transformer's recompute stride)."""


def _clock() -> float:
    """CPU seconds of this process on a CPU (one thread: load skews it least), else wall."""
    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


def bench_rows(size: str = "full") -> list[Row]:
    """Each model family's cached generation against recomputing the prefix at every token,
    same model, same seed, one after the other in this process (target >= 10x at 1024)."""
    from bench_gpt2 import SIZES as GPT2_SIZES
    from bench_gpt2 import generate as gpt2_generate
    from bench_relative_attention import generation as mt_generation

    from podium.engine.families.amt.model import GPT2

    tokens, stride = SUITE_SIZES[size]
    label = "" if size == "full" else f" ({size})"
    target = ">= 10" if tokens >= 1024 else None
    rows: list[Row] = []

    model, cfg = build(tokens)
    sample_one(model, cfg, SampleRequest(tokens=8, bars=None))  # warm up
    req = SampleRequest(
        conditioning={"emotion": "Q1", "key": "C:maj"}, bars=None, tokens=tokens, seed=0
    )
    t0 = _clock()
    assert len(sample_one(model, cfg, req).tokens) - 1 == tokens
    rec = _clock() - t0
    t0 = _clock()
    assert naive(model, cfg, tokens, 0) == tokens
    slow = _clock() - t0
    rows.append(
        row(
            f"generation {tokens} tokens: CP recompute vs recurrent state, demo size{label}",
            slow,
            rec,
            a_is="whole prefix through model.hidden at every token",
            b_is="sample_one: recurrent linear attention (constant state)",
            unit="s",
            target=target,
            command=f"python bench/bench_generate.py --tokens {tokens} --rounds 1",
        )
    )

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    gpt2 = GPT2(GPT2_SIZES["small"], 512).to(device).eval()
    n = min(tokens, GPT2_SIZES["small"].max_len - 2)
    gpt2_generate(gpt2, 8, cached=True, device=device)  # warm up
    t0 = _clock()
    fast = gpt2_generate(gpt2, n, cached=True, device=device)
    cached = _clock() - t0
    t0 = _clock()
    slow_tokens = gpt2_generate(gpt2, n, cached=False, device=device)
    recomputed = _clock() - t0
    same = sum(a == b for a, b in zip(fast, slow_tokens, strict=True))
    rows.append(
        row(
            f"generation {n} tokens: GPT-2 (amt) recompute vs KV cache, small size{label}",
            recomputed,
            cached,
            a_is="whole prefix through the model at every token (greedy)",
            b_is="the model's key-value cache, one token per step (greedy)",
            unit="s",
            target=target,
            command=f"python bench/bench_gpt2.py --gen-size small --tokens {n} --skip training",
            note=f"same greedy tokens: {same} of {n}",
        )
    )

    cached, recomputed, diff = mt_generation("small", tokens, stride)
    rows.append(
        row(
            f"generation {tokens} tokens: Music Transformer recompute vs cache, small size{label}",
            recomputed,
            cached,
            a_is=f"full forward over the prefix (every {stride}th timed, x {stride})",
            b_is="MusicTransformer.step with cached keys, values and relative rows",
            unit="s",
            target=target,
            command=f"python bench/bench_relative_attention.py --tokens {tokens} --stride {stride}",
            note=f"last logits differ by {diff:.1e}",
        )
    )
    return rows


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
