"""The amt family's GPT-2: KV-cached generation against recomputation, and podium's training
step against ``transformers``' GPT2LMHeadModel, measured side by side in one run.

1. Generation of ``--tokens`` tokens (default 1024, the report's context) after a 2-token
   prompt, greedy so both paths draw the same tokens: with the model's key-value cache (one
   token per step) and by recomputing the whole prefix every step (what a model without a cache
   does). Goal: the cache >= 10x faster at 1024 tokens. Prints whether the two made the same
   tokens.
2. One training step (forward, loss, backward, AdamW step) on the same batch, at the same size,
   for podium's ``GPT2`` and transformers' ``GPT2LMHeadModel`` (SDPA attention) with the same
   weights, interleaved (podium, transformers, podium, ...) so load drifts hit both alike. Goal:
   podium no slower (ratio transformers / podium >= 1).

Sizes: ``small`` (profiles/amt-gpt2-small.toml's widths, 1024 positions), ``medium`` (4 x 256)
or ``report`` (6
layers, 8 heads, 768 wide, 1024 positions). On a CPU, recomputing 1024 tokens at the report
size takes many minutes: use ``--gen-size small`` there and ``report`` on a GPU.

    .venv/bin/python bench/bench_gpt2.py [--gen-size small] [--train-size small] [--device cpu]
        [--tokens 1024] [--batch 8] [--seq 256] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from podium.engine.families.amt.config import GPT2Config  # noqa: E402
from podium.engine.families.amt.hf import GPT2Adapter, hf_config  # noqa: E402
from podium.engine.families.amt.model import GPT2  # noqa: E402

VOCAB = 512
SIZES = {
    "small": GPT2Config(n_layers=2, n_heads=4, d_model=64, d_ff=256, max_len=1024, dropout=0.0),
    "medium": GPT2Config(n_layers=4, n_heads=4, d_model=256, max_len=1024, dropout=0.0),
    "report": GPT2Config(n_layers=6, n_heads=8, d_model=768, max_len=1024, dropout=0.0),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def generate(model: GPT2, tokens: int, *, cached: bool, device: torch.device) -> list[int]:
    """Greedy ``tokens`` tokens after the prompt [START, SEMANTIC_0]."""
    seq = torch.tensor([[2, 4]], device=device)
    if cached:
        cache = model.new_cache(1, device)
        x = seq
        for _ in range(tokens):
            nxt = model.logits(x, cache)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            seq = torch.cat([seq, nxt], dim=1)
            x = nxt
    else:
        for _ in range(tokens):
            nxt = model.logits(seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    return seq[0, 2:].tolist()


def bench_generation(size: str, tokens: int, device: torch.device) -> None:
    cfg = SIZES[size]
    torch.manual_seed(0)
    model = GPT2(cfg, VOCAB).to(device).eval()
    n = min(tokens, cfg.max_len - 2)
    generate(model, 16, cached=True, device=device)  # warm-up
    generate(model, 16, cached=False, device=device)
    times, made = {}, {}
    for cached in (True, False):
        _sync(device)
        t0 = time.perf_counter()
        made[cached] = generate(model, n, cached=cached, device=device)
        _sync(device)
        times[cached] = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(made[True], made[False], strict=True))
    print(f"generation, {size} size ({model.num_parameters() / 1e6:.2f}M params), {n} tokens:")
    print(f"  KV cache      {times[True]:8.2f} s  ({n / times[True]:8.1f} tokens/s)")
    print(f"  recomputation {times[False]:8.2f} s  ({n / times[False]:8.1f} tokens/s)")
    print(f"  speed-up      {times[False] / times[True]:8.1f}x   (goal >= 10x)")
    print(f"  same tokens   {same} of {n}")


def bench_training(size: str, batch: int, seq: int, repeats: int, device: torch.device) -> None:
    import transformers

    cfg = SIZES[size]
    torch.manual_seed(0)
    ours = GPT2(cfg, VOCAB).to(device).train()
    hf_cfg = transformers.GPT2Config(**hf_config(cfg, VOCAB))
    theirs = transformers.GPT2LMHeadModel(hf_cfg).to(device).train()
    theirs.load_state_dict(
        {**GPT2Adapter().from_native(ours.state_dict()), "lm_head.weight": ours.wte.weight},
        strict=False,
    )
    x = torch.randint(0, VOCAB, (batch, seq), device=device)
    y = torch.randint(0, VOCAB, (batch, seq), device=device)
    mask = torch.ones(batch, seq, device=device)
    batch_ = {"x": x, "y": y, "mask": mask}
    opt = {
        "podium": torch.optim.AdamW(ours.parameters(), lr=1e-4),
        "transformers": torch.optim.AdamW(theirs.parameters(), lr=1e-4),
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(name: str) -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            if name == "podium":
                loss = ours(batch_).losses["events"]
            else:
                logits = theirs(input_ids=x).logits
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        opt[name].step()
        opt[name].zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0, float(loss.detach())

    first = {name: step(name)[1] for name in opt}  # warm-up; same weights, same batch
    times: dict[str, list[float]] = {name: [] for name in opt}
    for _ in range(repeats):
        for name in opt:
            times[name].append(step(name)[0])
    med = {name: statistics.median(t) for name, t in times.items()}
    tokens = batch * seq
    print(
        f"training step, {size} size ({ours.num_parameters() / 1e6:.2f}M params), "
        f"batch {batch} x {seq} tokens, median of {repeats}, interleaved:"
    )
    for name in opt:
        print(f"  {name:13s} {med[name] * 1e3:9.1f} ms  ({tokens / med[name]:9.0f} tokens/s)")
    print(
        f"  first-step losses: podium {first['podium']:.5f}, transformers {first['transformers']:.5f}"
    )
    print(f"  transformers / podium {med['transformers'] / med['podium']:.2f}  (goal >= 1)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gen-size", choices=sorted(SIZES), default="small")
    p.add_argument("--train-size", choices=sorted(SIZES), default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--skip", choices=("generation", "training"), help="leave one part out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.skip != "generation":
        bench_generation(args.gen_size, args.tokens, device)
    if args.skip != "training":
        bench_training(args.train_size, args.batch, args.seq, args.repeats, device)


if __name__ == "__main__":
    main()
