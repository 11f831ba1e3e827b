"""Generation speed: the recurrent form of linear attention against naive recomputation.

All generate ``--tokens`` CP tokens with the demo profile's model (random weights, EOS disabled
so all run the full length, ``max_len`` raised to fit), same seed, one process, side by side:

- recurrent: ``podium.engine.families.cp.sampler.sample_one`` (``CPStepper``: the recurrent form of
  linear attention, constant state per token, weights folded for one-token steps). This is
  what the dashboard's preview runs, so its time is the preview's time (target for 1024
  tokens: <= 15 s on a 2-core CPU, <= 1.5 s on a GPU);
- recurrent, all threads: the same without the sampler's one-thread cap on the CPU;
- naive: at every token, the whole prefix through ``model.hidden`` (what a model without a cache
  does), then the same two-stage sampling (``--no-naive`` skips it: at emopia-cp's size it
  takes hours).

Rounds alternate them, so load on a shared machine hits all alike; prints the median wall and
CPU time and tokens/s of each and the ratios of the medians (target >= 10x at 1024 tokens).

    .venv/bin/python bench/bench_generate.py [--tokens 1024] [--size demo|medium|emopia]
        [--rounds 3] [--no-naive] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report_rows import Row, row  # noqa: E402

from podium.engine.config import load_profile  # noqa: E402
from podium.engine.families.cp import vocab as V  # noqa: E402
from podium.engine.families.cp.model import CPTransformer  # noqa: E402
from podium.engine.families.cp.sampler import (  # noqa: E402
    _sample_batch,
    cpu_matrices,
    sample_one,
)
from podium.engine.families.cp.stepper import CPStepper  # noqa: E402
from podium.engine.families.cp.tokens import emotion_token  # noqa: E402
from podium.engine.families.registry import SampleRequest  # noqa: E402
from podium.engine.generate import sample_logits  # noqa: E402

TYPE = V.FIELDS.index("type")


SIZES = {
    "demo": ("demo", []),
    "medium": (
        "demo",
        ["model.d_model=256", "model.n_layers=6", "model.n_heads=8", "model.d_ff=1024"],
    ),
    "emopia": ("emopia-cp", []),
}
"""Profile and overrides. ``demo``: the demo profile's model as it is; ``medium``: a mid-size CP
model (a few M parameters), where the prefix recomputation costs what it costs real models;
``emopia``: the emopia-cp profile's model (~39M parameters, its [generate] table)."""


def build(tokens: int, size: str = "demo") -> tuple[CPTransformer, object]:
    name, extra = SIZES[size]
    over = [f"model.max_len={tokens + 1}", f"data.seq_len={min(256, tokens)}", *extra]
    profile = load_profile(ROOT / "profiles" / f"{name}.toml", over)
    torch.manual_seed(0)
    model = CPTransformer(profile.model, V.vocab_sizes()).eval()
    with torch.no_grad():
        model.heads[TYPE].bias[V.TYPE_EOS] = -1e4  # never end early
    return model, profile.section("generate")


@torch.no_grad()
def naive(model: CPTransformer, cfg, tokens: int, seed: int) -> int:
    gen = np.random.Generator(np.random.PCG64(seed))
    device = next(model.parameters()).device
    x = torch.as_tensor(emotion_token("Q1", "C:maj"), device=device).view(1, 1, -1)
    t, p = cfg.temperature, cfg.top_p
    for _ in range(tokens):
        h = model.hidden(x)[:, -1]  # the whole prefix again
        kind = sample_logits(model.type_logits(h), t, p, gen, "type")
        rest = model.field_logits(
            h, torch.tensor([kind], device=device), x[:, 0, V.FIELDS.index("key")]
        )
        row = torch.zeros(len(V.FIELDS), dtype=torch.long, device=device)
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

    if size != "tiny":
        rows.extend(emopia_preview_rows(tokens, label))

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


