"""Causal relative-position self-attention (Shaw et al. 2018) with Huang et al.'s "skewing".

Attention logits get a term per (query, key) that depends only on their distance:
``S_rel[i, j] = q_i . E[r]`` with ``r = i - j``. One learned table ``E`` (max_len x d_head) per
layer, shared across heads, as in the Music Transformer. Shaw et al. gathered an L x L x d_head
tensor of embeddings to compute it; Huang et al. (2018, section 3.4.1) compute ``Q E^T``
(L x L per head) and *skew* it: pad one column on the left, reshape (L + 1, L), drop the first
row; entry (i, j) is then ``q_i . E[i - j]`` wherever j <= i, and the rest is masked anyway.
Memory is O(L^2) per head instead of O(L^2 d_head).

``E`` is stored farthest distance first: row ``max_len - 1 - r`` holds distance r, so a
sequence of T tokens uses the last T rows, in the order skewing wants.

Generation (``init_state`` / ``step``): the keys and values of past tokens are cached, and a new
token's relative logits are one row, ``q_t . E[t - j]`` for the cached j: each token costs
O(L d) instead of a forward pass over the whole prefix. The rows of earlier queries are never
recomputed. Past ``max_len`` tokens the cache slides: the oldest entries leave, except the first
``pinned`` (the conditioning tokens), whose distance is counted as ``max_len - 1``, the farthest
the model was trained on.

    attn = RelativeAttention(d_model=512, n_heads=8, max_len=2048, dropout=0.1)
    y = attn(x)                                   # x (B, T, C), T <= 2048
    state = attn.init_state(B, x.device, pinned=2)
    y_t, state = attn.step(x_t, state)            # x_t (B, C): equals y[:, t] in eval mode
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def skew(rel: Tensor) -> Tensor:
    """``rel`` (..., T, T) with ``rel[i, m] = q_i . E[m]`` for the distance m <-> T - 1 - m
    -> (..., T, T) with entry (i, j) = ``q_i . E[distance i - j]`` for j <= i (above the
    diagonal: junk the causal mask hides). No copy beyond one padded tensor."""
    *lead, T, _ = rel.shape
    padded = F.pad(rel, (1, 0))  # (..., T, T + 1)
    return padded.reshape(*lead, T + 1, T)[..., 1:, :]  # (..., T, T)


def explicit_relative_logits(q: Tensor, table: Tensor) -> Tensor:
    """The reference: gather the (T, T, d) embeddings of every pair's distance and contract
    them with q. q (B, H, T, d), table (L >= T, d) farthest first -> (B, H, T, T), lower
    triangle exact, upper triangle 0. Shaw et al.'s formulation: O(T^2 d) memory."""
    T, L = q.shape[-2], table.shape[0]
    i = torch.arange(T, device=q.device)
    dist = (i[:, None] - i[None, :]).clamp(min=0)  # (T, T)
    R = table[L - 1 - dist]  # (T, T, d): the L x L x D tensor skewing avoids
    out = torch.einsum("bhid,ijd->bhij", q, R)
    return out.masked_fill(i[None, :] > i[:, None], 0.0)


@dataclass
class RelativeKVCache:
    """What ``RelativeAttention.step`` carries between tokens (updated in place)."""

    k: Tensor
    """(B, H, max_len, d_head) cached keys; the first ``n`` are filled."""
    v: Tensor
    """(B, H, max_len, d_head) cached values."""
    pos: Tensor
    """(max_len,) int64 absolute position of each cached entry."""
    n: int = 0
    """Filled entries."""
    t: int = 0
    """Absolute position of the next token."""
    pinned: int = 0
    """Leading entries that never slide out of the window."""


class RelativeAttention(nn.Module):
    """Causal multi-head self-attention with a learned relative-position term per distance."""

    def __init__(self, d_model: int, n_heads: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.d_head, self.max_len = n_heads, d_model // n_heads, max_len
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.rel = nn.Parameter(torch.randn(max_len, self.d_head) * 0.02)  # (L, d) farthest first
        self.dropout = dropout

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) -> q, k, v each (B, H, T, d)."""
        B, T = x.shape[:2]
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, d)
        return q, k, v

    def relative_bias(self, q: Tensor) -> Tensor:
        """q (B, H, T, d) -> the causal additive mask: skewed relative logits / sqrt(d) on and
        below the diagonal, -inf above. (B, H, T, T)."""
        T = q.shape[-2]
        table = self.rel[self.max_len - T :]  # (T, d): distances T-1 .. 0
        s = skew(q @ table.transpose(0, 1))  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        return (s / math.sqrt(self.d_head)).masked_fill(causal, float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C); T must not exceed ``max_len``."""
        B, T, C = x.shape
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of {T} tokens is longer than the model's max_len {self.max_len}; "
                "crop it (data.seq_len) or generate with the windowed step"
            )
        q, k, v = self._heads(x)
        bias = self.relative_bias(q)  # (B, H, T, T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, d)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    # -- generation --------------------------------------------------------------------------

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        pinned: int = 0,
    ) -> RelativeKVCache:
        """An empty cache of ``max_len`` entries; the first ``pinned`` tokens stay in it."""
        if not 0 <= pinned < self.max_len:
            raise ValueError(f"pinned: must be in 0..{self.max_len - 1} (got {pinned})")
        dtype = dtype or self.qkv.weight.dtype
        shape = (batch_size, self.n_heads, self.max_len, self.d_head)
        return RelativeKVCache(
            k=torch.zeros(shape, device=device, dtype=dtype),
            v=torch.zeros(shape, device=device, dtype=dtype),
            pos=torch.zeros(self.max_len, device=device, dtype=torch.int64),
            pinned=pinned,
        )

    def step(self, x_t: Tensor, state: RelativeKVCache) -> tuple[Tensor, RelativeKVCache]:
        """One token: x_t (B, C) -> (y_t (B, C), the same cache, advanced). O(max_len d)."""
        B, C = x_t.shape
        q, k, v = self._heads(x_t.unsqueeze(1))  # each (B, H, 1, d)
        if state.n == self.max_len:  # full: the oldest unpinned entry leaves
            p = state.pinned
            state.k[:, :, p:-1] = state.k[:, :, p + 1 :].clone()
            state.v[:, :, p:-1] = state.v[:, :, p + 1 :].clone()
            state.pos[p:-1] = state.pos[p + 1 :].clone()
            state.n -= 1
        n = state.n
        state.k[:, :, n] = k[:, :, 0]
        state.v[:, :, n] = v[:, :, 0]
        state.pos[n] = state.t
        state.n, state.t = n + 1, state.t + 1
        keys, values = state.k[:, :, : n + 1], state.v[:, :, : n + 1]  # (B, H, n+1, d)
        dist = (state.t - 1 - state.pos[: n + 1]).clamp(max=self.max_len - 1)  # (n+1,)
        rel = q @ self.rel[self.max_len - 1 - dist].transpose(0, 1)  # (B, H, 1, n+1)
        logits = (q @ keys.transpose(-1, -2) + rel) / math.sqrt(self.d_head)  # (B, H, 1, n+1)
        y = logits.softmax(dim=-1) @ values  # (B, H, 1, d)
        return self.proj(y.reshape(B, C)), state
