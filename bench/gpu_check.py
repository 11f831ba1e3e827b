"""The GPU half of issue 18, in one run on a machine with an NVIDIA GPU (prepared without one).

    .venv/bin/python bench/gpu_check.py [--quick] [--json OUT]

Each part prints its rows and goes on when one fails (the failure is a row too):

1. facts: torch and CUDA versions, device name, its peak bf16 TFLOP/s (``podium.engine.mfu``),
   whether flash-linear-attention (``fla``) and fast_transformers import.
2. bf16 training step of emopia-cp (39M, sequence 1024; the demo corpus at 64 bars a piece so
   windows are full) and music-transformer: bench_trainer.compare_loops, the engine's step (fused AdamW,
   bf16 autocast, TF32, no host sync in the step) against a bare loop doing the same maths
   (autocast, fused AdamW, clip), interleaved rounds, median. Expected: ratio <= 1.03.
   Reports tokens/s and MFU (target >= 35% for emopia-cp on an H100/H200), for the attention
   backend "torch" (pure-torch chunked form) and "fla" when importable.
3. the same step with ``torch.compile`` (``train.compile = true``): tokens/s and MFU.
   tests: the GPU-only tests (tests/test_gpu_fast_path.py: a bf16 step under
   ``torch.cuda.set_sync_debug_mode("error")``, the device-side skip; the fla agreement test).
4. flash-linear-attention vs the pure-torch form, bf16, forward + backward at 1024 tokens
   (B=4, H=8, D=64): max abs difference of outputs and gradients (expected within bf16
   tolerance, ~1e-2 relative) and the time of each.
5. 1024-token CP preview (emopia-cp model, random weights, the dashboard's sampler, recurrent
   state): seconds. Expected <= 1.5 s.
6. NVML under load: podium's telemetry provider read while a training step loop runs
   (utilisation > 0, memory used > 0, this process listed on the GPU).
7. reserved-GPU isolation: ``podium train`` in a subprocess with every GPU reserved
   (``PODIUM_RESERVED_GPUS``, see engine/gpus/config.py) must refuse or train on the CPU, and
   NVML must never list that process on the GPU (no CUDA context).

``--quick`` shortens every timing loop (for a first try under the 10-minute call limit).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench_trainer, report_rows
ROWS: list[dict[str, object]] = []


def row(part: str, name: str, value: object, note: str = "") -> None:
    ROWS.append({"part": part, "name": name, "value": value, "note": note})
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"[{part}] {name}: {shown}" + (f"  ({note})" if note else ""), flush=True)


def part(name: str, fn: Callable[[], None]) -> None:
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # a failed part is a row, the others still run
        row(name, "FAILED", f"{type(exc).__name__}: {exc}".splitlines()[0])
    print(f"[{name}] took {time.perf_counter() - t0:.1f} s", flush=True)


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


# -- 1 ---------------------------------------------------------------------------------------


def facts() -> None:
    from podium.engine.mfu import peak_flops

    row("facts", "python", platform.python_version())
    row("facts", "torch", torch.__version__)
    row("facts", "cuda", str(torch.version.cuda))
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible")
    dev = torch.device("cuda", 0)
    row("facts", "device", torch.cuda.get_device_name(dev))
    peak = peak_flops(dev)
    row("facts", "peak bf16 TFLOP/s", (peak or 0) / 1e12, "0 = not in podium's table")
    row("facts", "fla importable", importable("fla.ops.linear_attn"))
    row("facts", "fast_transformers importable", importable("fast_transformers.causal_product"))
    row("facts", "bf16 supported", torch.cuda.is_bf16_supported())


# -- 2, 3 ------------------------------------------------------------------------------------

PROFILES = {
    "emopia-cp": [
        "data.source=demo",
        "data.bars=64",
        "data.n_pieces=64",
        "data.seq_len=1024",
        "train.precision=bf16",
        "train.log_every_steps=20",
        "train.device=cuda",
    ],
    "music-transformer": [
        "data.source=demo",
        "data.bars=64",
        "data.n_pieces=64",
        "train.precision=bf16",
        "train.log_every_steps=20",
        "train.device=cuda",
    ],
}


def _build(profile_name: str, extra: list[str]):
    from podium.engine.config import load_profile

    profile = load_profile(
        ROOT / "profiles" / f"{profile_name}.toml", [*PROFILES[profile_name], *extra]
    )
    family = profile.family_spec
    bundle = family.build_data(profile.data, lambda s: None)
    return profile, family, bundle


def engine_vs_bare(
    profile_name: str, extra: list[str], label: str, rounds: int, steps: int
) -> None:
    """bench_trainer's engine-vs-bare comparison (on CUDA: the engine's bf16 autocast and fused
    AdamW in both loops), with tokens/s, MFU and peak memory for the GPU report."""
    from bench_trainer import compare_loops, mfu_note

    torch.cuda.reset_peak_memory_stats()
    overrides = [*PROFILES[profile_name], *extra]
    got = compare_loops(ROOT / "profiles" / f"{profile_name}.toml", overrides, rounds, steps)
    backend = getattr(got["model"], "cfg", None)
    backend = getattr(backend, "attention_backend", "-")
    name = f"{profile_name} [{label}, attention {backend}]"
    tokens_per_s = got["tokens_per_step"] / got["engine"]
    row("step", f"{name} engine/bare", got["engine"] / got["bare"], "target <= 1.03")
    row("step", f"{name} tokens/s", tokens_per_s)
    row(
        "step",
        f"{name} MFU",
        mfu_note(got["model"], got["batch"], got["tokens_per_step"], got["engine"]),
        "target >= 35% (emopia-cp)",
    )
    row("step", f"{name} peak memory GiB", torch.cuda.max_memory_allocated() / 2**30)
    torch.cuda.empty_cache()


def steps_part(quick: bool) -> None:
    rounds, steps = (2, 10) if quick else (4, 20)
    engine_vs_bare("emopia-cp", ["model.attention_backend=torch"], "bf16", rounds, steps)
    if importable("fla.ops.linear_attn"):
        engine_vs_bare("emopia-cp", ["model.attention_backend=fla"], "bf16", rounds, steps)
    else:
        row("step", "emopia-cp [bf16, attention fla]", "skipped: fla not importable")
    engine_vs_bare("music-transformer", [], "bf16", rounds, steps)


def compile_part(quick: bool) -> None:
    rounds, steps = (2, 10) if quick else (3, 20)
    engine_vs_bare(
        "emopia-cp",
        ["model.attention_backend=torch", "train.compile=true"],
        "bf16 compiled",
        rounds,
        steps,
    )


# -- 4 ---------------------------------------------------------------------------------------


def attention_part(quick: bool) -> None:
    from podium.engine.models import linear_attention as la

    if not importable("fla.ops.linear_attn"):
        row("attention", "fla vs torch", "skipped: fla not importable")
        return
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    b, h, t, d = 4, 8, 1024, 64
    results = {}
    for backend in ("torch", "fla"):
        attn = la.CausalLinearAttention(d_model=h * d, n_heads=h, backend=backend).to(dev)
        if backend == "fla":
            attn.load_state_dict(results["torch"]["state"])
        torch.manual_seed(1)
        x = torch.randn(b, t, h * d, device=dev).requires_grad_(True)
        times = []
        for _ in range(3 if quick else 10):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = attn(x)
            y.float().sum().backward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        results[backend] = {
            "state": attn.state_dict(),
            "y": y.detach().float(),
            "gx": x.grad.detach().float(),
            "s": statistics.median(times[1:]),
        }
    ref, fla = results["torch"], results["fla"]
    dy = (ref["y"] - fla["y"]).abs().max().item() / ref["y"].abs().max().item()
    dg = (ref["gx"] - fla["gx"]).abs().max().item() / ref["gx"].abs().max().item()
    row("attention", "fla vs torch max rel diff (output)", dy, "expected <= ~2e-2 in bf16")
    row("attention", "fla vs torch max rel diff (grad)", dg, "expected <= ~2e-2 in bf16")
    row("attention", "torch fwd+bwd ms @1024", ref["s"] * 1e3)
    row("attention", "fla fwd+bwd ms @1024", fla["s"] * 1e3)
    row("attention", "torch / fla", ref["s"] / fla["s"])


# -- 5 ---------------------------------------------------------------------------------------


def preview_part(quick: bool) -> None:
    from podium.engine.families.registry import SampleRequest
    from podium.engine.generate import sampler_of

    profile, family, bundle = _build("emopia-cp", ["model.attention_backend=torch"])
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = family.build_model(profile.model, bundle.model_info).to(dev).eval()
    sampler = sampler_of(family)
    times = []
    n_tokens = 0
    for seed in range(2 if quick else 4):
        req = SampleRequest(bars=None, tokens=1024, seed=seed)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        (sample,) = sampler.sample(model, profile, [req], dev)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        n_tokens = len(sample.tokens)
    best = min(times[1:] or times)
    row("preview", "tokens made", n_tokens, "ends early only at an end token")
    row("preview", "seconds (best after warm-up)", best, "target <= 1.5 s for 1024 tokens")
    row("preview", "seconds per 1024 tokens", best * 1024 / max(n_tokens, 1))


# -- 6, 7 ------------------------------------------------------------------------------------


def nvml_part(quick: bool) -> None:
    from podium.engine.gpus.nvml import NvmlProvider  # the real provider the dashboard uses

    provider = NvmlProvider()
    ok, why = provider.probe()
    row("nvml", "probe", ok, why)
    stop = threading.Event()

    def load() -> None:
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        while not stop.is_set():
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(3.0)
    try:
        gauges = provider.gauges()
        procs = provider.processes(0)
    finally:
        stop.set()
        worker.join(30)
    g = gauges[0]
    row("nvml", "gauges under load", repr(g)[:300], "utilisation and memory must be > 0")
    pids = [p.pid for p in procs] if isinstance(procs, tuple) else []
    row("nvml", "this process listed on GPU 0", os.getpid() in pids, "must be True")


def isolation_part(quick: bool) -> None:
    from podium.engine.gpus.nvml import NvmlProvider

    provider = NvmlProvider()
    env = dict(os.environ, PODIUM_RESERVED_GPUS="0")
    cmd = [
        sys.executable,
        "-m",
        "podium",
        "train",
        str(ROOT / "profiles" / "demo.toml"),
        "--headless",
        "--gpus",
        "auto",
        "--max-steps",
        "30",
        "--runs-dir",
        "/tmp/podium-gpu-check-runs",
    ]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_on_gpu = False
    while p.poll() is None:
        with contextlib.suppress(Exception):
            procs = provider.processes(0)
            if isinstance(procs, tuple) and any(q.pid == p.pid for q in procs):
                seen_on_gpu = True
        time.sleep(0.3)
    out = (p.stdout.read() if p.stdout else "").strip()
    row(
        "isolation",
        "exit code",
        p.returncode,
        "0 (trained on the CPU) or 2 (refused) are both right",
    )
    row("isolation", "process seen on the reserved GPU", seen_on_gpu, "must be False")
    row("isolation", "last line", out.splitlines()[-1] if out else "")


def tests_part(quick: bool) -> None:
    """The tests that skip without a GPU: no host sync in a bf16 step, fla against torch."""
    files = ["tests/test_gpu_fast_path.py", "tests/test_linear_attention.py"]
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = (p.stdout + p.stderr).strip().splitlines()
    row("tests", "pytest exit code", p.returncode, "must be 0")
    row("tests", "summary", tail[-1] if tail else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    parts = {
        "facts": facts,
        "tests": lambda: tests_part(args.quick),
        "attention": lambda: attention_part(args.quick),
        "preview": lambda: preview_part(args.quick),
        "step": lambda: steps_part(args.quick),
        "compile": lambda: compile_part(args.quick),
        "nvml": lambda: nvml_part(args.quick),
        "isolation": lambda: isolation_part(args.quick),
    }
    for name, fn in parts.items():
        if args.only is None or name in args.only:
            part(name, fn)
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=1, default=str))


if __name__ == "__main__":
    main()
