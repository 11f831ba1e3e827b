"""The CP transformer's one-token step with its weights laid out for generation.

``CPTransformer.step`` is the readable recurrent form: it walks the modules as training does.
At one token per call on small models the cost is Python and dispatch, not arithmetic: the demo
model spent ~200 tensor operations per token, most of them on tensors of a few hundred numbers.
``CPStepper`` takes a snapshot of the weights and folds what can be folded ahead of time:

- the nine embeddings, their scales and the input projection become one table of projected
  rows, so embedding a token is one gather and one sum (likewise the conditioning projection);
- query, key and value become one matrix per layer;
- each value gets a column of ones, so the state's last column is the normaliser's sum and one
  product per layer gives the attention's numerator and denominator;
- the two-stage output becomes one matrix product for the type head and the non-type heads'
  share of the hidden state, plus one row per sampled type, added on the host where the
  sampler works (logits come back side by side, ``rest_sizes`` wide each, in ``REST`` order);
  key-relative logits likewise.

On the CPU a model of tens of millions of parameters is bound by memory instead: one token
reads every matrix once (emopia-cp's 39M: ~150 MB a token in float32). ``matrices=bfloat16``
keeps the five matrices of each layer and the output's in bfloat16 (half the bytes a token
reads) and everything else in float32: embeddings, biases, layer norms and the attention state,
which sums over the whole piece and would lose its small terms in bfloat16.

In float32 it computes what ``CPTransformer.step`` computes in eval mode (a test holds them
equal), and it is a snapshot: build a new one after the weights change (``sample_cp_batch``
builds one per call, which costs a few weight copies). Dropout never applies: this is for
inference only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from podium.engine.families.cp.model import (
    COND_FIELDS,
    FIELDS,
    TYPE,
    CPState,
    CPTransformer,
    bars_after,
)
from podium.engine.models.linear_attention import EPS

REST = tuple(f for f in FIELDS if f != "type")
"""The heads sampled after the type, in FIELDS order: the column blocks of ``rest_logits``."""


@dataclass(frozen=True)
class _Layer:
    wqkv: Tensor  # (3C, C)
    bqkv: Tensor  # (3C,)
    wo: Tensor
    bo: Tensor
    ln1: tuple[Tensor, Tensor, float]
    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor
    ln2: tuple[Tensor, Tensor, float]


def _projected_table(
    model: CPTransformer, fields: tuple[int, ...], weight: Tensor
) -> tuple[Tensor, Tensor]:
    """Each field's scaled embedding rows times its columns of ``weight``, stacked, and the row
    offset of each field: (sum of vocabularies, C), (len(fields),)."""
    rows, offsets, col, lo = [], [], 0, 0
    for i in fields:
        emb = model.embeddings[i].weight * model.emb_scale[i]  # (V_i, e_i)
        rows.append(emb @ weight[:, col : col + emb.shape[1]].T)  # (V_i, C)
        offsets.append(lo)
        col += emb.shape[1]
        lo += emb.shape[0]
    return torch.cat(rows), torch.tensor(offsets, device=weight.device)


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``F.linear`` with ``w`` in float32 or bfloat16 (x, b and the result in float32)."""
    if w.dtype == x.dtype:
        return F.linear(x, w, b)
    return F.linear(x.to(w.dtype), w).to(x.dtype) + b


