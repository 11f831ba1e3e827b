"""A GPT-2 decoder (nanoGPT's shape): learned positions, pre-norm blocks, softmax attention
through ``scaled_dot_product_attention``, the output projection tied to the token embedding,
and a key-value cache for generation.

Parameter names follow Hugging Face's GPT-2 without its ``transformer.`` prefix (``wte``,
``h.0.attn.c_attn``, ``ln_f``...), so ``hf.py`` only renames and transposes (HF keeps its
projections as ``Conv1D``, weights (in, out)). ``forward(batch)`` returns the loss of the one
head, ``events``, and in eval mode the per-token NLL and hits the validation metrics read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from podium.engine.families.amt.config import GPT2Config
from podium.engine.metrics import MetricValues, ModelOutput

HEAD = "events"


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        # (B, nh, T, hs)
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            k, v = cache.append(layer, k, v)  # (B, nh, past + T, hs)
            if T == 1:  # one new token sees every cached one: no mask
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # a prompt: causal within it, after the cached prefix
                past = k.shape[2] - T
                mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(past)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.ff_width)
        self.c_proj = nn.Linear(cfg.ff_width, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2's "gelu_new" is the tanh approximation.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


@dataclass
class KVCache:
    """Preallocated keys and values of every layer, (B, nh, max_len, hs) each, filled up to
    ``length``: a step writes one slot instead of concatenating (which copies the whole prefix
    every token)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        if layer == len(self.keys) - 1:
            self.length = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class GPT2(nn.Module):
    """The decoder over AMT event tokens."""

    def __init__(self, cfg: GPT2Config, vocab_size: int, n_semantic: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.n_semantic = n_semantic
        """Semantic tokens the data's clustering found (the sampler draws a blank one below)."""
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled residual init (Radford 2019)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch: int, device: torch.device | str | None = None) -> KVCache:
        d = self.wte.weight
        nh, hs = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        shape = (batch, nh, self.cfg.max_len, hs)
        kw = {"device": device or d.device, "dtype": d.dtype}
        n = self.cfg.n_layers
        return KVCache(
            [torch.empty(shape, **kw) for _ in range(n)],
            [torch.empty(shape, **kw) for _ in range(n)],
        )

    def logits(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, vocab) logits. With ``cache``, ``idx`` continues what the
        cache holds (its positions start at ``cache.length``) and the cache grows by T."""
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_len:
            raise ValueError(f"{start + T} tokens: the model holds at most {self.cfg.max_len}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied: (B, T, vocab)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        x, y, mask = batch["x"], batch["y"], batch["mask"]
        logits = self.logits(x)
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(mask)
        loss = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        outputs = {}
        if not self.training:
            outputs = {"nll": nll * mask, "hit": (logits.argmax(-1) == y).float() * mask}
        return ModelOutput(losses={HEAD: loss}, outputs=outputs)


class AMTMetrics:
    """Perplexity, next-token accuracy and the loss of the pieces of each semantic token over
    one validation pass (token-weighted; ``loss_sem<K>`` only for tokens the pass saw)."""

    def __init__(self, semantic_base: int, n_semantic: int) -> None:
        self.base = semantic_base
        self.n = n_semantic
        self.nll = torch.zeros(n_semantic, dtype=torch.float64)  # per semantic token
        self.tokens = torch.zeros(n_semantic, dtype=torch.float64)
        self.total_nll = 0.0
        self.total_tokens = 0.0
        self.hits = 0.0

    def update(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        sem = (batch["x"][:, 1] - self.base).cpu()  # (B,) each row's semantic token
        per_row = outputs["nll"].sum(1).double().cpu()  # (B,)
        tokens = batch["mask"].sum(1).double().cpu()
        known = (sem >= 0) & (sem < self.n)
        self.nll.index_add_(0, sem[known], per_row[known])
        self.tokens.index_add_(0, sem[known], tokens[known])
        self.total_nll += float(per_row.sum())
        self.total_tokens += float(tokens.sum())
        self.hits += float(outputs["hit"].sum())

    def compute(self) -> MetricValues:
        if self.total_tokens == 0:
            return MetricValues()
        mean = self.total_nll / self.total_tokens
        scalars = {
            "perplexity": math.exp(min(mean, 50.0)),
            "accuracy": self.hits / self.total_tokens,
        }
        for k in range(self.n):
            if self.tokens[k] > 0:
                scalars[f"loss_sem{k}"] = float(self.nll[k] / self.tokens[k])
        return MetricValues(scalars=scalars)
