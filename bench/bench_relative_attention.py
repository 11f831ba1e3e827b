"""Relative attention: Huang et al.'s skewing vs the explicit L x L x D gather; cached
generation vs recomputing the prefix.

1. Causal relative self-attention, forward + backward, at 512/1024/2048 tokens (B=1, H=8,
   d_head=64, float32): the skewed form podium uses (``RelativeAttention``: Q E^T skewed into
   an additive mask for SDPA) against Shaw et al.'s explicit form (gather the (L, L, d)
   embeddings of every pair's distance, contract with Q, softmax by hand). Each measurement
   runs in its own fresh process, so its peak memory is the rise of that process's maximum
   resident set over what its inputs took; time is the median of ``--rounds`` after a warm-up.
2. Generating 1024 tokens, with the small profile's model (d_model 128, 3 layers) and at the
   published size (d_model 512, 6 layers, 8 heads, FFN 1024), both with max_len 1024:
   ``MusicTransformer.step`` with cached keys, values and relative rows, against a full forward
   pass over the prefix for every token (the public implementations' way). The recomputation is
   timed at every ``--stride``-th prefix length and scaled by the stride (its cost grows
   smoothly with the length); ``--stride 1`` times every one. Goal: >= 10x.

Times are CPU seconds of this process (``time.process_time``), single-threaded by default, so
a machine shared with other jobs skews the ratios less than wall time would.

    .venv/bin/python bench/bench_relative_attention.py [--lengths 512 1024 2048] [--rounds 3]

Measured 2026-12-01 on the shared 2-core CPU box (load 8-15), one thread:

       T  skewed s  explicit s  time x  skewed MiB  explicit MiB  memory x
     512     0.104       0.330     3.2          83           181       2.2
    1024     0.713       1.665     2.3         150           603       4.0
    2048     2.726       6.478     2.4         566          2359       4.2
    generating 1024 tokens: small model 2.45 s cached vs 76.3 s recomputed (31x);
    published size 12.3 s vs 514 s (42x); last logits equal within 1e-6.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from podium.engine.families.music_transformer.config import MusicTransformerConfig
from podium.engine.families.music_transformer.model import MusicTransformer
from podium.engine.models.relative_attention import explicit_relative_logits, skew


def skewed(q, k, v, table) -> torch.Tensor:
    """podium's form: (B, H, T, T) Q E^T, skewed, as SDPA's additive mask."""
    T, d = q.shape[-2], q.shape[-1]
    s = skew(q @ table[table.shape[0] - T :].transpose(0, 1))
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    bias = (s / math.sqrt(d)).masked_fill(causal, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def explicit(q, k, v, table) -> torch.Tensor:
    """Shaw et al.'s form: the (T, T, d) gather of every pair's relative embedding."""
    T, d = q.shape[-2], q.shape[-1]
    logits = (q @ k.transpose(-1, -2) + explicit_relative_logits(q, table)) / math.sqrt(d)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    return logits.masked_fill(causal, float("-inf")).softmax(dim=-1) @ v


FORMS = {"skewed": skewed, "explicit": explicit}


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(form: str, T: int, rounds: int, heads: int, dim: int) -> dict[str, float]:
    """One form at one length, in this (fresh) process: peak extra memory and median time."""
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(1, heads, T, dim, generator=g).requires_grad_() for _ in range(3))
    table = torch.randn(2048, dim, generator=g).requires_grad_()
    before = maxrss_bytes()
    fn = FORMS[form]

    def once() -> float:
        for t in (q, k, v, table):
            t.grad = None
        t0 = time.process_time()
        fn(q, k, v, table).sum().backward()
        return time.process_time() - t0

    once()  # warm-up: the peak of one forward + backward
    peak = maxrss_bytes() - before
    seconds = statistics.median(once() for _ in range(rounds))
    with torch.no_grad():
        ref = explicit(q, k, v, table) if form == "skewed" else None
        diff = (fn(q, k, v, table) - ref).abs().max().item() if ref is not None else 0.0
    return {"peak_bytes": peak, "seconds": seconds, "max_diff": diff}


SIZES = {
    "small": {"d_model": 128, "n_layers": 3, "n_heads": 4, "d_ff": 256},
    "published": {"d_model": 512, "n_layers": 6, "n_heads": 8, "d_ff": 1024},
}


def generation(size: str, tokens: int, stride: int) -> tuple[float, float, float]:
    """(cached seconds, recomputed seconds (scaled), max |logit difference| at the end)."""
    torch.manual_seed(0)
    cfg = MusicTransformerConfig(**SIZES[size], max_len=tokens, dropout=0.0)
    model = MusicTransformer(cfg, vocab_size=396, n_prefix=2).eval()
    x = torch.randint(0, 388, (1, tokens))
    with torch.inference_mode():
        t0 = time.process_time()
        caches = model.init_state(1)
        for t in range(tokens):
            z, caches = model.step(x[:, t], caches)
        cached = time.process_time() - t0
        recomputed = 0.0
        for t in range(stride, tokens + 1, stride):
            t0 = time.process_time()
            last = model.logits(x[:, :t])[:, -1]
            recomputed += time.process_time() - t0
        recomputed *= stride
        diff = (last - z).abs().max().item()  # the prefix of all `tokens`: both the same
    return cached, recomputed, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=16, help="small model (published: x4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--one", nargs=2, metavar=("FORM", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:  # a child: one measurement, as JSON
        form, T = args.one[0], int(args.one[1])
        print(json.dumps(measure(form, T, args.rounds, args.heads, args.dim)))
        return

    print(
        f"1. causal relative attention, forward + backward, B=1 H={args.heads} "
        f"d_head={args.dim}, float32, {args.threads} thread(s), median of {args.rounds}"
    )
    print(
        f"{'T':>6} {'skewed s':>9} {'explicit s':>11} {'time x':>7} "
        f"{'skewed MiB':>11} {'explicit MiB':>13} {'memory x':>9}  max |diff|"
    )
    for T in args.lengths:
        got = {}
        for form in FORMS:
            cmd = [sys.executable, __file__, "--one", form, str(T), "--rounds", str(args.rounds)]
            cmd += ["--heads", str(args.heads), "--dim", str(args.dim)]
            cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got[form] = json.loads(out.strip().splitlines()[-1])
        s, e = got["skewed"], got["explicit"]
        mib = 2**20
        print(
            f"{T:>6} {s['seconds']:>9.3f} {e['seconds']:>11.3f} "
            f"{e['seconds'] / s['seconds']:>7.1f} {s['peak_bytes'] / mib:>11.0f} "
            f"{e['peak_bytes'] / mib:>13.0f} {e['peak_bytes'] / max(s['peak_bytes'], 1):>9.1f}"
            f"  {s['max_diff']:.1e}"
        )

    print(f"\n2. generating {args.tokens} tokens, {args.threads} thread(s), CPU seconds")
    print(
        f"{'model':>10} {'cached s':>9} {'tokens/s':>9} {'recomputed s':>13} {'speed-up':>9}  note"
    )
    for size, stride in (("small", args.stride), ("published", 4 * args.stride)):
        cached, recomputed, diff = generation(size, args.tokens, stride)
        timed = f"every {stride}th prefix timed, x {stride}" if stride > 1 else "every prefix"
        print(
            f"{size:>10} {cached:>9.2f} {args.tokens / cached:>9.0f} {recomputed:>13.2f} "
            f"{recomputed / cached:>8.1f}x  {timed}; last logits differ by {diff:.1e}"
        )


if __name__ == "__main__":
    main()
