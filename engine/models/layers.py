"""Building blocks shared by the decoder-only families: positions, feed-forward, post-norm block.

The block takes its attention module from the caller, so one block serves softmax, relative and
linear attention alike. An attention module needs ``forward(x) -> y`` for training and, to be
used for generation, ``init_state(batch, device)`` and ``step(x_t, state) -> (y_t, state)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

Activation = Literal["gelu", "relu"]


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos positional encoding (Vaswani et al. 2017), added to the input.

    The table is a non-persistent buffer: it is a pure function of (max_len, d_model), so it
    stays out of checkpoints and is rebuilt on construction.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
        div = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )  # (ceil(C/2),)
        table = torch.zeros(max_len, d_model)  # (L, C)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, T, C) -> x + positions[offset : offset + T]."""
        T = x.shape[1]
        if offset + T > self.max_len:
            raise ValueError(
                f"max_len: sequence reaches position {offset + T} but max_len is {self.max_len}; "
                "raise model.max_len or shorten the sequence"
            )
        return x + self.table[offset : offset + T].to(x.dtype)  # (B, T, C)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float, activation: Activation = "gelu"
    ) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.fc_out = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(self.act(self.fc_in(x)))  # (..., d_ff)
        return self.dropout(self.fc_out(h))  # (..., C)


class PostNormBlock(nn.Module):
    """x = LN(x + attn(x)); x = LN(x + ffn(x)).

    Post-norm, because that is what the compound-word transformer and EMOPIA trained with
    (fast_transformers' encoder layer); a pre-norm family can add its own block.
    """

    def __init__(
        self,
        attention: nn.Module,
        d_model: int,
        d_ff: int,
        dropout: float,
        activation: Activation = "gelu",
    ) -> None:
        super().__init__()
        self.attn = attention
        self.ln_attn = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.ln_ffn = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln_attn(x + self.attn(x))  # (B, T, C)
        return self.ln_ffn(x + self.ffn(x))  # (B, T, C)

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One token: x_t (B, C) -> (y_t (B, C), new attention state)."""
        a, state = self.attn.step(x_t, state)  # (B, C)
        x_t = self.ln_attn(x_t + a)  # (B, C)
        return self.ln_ffn(x_t + self.ffn(x_t)), state