def emopia_preview_rows(tokens: int, label: str) -> list[Row]:
    """The preview of emopia-cp's 39M model as the sampler takes it (wall seconds), against the
    same with float32 matrices (target for 1024 tokens: <= 15 s on a CPU, <= 1.5 s on a GPU)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg = build(tokens, "emopia")
    model.to(device)
    f32 = replace(cfg, cpu_weights="float32")
    req = SampleRequest(
        conditioning={"emotion": "Q1", "key": "C:maj"}, bars=None, tokens=tokens, seed=0
    )
    # As ``podium generate`` runs it: torch's own thread count (one per usable CPU), which the
    # sampler lowers to its share; the suite's --threads would pin it.
    from podium.engine.cpu_share import usable_cpus

    suite_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(usable_cpus())))
    try:
        sample_one(model, cfg, replace(req, tokens=8))  # warm up
        preview, _, _ = timed(sample_one, model, cfg, req)
        exact, _, _ = timed(sample_one, model, f32, req)
    finally:
        torch.set_num_threads(suite_threads)
    target = (15.0 if device.type == "cpu" else 1.5) * tokens / 1024
    matrices = cpu_matrices(cfg, model, device)
    command = f"python bench/bench_generate.py --size emopia --tokens {tokens} --no-naive"
    return [
        row(
            f"preview {tokens} tokens: emopia-cp (39M) vs its time budget{label}",
            preview,
            target,
            a_is=f"sample_one as the preview runs it ({matrices or 'the model dtype'} matrices)",
            b_is=f"the issue's budget, {'15' if device.type == 'cpu' else '1.5'} s per 1024 tokens",
            unit="s",
            target="<= 1",
            command=command,
        ),
        row(
            f"preview {tokens} tokens: emopia-cp float32 vs the preview's matrices{label}",
            exact,
            preview,
            a_is="sample_one, cpu_weights = float32",
            b_is=f"sample_one as the preview runs it ({matrices or 'the model dtype'} matrices)",
            unit="s",
            command=command,
            note=logit_gap(model),
        ),
    ]


@torch.no_grad()
def logit_gap(model: CPTransformer, tokens: int = 64) -> str:
    """How far the bfloat16 matrices move the logits: the first ``tokens`` steps of one
    token sequence (a fixed random one) through the float32 and the bfloat16 stepper."""
    gen = torch.Generator().manual_seed(0)
    sizes = V.vocab_sizes()
    x = torch.stack([torch.randint(0, sizes[f], (tokens,), generator=gen) for f in V.FIELDS], 1)
    out = {}
    for dtype in (None, torch.bfloat16):
        stepper = CPStepper(model, matrices=dtype)
        state = stepper.init_state(1, next(model.parameters()).device)
        logits = []
        for pos in range(tokens):
            h, state = stepper.step(x[pos : pos + 1], state, pos)
            logits.append(stepper.heads(h))
        out[dtype] = torch.cat(logits)
    gap = (out[None] - out[torch.bfloat16]).abs()
    n = stepper.n_type
    same = (out[None][:, :n].argmax(1) == out[torch.bfloat16][:, :n].argmax(1)).float().mean()
    return (
        f"logits over {tokens} steps differ by {gap.max():.3g} at most ({gap.mean():.2g} mean; "
        f"their spread {out[None][out[None] > -1e3].std():.3g}); same top type in {100 * same:.0f}%"
    )


def all_threads(model: CPTransformer, cfg, req: SampleRequest):
    """``sample_one`` without its thread choice on the CPU (the sampler's inner loop, on the
    process's threads)."""
    return _sample_batch(model, cfg, [req], next(model.parameters()).device)[0]


def timed(fn, *args) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, result); CUDA synchronised."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--no-naive", action="store_true", help="skip the prefix recomputation")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model, cfg = build(args.tokens, args.size)
    model.to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    sample_one(model, cfg, SampleRequest(tokens=16, bars=None))  # warm up
    forms = {"recurrent (the preview):": lambda req: sample_one(model, cfg, req)}
    matrices = cpu_matrices(cfg, model, torch.device(args.device))
    if matrices is not None:  # the preview's bfloat16 matrices against float32 ones
        f32 = replace(cfg, cpu_weights="float32")
        forms["recurrent, float32 matrices:"] = lambda req: sample_one(model, f32, req)
    if torch.device(args.device).type == "cpu" and torch.get_num_threads() > 1:
        forms[f"recurrent, {torch.get_num_threads()} threads:"] = lambda req: all_threads(
            model, cfg, req
        )
    if not args.no_naive:
        forms["naive (recompute prefix):"] = lambda req: naive(model, cfg, args.tokens, req.seed)
    wall: dict[str, list[float]] = {name: [] for name in forms}
    cpu: dict[str, list[float]] = {name: [] for name in forms}
    for r in range(args.rounds):  # interleaved, so drift of a shared machine hits all alike
        req = SampleRequest(
            conditioning={"emotion": "Q1", "key": "C:maj"}, bars=None, tokens=args.tokens, seed=r
        )
        for name, fn in forms.items():
            w, c, out = timed(fn, req)
            made = out if isinstance(out, int) else len(out.tokens) - 1
            assert made == args.tokens, (name, made)
            wall[name].append(w)
            cpu[name].append(c)
    if matrices is not None:
        print(f"  the preview's matrices: {matrices}; {logit_gap(model)}")
    print(
        f"CP model, {args.size} size ({n_params / 1e6:.2f}M parameters), {args.tokens} tokens, "
        f"{args.device}, torch threads {torch.get_num_threads()}, median of {args.rounds} "
        f"interleaved rounds (wall; CPU seconds of this process):"
    )
    for name in forms:
        s, c = statistics.median(wall[name]), statistics.median(cpu[name])
        spread = f"{min(wall[name]):.2f}-{max(wall[name]):.2f}"
        print(
            f"  {name:<28} {s:7.2f} s ({spread}; CPU {c:6.2f} s)  {args.tokens / s:8.0f} tokens/s"
        )
    first = statistics.median(next(iter(wall.values())))
    target = 15.0 if torch.device(args.device).type == "cpu" else 1.5
    print(f"  preview: {first:.2f} s for {args.tokens} tokens (target <= {target:g} s)")
    for name in list(forms)[1:]:
        ratio = statistics.median(wall[name]) / first
        note = " (target >= 10x)" if name.startswith("naive") else ""
        print(f"  {name.rstrip(':')} / recurrent: {ratio:.1f}x{note}")


if __name__ == "__main__":
    main()
