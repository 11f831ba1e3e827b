"""Causal linear attention, forward + backward: chunked vs cumsum-of-outer-products vs softmax SDPA.

All three run in this one process, interleaved in rounds so machine drift hits them alike. Prints
the median seconds of each per sequence length and the ratios to SDPA, and checks that the two
linear forms agree. Target: chunked within 1.5x of SDPA at T=1024 (B=4, H=8, D=64).

    .venv/bin/python bench/bench_linear_attention.py [--lengths 256 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report_rows import Row, row, skipped

from podium.engine.models.linear_attention import (
    EPS,
    causal_linear_attention,
    feature_map,
)


def cumsum_form(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The textbook parallel form: materialises every prefix state, (B, H, T, D, E)."""
    phi_q, phi_k = feature_map(q), feature_map(k)  # (B, H, T, D)
    S = (phi_k.unsqueeze(-1) * v.unsqueeze(-2)).cumsum(dim=2)  # (B, H, T, D, E)
    z = phi_k.cumsum(dim=2)  # (B, H, T, D)
    num = (phi_q.unsqueeze(-2) @ S).squeeze(-2)  # (B, H, T, E)
    return num / ((phi_q * z).sum(-1, keepdim=True) + EPS)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def time_fwd_bwd(fn: Callable[..., torch.Tensor], q, k, v) -> float:
    for t in (q, k, v):
        t.grad = None
    t0 = time.perf_counter()
    fn(q, k, v).sum().backward()
    return time.perf_counter() - t0


# -- the suite's rows: every attention backend, forward + backward, at the suite's lengths ------


def _backends(device: torch.device) -> dict[str, Callable[..., torch.Tensor] | str]:
    """Name -> forward function, or the reason it cannot run here."""
    from bench_relative_attention import explicit, skewed

    # podium's own calls of each kernel (its layout, feature map and normaliser around them)
    from podium.engine.models.linear_attention import _attention_kernel, _kernel

    table = {}
    ft = _kernel("fast_transformers")
    fla = _kernel("fla")
    table["chunked causal linear (pure torch)"] = causal_linear_attention
    table["fast_transformers causal linear"] = (
        (lambda q, k, v: _attention_kernel(ft, q, k, v))
        if ft is not None
        else "not importable (pip install 'podium[fast]')"
    )
    if fla is None:
        table["flash-linear-attention chunk_linear_attn"] = (
            "not importable (pip install 'podium[gpu]')"
        )
    elif device.type != "cuda":
        table["flash-linear-attention chunk_linear_attn"] = "importable, but Triton needs CUDA"
    else:
        table["flash-linear-attention chunk_linear_attn"] = lambda q, k, v: _attention_kernel(
            fla, q, k, v
        )
    rel = {}

    def relative(form):
        def fn(q, k, v):
            if q.shape[-2] not in rel:
                g = torch.Generator().manual_seed(1)
                rel[q.shape[-2]] = torch.randn(q.shape[-2], q.shape[-1], generator=g).to(device)
            return form(q, k, v, rel[q.shape[-2]])

        return fn

    table["relative attention, skewed (podium)"] = relative(skewed)
    table["relative attention, explicit L x L x D"] = relative(explicit)
    return table


def _seconds(fn: Callable[..., torch.Tensor], q, k, v, device: torch.device) -> float:
    """Forward + backward: CPU seconds of this process on a CPU (one thread: load skews it
    least), wall seconds between synchronisations on a GPU."""
    for t in (q, k, v):
        t.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(q, k, v).sum().backward()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    t0 = time.process_time()
    fn(q, k, v).sum().backward()
    return time.process_time() - t0


SUITE_SIZES = {"tiny": ((64,), 1), "quick": ((512, 1024), 2), "full": ((512, 1024, 2048), 3)}
"""Per suite size: (sequence lengths, rounds after one warm-up)."""

TARGETS = {"chunked causal linear (pure torch)": "<= 1.5"}
"""This script's claim: chunked linear attention within 1.5x of SDPA (B=4 at T=1024 here)."""


def bench_rows(size: str = "full") -> list[Row]:
    """Each backend's median forward+backward over softmax SDPA's at the same length, B=1, H=8,
    D=64, float32, interleaved in rounds (so drift hits all alike)."""
    lengths, rounds = SUITE_SIZES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backends = _backends(device)
    rows: list[Row] = []
    label = "" if size == "full" else f" ({size})"
    cmd = "python bench/run.py --only attention" + ("" if size == "full" else f" --{size}")
    for T in lengths:
        g = torch.Generator().manual_seed(T)
        q, k, v = (
            torch.randn(1, 8, T, 64, generator=g).to(device).requires_grad_() for _ in range(3)
        )
        runnable = {n: f for n, f in backends.items() if callable(f)}
        forms = {"softmax SDPA": sdpa, **runnable}
        for fn in forms.values():  # warm-up
            _seconds(fn, q, k, v, device)
        times: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(rounds):
            for name, fn in forms.items():
                times[name].append(_seconds(fn, q, k, v, device))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, fn in backends.items():
            if not callable(fn):
                rows.append(skipped(f"attention T={T}: {name} vs SDPA{label}", fn, command=cmd))
                continue
            ref = "relative attention, skewed (podium)" if "explicit" in name else "softmax SDPA"
            rows.append(
                row(
                    f"attention T={T}: {name} vs {'skewed' if 'explicit' in name else 'SDPA'}"
                    + label,
                    med[name] * 1e3,
                    med[ref] * 1e3,
                    a_is=f"{name}, forward+backward",
                    b_is=f"{ref}, forward+backward",
                    unit="ms",
                    target=TARGETS.get(name) if T == 1024 else None,
                    command=cmd,
                    note=f"B=1 H=8 D=64 float32, median of {rounds}",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    forms = {"chunked": causal_linear_attention, "cumsum": cumsum_form, "sdpa": sdpa}
    print(
        f"B={args.batch} H={args.heads} D={args.dim}, float32, {torch.get_num_threads()} threads, "
        f"median of {args.rounds} rounds, forward+backward seconds"
    )
    print(
        f"{'T':>6} {'chunked':>9} {'cumsum':>9} {'sdpa':>9} {'chunk/sdpa':>11} {'cumsum/chunk':>13}"
    )
    for T in args.lengths:
        g = torch.Generator().manual_seed(0)
        q, k, v = (
            torch.randn(args.batch, args.heads, T, args.dim, generator=g).requires_grad_()
            for _ in range(3)
        )
        with torch.no_grad():
            diff = (causal_linear_attention(q, k, v) - cumsum_form(q, k, v)).abs().max().item()
        for fn in forms.values():  # warm-up
            time_fwd_bwd(fn, q, k, v)
        times: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(args.rounds):
            for name, fn in forms.items():
                times[name].append(time_fwd_bwd(fn, q, k, v))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        print(
            f"{T:>6} {med['chunked']:>9.4f} {med['cumsum']:>9.4f} {med['sdpa']:>9.4f} "
            f"{med['chunked'] / med['sdpa']:>11.2f} {med['cumsum'] / med['chunked']:>13.1f}"
            f"   (max |chunked - cumsum| = {diff:.1e})"
        )


if __name__ == "__main__":
    main()
