"""Causal linear attention: chunked, recurrent and O(T^2) reference forms agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from podium.engine.config import load_profile
from podium.engine.errors import ProfileError
from podium.engine.models.linear_attention import (
    CausalLinearAttention,
    _fla_kernel,
    causal_linear_attention,
    feature_map,
    linear_attention_step,
    resolve_backend,
)

ROOT = Path(__file__).resolve().parents[1]
HAS_FLA = _fla_kernel() is not None
HAS_FT = importlib.util.find_spec("fast_transformers") is not None


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6):
    """The definition, written the slow obvious way: masked phi-kernel, row-normalised."""
    T = q.shape[-2]
    scores = feature_map(q) @ feature_map(k).transpose(-1, -2)  # (B, H, T, T)
    scores = scores * torch.ones(T, T, dtype=q.dtype).tril()
    return (scores @ v) / (scores.sum(-1, keepdim=True) + eps)


def qkv(T: int, *, B=2, H=3, D=8, E=5, dtype=torch.float64, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, T, D), (B, H, T, D), (B, H, T, E)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(grad) for s in shapes]


@pytest.mark.parametrize("T", [1, 7, 16, 64, 65, 150])
@pytest.mark.parametrize("chunk", [16, 64])
def test_chunked_form_equals_quadratic_reference(T, chunk):
    q, k, v = qkv(T)
    out = causal_linear_attention(q, k, v, chunk_size=chunk)
    assert out.shape == v.shape
    torch.testing.assert_close(out, reference(q, k, v), atol=1e-10, rtol=1e-10)


def test_chunked_form_in_float32_is_within_1e5_of_reference():
    q, k, v = qkv(300, dtype=torch.float32, seed=3)
    ref = reference(q.double(), k.double(), v.double()).float()
    assert (causal_linear_attention(q, k, v) - ref).abs().max().item() < 1e-5


def test_output_is_causal():
    q, k, v = qkv(100)
    out = causal_linear_attention(q, k, v, chunk_size=16)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    q2[:, :, 60:] += 1.0
    k2[:, :, 60:] -= 2.0
    v2[:, :, 60:] *= 3.0
    out2 = causal_linear_attention(q2, k2, v2, chunk_size=16)
    torch.testing.assert_close(out2[:, :, :60], out[:, :, :60], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, 60:], out[:, :, 60:])


@pytest.mark.parametrize("T", [1, 9, 70])
def test_recurrent_form_equals_parallel_form(T):
    q, k, v = qkv(T)
    B, H, _, D = q.shape
    state = (torch.zeros(B, H, D, v.shape[-1], dtype=q.dtype), torch.zeros(B, H, D, dtype=q.dtype))
    outs = []
    for t in range(T):
        o, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        assert state[0].shape == (B, H, D, v.shape[-1])  # constant memory per token
        outs.append(o)
    torch.testing.assert_close(
        torch.stack(outs, dim=2), causal_linear_attention(q, k, v, chunk_size=16), atol=1e-5, rtol=0
    )


def test_gradients_match_reference():
    q, k, v = qkv(90, grad=True, seed=1)
    w = torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(2))
    (causal_linear_attention(q, k, v, chunk_size=32) * w).sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (reference(q, k, v) * w).sum().backward()
    for got, want in zip(grads, (q.grad, k.grad, v.grad), strict=True):
        assert torch.isfinite(got).all()
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


def test_module_forward_equals_step_by_step():
    torch.manual_seed(0)
    attn = CausalLinearAttention(24, 4, dropout=0.1, chunk_size=8).double().eval()
    x = torch.randn(2, 21, 24, dtype=torch.float64)
    full = attn(x)
    state = attn.init_state(2, dtype=torch.float64)
    steps = []
    for t in range(x.shape[1]):
        y, state = attn.step(x[:, t], state)
        steps.append(y)
    assert full.shape == x.shape
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-10, rtol=1e-10)


def test_module_runs_under_bf16_autocast_close_to_float32():
    torch.manual_seed(0)
    attn = CausalLinearAttention(32, 4).eval()
    x = torch.randn(2, 200, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attn(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - attn(x)).abs().max().item() < 0.05


@pytest.mark.skipif(
    importlib.util.find_spec("fast_transformers") is not None,
    reason="fast_transformers is installed here",
)
def test_fast_transformers_backend_missing_is_a_value_error():
    with pytest.raises(ValueError, match=r"^attention_backend: .*fast_transformers"):
        CausalLinearAttention(16, 2, backend="fast_transformers")
    assert CausalLinearAttention(16, 2, backend="auto").backend == "torch"


# -- backends: resolution and errors (CPU), fla against torch (CUDA) ------------------------


def test_auto_is_torch_on_the_cpu_and_fla_there_is_a_one_line_error():
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match=r"^attention_backend: 'fla' runs on CUDA only") as err:
        resolve_backend("fla", "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^attention_backend: must be one of .*'fla'"):
        resolve_backend("flash", "cpu")


@pytest.mark.skipif(HAS_FLA or HAS_FT, reason="a CUDA kernel is importable here")
def test_without_kernels_auto_is_torch_on_cuda_and_fla_is_refused():
    # Resolution looks at the device's type only, so CUDA's fallback is checkable on a CPU box.
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match=r"^attention_backend: 'fla' was requested but .*gpu"):
        resolve_backend("fla", "cuda")
    with pytest.raises(ValueError, match=r"^attention_backend: 'fla' was requested"):
        CausalLinearAttention(16, 2, backend="fla")


@pytest.mark.skipif(
    importlib.util.find_spec("fla") is not None, reason="flash-linear-attention is installed"
)
def test_profile_asking_for_fla_without_it_names_the_line():
    with pytest.raises(ProfileError, match=r"model\.attention_backend.*'fla'.*podium\[gpu\]"):
        load_profile(ROOT / "profiles" / "demo.toml", ["model.attention_backend=fla"])


def test_auto_module_runs_the_chunked_form_on_the_cpu():
    torch.manual_seed(0)
    auto = CausalLinearAttention(16, 2, backend="auto").eval()
    plain = CausalLinearAttention(16, 2, backend="torch").eval()
    plain.load_state_dict(auto.state_dict())
    x = torch.randn(2, 70, 16)
    assert auto.backend == "torch"
    torch.testing.assert_close(auto(x), plain(x), atol=0, rtol=0)


@pytest.mark.skipif(not HAS_FLA, reason="flash-linear-attention is not importable")
def test_fla_module_on_the_cpu_fails_at_forward_with_one_line():
    attn = CausalLinearAttention(16, 2, backend="fla")  # importable: builds (on the CPU)
    with pytest.raises(ValueError, match=r"^attention_backend: 'fla' runs on CUDA only"):
        attn(torch.randn(1, 8, 16))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_FLA), reason="needs CUDA and flash-linear-attention"
)
@pytest.mark.parametrize("T", [1024, 1000])  # 1000: a last chunk that fla pads
def test_fla_agrees_with_torch_forward_and_backward_in_bf16(T):
    torch.manual_seed(0)
    fla = CausalLinearAttention(512, 8, backend="fla").cuda()
    ref = CausalLinearAttention(512, 8, backend="torch").cuda()
    ref.load_state_dict(fla.state_dict())
    assert fla.backend == "fla" and resolve_backend("auto", "cuda") == "fla"
    x = torch.randn(2, T, 512, device="cuda")
    w = torch.randn(2, T, 512, device="cuda")
    outs, grads = [], []
    for attn in (fla, ref):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = attn(xi)
        (y.float() * w).sum().backward()
        outs.append(y)
        grads.append([xi.grad, *(p.grad for p in (attn.query.weight, attn.key.weight))])
    assert outs[0].dtype == torch.bfloat16
    assert _rel(outs[0], outs[1]) < 2e-2
    for got, want in zip(grads[0], grads[1], strict=True):
        assert torch.isfinite(got).all()
        assert _rel(got, want) < 3e-2


@pytest.mark.skipif(HAS_FLA, reason="fla is installed: the stand-in packages are not needed")
def test_fla_for_a_run_placed_on_the_cpu_is_one_line_exit_2_before_it_starts(tmp_path):
    """A GPU box with fla installed whose run lands on the CPU (``--gpus cpu`` here; every GPU
    reserved or busy alike) is refused before training, not at its first forward. The profile
    check only looks for the packages (``importlib.util.find_spec``), so empty stand-ins named
    fla and triton on PYTHONPATH pass it; nothing imports them."""
    import os

    from tests.podium_cli import podium

    for name in ("fla", "triton"):
        (tmp_path / "stand-ins" / name).mkdir(parents=True)
        (tmp_path / "stand-ins" / name / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stand-ins")}
    proc = podium(
        "train", str(ROOT / "profiles" / "demo.toml"), "--headless", "--gpus", "cpu",
        "--runs-dir", str(tmp_path / "runs"), "--set", "model.attention_backend=fla",
        env=env, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "model.attention_backend: 'fla' runs on CUDA only" in lines[0], lines[0]
    assert "this run would train on cpu" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
