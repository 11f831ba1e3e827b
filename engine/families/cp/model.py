"""The compound-word (CP) transformer, EMOPIA style, with causal linear attention.

A CP token is one time step carrying nine fields (``FIELDS``). The model embeds each field,
concatenates the embeddings, projects them to ``d_model`` and runs a post-norm stack of causal
linear attention layers. Output is two-stage, as in Hsiao et al. 2021 (compound-word transformer)
and Hung et al. 2021 (EMOPIA): the ``type`` head reads the hidden state first; every other head
reads the hidden state joined with the embedding of the token type, because which fields matter
depends on the type (a note's pitch, a metrical event's tempo and chord). In training the type is
the teacher-forced target; in generation it is the type just sampled.

Use::

    model = CPTransformer(CPTransformerConfig(), vocab_sizes)
    losses = model({"x": x, "y": y, "mask": mask})   # {field: scalar loss} in FIELDS order

Generation primitives: ``init_state``, ``step`` (one token, O(1) memory), ``type_logits``,
``field_logits``.

Conditioning: every sequence starts with an Emotion token (emotion quadrant and key). With
``condition = "every"`` its emotion and key embeddings are also projected and added to the input
of every position. Causal linear attention cannot attend sharply: its output at position t is an
average over all earlier positions, so the first token's share shrinks as 1/t, and a small model
learns to continue whatever key its own notes are in rather than the one it was asked for
(measured on the demo profile: the requested key's scale held ~0.6-0.8 of the notes, chance
level, with ``"first"``). Added to every position, the request is as present at the 200th note
as at the first.

Key-relative heads: with ``key_relative = true`` the pitch and chord heads also get logits
indexed by interval above the requested key's tonic (one per pitch class; one per root and chord
quality), rolled into place for each sequence's key. The dictionary is absolute (``Pitch_67``,
``G:M``), so without them "the tonic chord of the key I was given" is addition modulo 12 that
the network must learn key by key from a dozen pieces each; measured on the demo, the first
chord of a piece (the tonic in nine pieces of ten) got 31% probability after 10 minutes.

Bar positions: with ``bar_positions = N`` a learned embedding of the bar number (the Bar tokens
so far, counted from the start of the sequence or window, capped at N - 1) is added to every
input too. The sinusoidal positions count tokens, and tokens per bar vary with the music, so
without it a model cannot tell the fourth bar from the eighth: in the demo it learned each key's
scale but not that its pieces end on a V-I cadence, which is what makes the key audible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from podium.engine.families.cp.config import CPTransformerConfig
from podium.engine.families.cp.vocab import BAR, CHORD_QUALITIES, PITCH_MIN
from podium.engine.models.layers import PostNormBlock, SinusoidalPositions
from podium.engine.models.linear_attention import CausalLinearAttention

FIELDS = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion", "key")
"""The CP token's fields, in the order of the last axis of ``x`` and ``y``."""
TYPE = FIELDS.index("type")
"""Index of the token-type field, which conditions every other head."""
BAR_BEAT = FIELDS.index("bar_beat")
KEY = FIELDS.index("key")
N_REL = 12 + 12 * len(CHORD_QUALITIES)
"""Key-relative logits: 12 pitch classes, then 12 roots x the chord qualities, above the tonic."""
COND_FIELDS = (FIELDS.index("emotion"), FIELDS.index("key"))
"""The fields of the conditioning (Emotion) token that ``condition = "every"`` spreads."""


def key_relative_maps(n_pitch: int, n_chord: int) -> tuple[Tensor, Tensor]:
    """Per key token (row; 0 = no key), for each pitch and chord token, its column in the
    key-relative logits padded with a zero column (``N_REL``: tokens with no pitch class, and
    every token of a sequence without a key). (25, n_pitch) and (25, n_chord) int64."""
    n_q = len(CHORD_QUALITIES)
    pitch = torch.full((25, n_pitch), N_REL, dtype=torch.int64)
    chord = torch.full((25, n_chord), N_REL, dtype=torch.int64)
    tonic = (torch.arange(1, 25) - 1)[:, None] % 12  # (24, 1)
    pitch[1:, 1:] = (PITCH_MIN - 1 + torch.arange(1, n_pitch) - tonic) % 12
    named = torch.arange(min(n_chord - 2, 12 * n_q))  # chord tokens 2.. with a root and quality
    root, quality = named // n_q, named % n_q
    chord[1:, 2 : 2 + len(named)] = 12 + ((root - tonic) % 12) * n_q + quality
    return pitch, chord


def bars_after(x_t: Tensor, bars: Tensor | None) -> Tensor:
    """(B,) Bar tokens seen up to and including x_t (B, 9), from the count before it."""
    is_bar = (x_t[:, BAR_BEAT] == BAR).long()
    return is_bar if bars is None else bars + is_bar