class CPStepper:
    """One-token steps and output heads of a ``CPTransformer``, from a snapshot of its weights."""

    @torch.no_grad()
    def __init__(self, model: CPTransformer, *, matrices: torch.dtype | None = None) -> None:
        """``matrices``: the dtype the big matrices are kept in (None: the model's; see the
        module docstring for bfloat16)."""
        self.max_len = int(model.cfg.max_len)
        self.n_heads = model.cfg.n_heads
        self.act = F.gelu if model.cfg.activation == "gelu" else F.relu
        self.table, self.offsets = _projected_table(
            model, tuple(range(len(FIELDS))), model.in_proj.weight
        )
        self.cond_table = self.cond_offsets = self.cond_bias = None
        if model.cond_proj is not None:
            self.cond_table, self.cond_offsets = _projected_table(
                model, COND_FIELDS, model.cond_proj.weight
            )
            self.cond_bias = model.cond_proj.bias.clone()
        # The input projection's bias and the position table, added together ahead of time.
        self.pos_bias = model.positions.table.to(self.table.dtype) + model.in_proj.bias
        self.bar_table = None if model.bar_emb is None else model.bar_emb.weight.clone()
        C, H = model.cfg.d_model, model.cfg.n_heads
        D = C // H
        self.layers = []
        for block in model.blocks:
            a, ffn = block.attn, block.ffn
            # Per head, the value gets one more column that is always 1 (zero weights, bias
            # 1): the running sum of phi(k) v^T then carries the normaliser's sum of phi(k) in
            # its last column, and one product gives numerator and denominator together.
            wv = F.pad(a.value.weight.view(H, D, C), (0, 0, 0, 1)).reshape(H * (D + 1), C)
            bv = F.pad(a.value.bias.view(H, D), (0, 1), value=1.0).reshape(H * (D + 1))
            self.layers.append(
                _Layer(
                    wqkv=torch.cat([a.query.weight, a.key.weight, wv]),
                    bqkv=torch.cat([a.query.bias, a.key.bias, bv]),
                    wo=a.out.weight.clone(),
                    bo=a.out.bias.clone(),
                    ln1=(
                        block.ln_attn.weight.clone(),
                        block.ln_attn.bias.clone(),
                        block.ln_attn.eps,
                    ),
                    w1=ffn.fc_in.weight.clone(),
                    b1=ffn.fc_in.bias.clone(),
                    w2=ffn.fc_out.weight.clone(),
                    b2=ffn.fc_out.bias.clone(),
                    ln2=(block.ln_ffn.weight.clone(), block.ln_ffn.bias.clone(), block.ln_ffn.eps),
                )
            )
        self.ln_f = (model.ln_f.weight.clone(), model.ln_f.bias.clone(), model.ln_f.eps)
        # Output, folded: type_proj(cat(h, emb(type))) = h @ W_h^T + (emb(type) @ W_t^T + b),
        # so the non-type heads' logits are h @ (W_rest W_h)^T + a row per type, and the type
        # head and that first term are one matrix product (``heads``).
        w = model.type_proj.weight  # (C, C + e_type)
        emb = model.embeddings[TYPE].weight * model.emb_scale[TYPE]  # (n_type, e_type)
        type_rows = emb @ w[:, C:].T + model.type_proj.bias  # (n_type, C)
        rest = [model.heads[i] for i, f in enumerate(FIELDS) if f != "type"]
        w_rest = torch.cat([h.weight for h in rest])  # (sum V_rest, C)
        b_rest = torch.cat([h.bias for h in rest])
        self.rest_sizes = [h.weight.shape[0] for h in rest]
        self.n_type = model.heads[TYPE].weight.shape[0]
        blocks = [model.heads[TYPE].weight, w_rest @ w[:, :C]]
        tables = [type_rows @ w_rest.T + b_rest]  # (n_type, R): per sampled type
        # Key-relative logits (``key_relative``) fold the same way, after the others;
        # ``_rel_map`` says, per key token, where each column of the rest block finds its
        # interval above the tonic (the padding column n_rel, which is 0, outside pitch and chord).
        self.n_rel = 0
        self._rel_map = None
        if model.rel_head is not None:
            self.n_rel = model.rel_head.weight.shape[0]
            blocks.append(model.rel_head.weight @ w[:, :C])
            tables.append(type_rows @ model.rel_head.weight.T + model.rel_head.bias)
            maps = {"pitch": model.pitch_map, "chord": model.chord_map}
            self._rel_map = np.concatenate(
                [
                    maps[f].cpu().numpy()
                    if f in maps
                    else np.full((len(maps["pitch"]), size), self.n_rel)
                    for f, size in zip(REST, self.rest_sizes, strict=True)
                ],
                axis=1,
            )  # (25, R)
        self.w_out = torch.cat(blocks)  # (n_type + R + n_rel, C)
        if matrices is not None and matrices != self.w_out.dtype:
            self.layers = [
                replace(
                    L,
                    wqkv=L.wqkv.to(matrices),
                    wo=L.wo.to(matrices),
                    w1=L.w1.to(matrices),
                    w2=L.w2.to(matrices),
                )
                for L in self.layers
            ]
            self.w_out = self.w_out.to(matrices)
        type_bias = model.heads[TYPE].bias
        self.b_out = torch.cat([type_bias, type_bias.new_zeros(len(self.w_out) - self.n_type)])
        self._rest_table, *rel = [t.double().cpu().numpy() for t in tables]
        self._rel_table = rel[0] if rel else None

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> CPState:
        """Empty state: per layer one (B, H, D, D + 1) sum of phi(k) [v, 1]^T, in the weights'
        dtype (``CPTransformer.step``'s (S, z) side by side)."""
        D = self.table.shape[1] // self.n_heads
        shape = (batch_size, self.n_heads, D, D + 1)
        return CPState(
            [torch.zeros(shape, device=device, dtype=self.table.dtype) for _ in self.layers]
        )

    def step(self, x_t: Tensor, state: CPState, pos: int) -> tuple[Tensor, CPState]:
        """``CPTransformer.step`` in eval mode: x_t (B, 9) at ``pos`` -> (h_t (B, C), state)."""
        if pos >= self.max_len:
            raise ValueError(f"max_len: position {pos} is past max_len {self.max_len}")
        B = x_t.shape[0]
        h = self.table[x_t + self.offsets].sum(dim=1) + self.pos_bias[pos]  # (B, C)
        cond = state.cond
        if pos == 0 and self.cond_table is not None:
            cols = x_t[:, list(COND_FIELDS)] + self.cond_offsets  # (B, 2)
            cond = self.cond_table[cols].sum(dim=1) + self.cond_bias  # (B, C)
        if cond is not None:
            h = h + cond
        bars = state.bars
        if self.bar_table is not None:
            bars = bars_after(x_t, bars)  # (B,)
            h = h + self.bar_table[bars.clamp(max=len(self.bar_table) - 1)]
        C = h.shape[1]
        H = self.n_heads
        D = C // H
        layers = []
        for L, S in zip(self.layers, state.layers, strict=True):
            qkv = _linear(h, L.wqkv, L.bqkv)  # (B, 2C + H(D+1))
            phi = F.elu(qkv[:, : 2 * C].view(B, 2, H, D)) + 1.0  # (B, 2, H, D): phi(q), phi(k)
            v = qkv[:, 2 * C :].view(B, H, 1, D + 1)  # values and a column of ones
            S = torch.addcmul(S, phi[:, 1].unsqueeze(-1), v)  # (B, H, D, D + 1)
            nd = phi[:, 0].unsqueeze(-2) @ S  # (B, H, 1, D + 1): numerator, denominator
            y = (nd[..., :D] / (nd[..., D:] + EPS)).view(B, C)
            h = F.layer_norm(h + _linear(y, L.wo, L.bo), (C,), *L.ln1)
            f = _linear(self.act(_linear(h, L.w1, L.b1)), L.w2, L.b2)
            h = F.layer_norm(h + f, (C,), *L.ln2)
            layers.append(S)
        return F.layer_norm(h, (C,), *self.ln_f), CPState(layers, cond, bars)

    def heads(self, h: Tensor) -> Tensor:
        """h (B, C) -> (B, n_type + R + n_rel): the type logits, then the non-type heads' share
        of h, then the key-relative heads' share, in one product; ``rest_logits`` adds the
        sampled type's part and rolls the key-relative logits into place."""
        return _linear(h, self.w_out, self.b_out)

    def rest_logits(self, out: np.ndarray, types: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``heads``'s output as float64 numpy (B, n_type + R + n_rel), the sampled types (B,)
        and each row's key token (B,) -> (B, R): the eight non-type heads' logits side by side,
        ``rest_sizes`` wide each, in ``REST`` order.

        In numpy because the sampler is: the type's logits come to the host to be sampled
        anyway, and a second copy plus a dozen small torch ops per token cost ~7% of a step.
        """
        n, R = self.n_type, sum(self.rest_sizes)
        rest = out[:, n : n + R] + self._rest_table[types]
        if self._rel_table is not None:
            rel = out[:, n + R :] + self._rel_table[types]
            rel = np.concatenate([rel, np.zeros((len(rel), 1))], axis=1)  # the 0 column
            rest += np.take_along_axis(rel, self._rel_map[keys], axis=1)
        return rest
