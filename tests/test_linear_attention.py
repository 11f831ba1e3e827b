"""Causal linear attention: chunked, recurrent and O(T^2) reference forms agree."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from podium.engine.models.linear_attention import (
    CausalLinearAttention,
    causal_linear_attention,
    feature_map,
    linear_attention_step,
)


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