@dataclass(frozen=True)
class CPState:
    """The recurrent state of ``CPTransformer.step``: what generation carries between tokens."""

    layers: list[tuple[Tensor, Tensor]]
    """Per layer, the linear attention's float32 ``(S, z)``."""
    cond: Tensor | None = None
    """(B, C) conditioning added to every input (``condition = "every"``), set at position 0."""
    bars: Tensor | None = None
    """(B,) int64 Bar tokens seen so far (``bar_positions``)."""


class CPTransformer(nn.Module):
    """EMOPIA-style CP transformer. ``forward(batch)`` returns one masked mean loss per field."""

    def __init__(self, cfg: CPTransformerConfig, vocab_sizes: Mapping[str, int]) -> None:
        super().__init__()
        missing = [f for f in FIELDS if f not in vocab_sizes]
        unknown = [f for f in vocab_sizes if f not in FIELDS]
        if missing or unknown:
            raise ValueError(
                f"vocab_sizes: missing {missing}, unknown {unknown} (must name exactly {FIELDS})"
            )
        self.cfg = cfg
        self.vocab_sizes = {f: int(vocab_sizes[f]) for f in FIELDS}
        C = cfg.d_model

        # ModuleLists in FIELDS order: a ModuleDict cannot hold the key "type" (Module.type).
        self.embeddings = nn.ModuleList(
            nn.Embedding(self.vocab_sizes[f], cfg.emb_sizes[f]) for f in FIELDS
        )
        self.emb_scale = [math.sqrt(cfg.emb_sizes[f]) for f in FIELDS]
        self.in_proj = nn.Linear(sum(cfg.emb_sizes.values()), C)
        self.cond_proj = (
            nn.Linear(sum(cfg.emb_sizes[FIELDS[i]] for i in COND_FIELDS), C)
            if cfg.condition == "every"
            else None
        )
        self.positions = SinusoidalPositions(C, cfg.max_len)
        self.bar_emb = nn.Embedding(cfg.bar_positions, C) if cfg.bar_positions else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            PostNormBlock(
                CausalLinearAttention(C, cfg.n_heads, cfg.dropout, cfg.attention_backend),
                C,
                cfg.d_ff,
                cfg.dropout,
                cfg.activation,
            )
            for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(C)
        # Two-stage output: type first, then every other field given the type.
        self.type_proj = nn.Linear(C + cfg.emb_sizes["type"], C)
        self.heads = nn.ModuleList(nn.Linear(C, self.vocab_sizes[f]) for f in FIELDS)
        self.rel_head = None
        if cfg.key_relative:
            self.rel_head = nn.Linear(C, N_REL)
            maps = key_relative_maps(self.vocab_sizes["pitch"], self.vocab_sizes["chord"])
            self.register_buffer("pitch_map", maps[0], persistent=False)
            self.register_buffer("chord_map", maps[1], persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # nanoGPT's scheme: N(0, 0.02) weights, zero biases; LayerNorm keeps ones/zeros.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- pieces ------------------------------------------------------------------------------

    def _embed(self, x: Tensor) -> Tensor:
        """x (..., 9) int64 -> (..., d_model): scaled per-field embeddings, joined, projected."""
        parts = [
            emb(x[..., i]) * scale
            for i, (emb, scale) in enumerate(zip(self.embeddings, self.emb_scale, strict=True))
        ]  # each (..., emb_f)
        return self.in_proj(torch.cat(parts, dim=-1))  # (..., C)

    def _condition(self, first: Tensor) -> Tensor | None:
        """first (B, 9): each sequence's Emotion token -> (B, C) added to every position's input,
        or None when the model is conditioned through the first token only."""
        if self.cond_proj is None:
            return None
        parts = [self.embeddings[i](first[..., i]) * self.emb_scale[i] for i in COND_FIELDS]
        return self.cond_proj(torch.cat(parts, dim=-1))  # (B, C)

    def hidden(self, x: Tensor) -> Tensor:
        """Parallel (training) pass: x (B, T, 9) int64 -> hidden states h (B, T, d_model).

        ``x[:, 0]`` is each sequence's Emotion token (training windows and generation both start
        with it)."""
        e = self._embed(x)  # (B, T, C)
        cond = self._condition(x[:, 0])
        if cond is not None:
            e = e + cond.unsqueeze(1)
        if self.bar_emb is not None:
            bars = (x[..., BAR_BEAT] == BAR).long().cumsum(dim=1)  # (B, T) bar number
            e = e + self.bar_emb(bars.clamp(max=self.cfg.bar_positions - 1))
        h = self.drop(self.positions(e))  # (B, T, C)
        for block in self.blocks:
            h = block(h)  # (B, T, C)
        return self.ln_f(h)  # (B, T, C)

    def type_logits(self, h: Tensor) -> Tensor:
        """h (..., d_model) -> logits over token types (..., n_type)."""
        return self.heads[TYPE](h)

    def field_logits(
        self, h: Tensor, type_tokens: Tensor, keys: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Logits of every field but ``type``, conditioned on the given token types.

        Args:
            h: (B, ..., d_model) hidden states.
            type_tokens: (B, ...) int64 types: the targets in training, the sampled ones in
                generation.
            keys: (B,) each sequence's key token (``x[:, 0, KEY]``); needed with
                ``key_relative``, ignored without.

        Returns:
            {field: (..., vocab_field)} for each field except ``type``, in FIELDS order.
        """
        t = self.embeddings[TYPE](type_tokens) * self.emb_scale[TYPE]  # (..., emb_type)
        g = self.type_proj(torch.cat([h, t], dim=-1))  # (..., C)
        out = {f: self.heads[i](g) for i, f in enumerate(FIELDS) if i != TYPE}
        if self.rel_head is not None:
            if keys is None:
                raise ValueError("keys: a key_relative model needs each sequence's key token")
            rel = F.pad(self.rel_head(g), (0, 1))  # (..., N_REL + 1): the last is 0, unused
            for f, table in (("pitch", self.pitch_map), ("chord", self.chord_map)):
                idx = table[keys]  # (B, V_f)
                idx = idx.view(idx.shape[0], *[1] * (h.dim() - 2), -1).expand(*h.shape[:-1], -1)
                out[f] = out[f] + rel.gather(-1, idx)
        return out

    def logits(
        self, h: Tensor, type_tokens: Tensor, keys: Tensor | None = None
    ) -> dict[str, Tensor]:
        """All nine heads' logits, in FIELDS order, given hidden states and the token types."""
        rest = self.field_logits(h, type_tokens, keys)
        return {f: self.type_logits(h) if f == "type" else rest[f] for f in FIELDS}

    # -- training ----------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-field masked mean cross-entropy.

        Args:
            batch: "x" (B, T, 9) int64 inputs, "y" (B, T, 9) int64 targets (every entry a valid
                token, padding included), "mask" (B, T) float, 1 where a target counts.

        Returns:
            {field: scalar loss} for the nine FIELDS, in order; no total (the trainer weights them).
        """
        x, y, mask = batch["x"], batch["y"], batch["mask"]
        h = self.hidden(x)  # (B, T, C)
        logits = self.logits(h, y[..., TYPE], x[:, 0, KEY])  # {f: (B, T, V_f)}
        m = mask.float()  # (B, T)
        denom = m.sum().clamp_min(1.0)
        losses: dict[str, Tensor] = {}
        for i, f in enumerate(FIELDS):
            ce = F.cross_entropy(
                logits[f].float().flatten(0, 1), y[..., i].flatten(), reduction="none"
            ).view_as(m)  # (B, T)
            losses[f] = (ce * m).sum() / denom
        return losses

    # -- generation --------------------------------------------------------------------------

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CPState:
        """Empty recurrent state: one (S, z) per layer (float32 unless told), no conditioning yet."""
        return CPState([b.attn.init_state(batch_size, device, dtype) for b in self.blocks])

    def step(self, x_t: Tensor, state: CPState, pos: int) -> tuple[Tensor, CPState]:
        """One CP token through the stack in O(1) memory.

        Args:
            x_t: (B, 9) int64, the token at position ``pos`` (at 0: the Emotion token).
            state: from ``init_state`` or the previous ``step``; not modified.
            pos: 0-based position of ``x_t``; must be < max_len.

        Returns:
            ``(h_t, state)``: h_t (B, d_model) equals ``hidden(x)[:, pos]`` in eval mode.
        """
        cond = self._condition(x_t) if pos == 0 else state.cond
        e = self._embed(x_t)  # (B, C)
        if cond is not None:
            e = e + cond
        bars = state.bars
        if self.bar_emb is not None:
            bars = bars_after(x_t, bars)
            e = e + self.bar_emb(bars.clamp(max=self.cfg.bar_positions - 1))
        h = self.drop(self.positions(e.unsqueeze(1), offset=pos)).squeeze(1)  # (B, C)
        layers = []
        for block, s in zip(self.blocks, state.layers, strict=True):
            h, s = block.step(h, s)  # (B, C)
            layers.append(s)
        return self.ln_f(h), CPState(layers, cond, bars)

    # -- bookkeeping -------------------------------------------------------------------------

    def configure_optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Two AdamW groups: matrices and embeddings decay; biases and norms do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def num_parameters(self) -> int:
        """Total parameter count (the fixed positional table is a buffer, not counted)."""
        return sum(p.numel() for p in self.parameters())
