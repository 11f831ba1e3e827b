"""The Music Transformer: a decoder of post-norm relative-attention blocks over event tokens.

Huang et al. 2018 at the size of their public implementations: token embeddings (scaled by
sqrt(d_model)), no absolute positions (the relative term per layer carries position), post-norm
blocks (``layers.PostNormBlock``) with ``RelativeAttention``, one output head over the whole
vocabulary (events, END, PAD, conditioning tokens; only events and END are ever sampled).
Without absolute positions a window that slides past ``max_len`` sees what training saw: the
same distances.

    model = MusicTransformer(MusicTransformerConfig(), vocab_size=396, n_prefix=2)
    out = model({"x": x, "y": y, "mask": mask})   # ModelOutput: losses {"events": ce}
    caches = model.init_state(B, device)          # generation: one KV cache per layer
    logits, caches = model.step(tokens_t, caches) # (B,) int64 -> (B, vocab) logits
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from podium.engine.families.music_transformer.config import MusicTransformerConfig
from podium.engine.metrics import ModelOutput
from podium.engine.models.layers import PostNormBlock
from podium.engine.models.relative_attention import RelativeAttention, RelativeKVCache

HEAD = "events"
"""The one loss: next-token cross-entropy over the event vocabulary."""


class MusicTransformer(nn.Module):
    """``forward(batch)`` -> ModelOutput with the masked mean loss and argmax predictions."""

    def __init__(self, cfg: MusicTransformerConfig, vocab_size: int, n_prefix: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size, self.n_prefix = cfg, int(vocab_size), int(n_prefix)
        C = cfg.d_model
        self.embedding = nn.Embedding(self.vocab_size, C)
        self.emb_scale = math.sqrt(C)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            PostNormBlock(
                RelativeAttention(C, cfg.n_heads, cfg.max_len, cfg.dropout),
                C,
                cfg.d_ff,
                cfg.dropout,
                cfg.activation,
            )
            for _ in range(cfg.n_layers)
        )
        self.head = nn.Linear(C, self.vocab_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # nanoGPT's scheme: N(0, 0.02) weights, zero biases; LayerNorm keeps ones/zeros.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def logits(self, x: Tensor) -> Tensor:
        """x (B, T) int64 -> logits (B, T, vocab)."""
        h = self.drop(self.embedding(x) * self.emb_scale)  # (B, T, C)
        for block in self.blocks:
            h = block(h)  # (B, T, C)
        return self.head(h)  # (B, T, V)

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        """Masked mean next-token cross-entropy.

        Args:
            batch: "x" (B, T) int64 inputs, "y" (B, T) int64 targets, "mask" (B, T) float, 1
                where a target counts (not padding, not the conditioning tokens).

        Returns:
            losses {"events": scalar}; outputs {"pred": (B, T) argmax} for the accuracy.
        """
        x, y, mask = batch["x"], batch["y"], batch["mask"].float()
        z = self.logits(x)  # (B, T, V)
        ce = F.cross_entropy(z.float().flatten(0, 1), y.flatten(), reduction="none")
        loss = (ce.view_as(mask) * mask).sum() / mask.sum().clamp_min(1.0)
        return ModelOutput(losses={HEAD: loss}, outputs={"pred": z.detach().argmax(dim=-1)})

    # -- generation --------------------------------------------------------------------------

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None
    ) -> list[RelativeKVCache]:
        """Empty caches, one per layer; the conditioning tokens stay in the window."""
        return [b.attn.init_state(batch_size, device, pinned=self.n_prefix) for b in self.blocks]

    def step(
        self, tokens: Tensor, caches: list[RelativeKVCache]
    ) -> tuple[Tensor, list[RelativeKVCache]]:
        """One token per row: tokens (B,) int64 -> (logits (B, vocab), caches advanced).

        Equal to ``logits(x)[:, t]`` in eval mode while fewer than ``max_len`` tokens were fed;
        past that, the window of the last ``max_len`` (conditioning tokens kept) decides."""
        h = self.drop(self.embedding(tokens) * self.emb_scale)  # (B, C)
        for block, cache in zip(self.blocks, caches, strict=True):
            h, _ = block.step(h, cache)  # (B, C); the cache advances in place
        return self.head(h), caches

    # -- bookkeeping -------------------------------------------------------------------------

    def configure_optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Matrices, embeddings and relative tables decay; biases and norms do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
