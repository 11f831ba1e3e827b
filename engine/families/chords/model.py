"""The chord recogniser: CQT front end, convolutional subsampling, a small transformer
encoder, mean pooling and three heads (chord type 32, root 12, bass 12).

    audio (B, S) -> CQT (B, F, T) -> 2 convs, time / 4, frequency / 2 -> (B, T/4, d_model)
    -> transformer encoder -> mean over time -> type / root / bass logits

No positional encoding: a window holds one chord, and what the heads need (which pitch
classes sound, which is lowest) does not depend on when in the window a frame is; the convs
already see their neighbours. The pooled vector reaches each head through its own linear
layer; the losses are cross-entropies with the profile's label smoothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from podium.engine.families.chords.config import ChordModelConfig
from podium.engine.families.chords.frontend import Frontend
from podium.engine.families.chords.labels import TYPES
from podium.engine.metrics import ModelOutput

HEAD_CLASSES = {"type": len(TYPES), "root": 12, "bass": 12}


class ChordRecognizer(nn.Module):
    def __init__(self, cfg: ChordModelConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = Frontend(cfg, sample_rate)
        c = cfg.channels
        self.subsample = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=(5, 3), stride=(1, 2), padding=(2, 1)),
            nn.GELU(),
            nn.Conv2d(c, c, kernel_size=(5, 3), stride=(2, 2), padding=(2, 1)),
            nn.GELU(),
        )
        freq = (cfg.n_bins + 1) // 2
        self.proj = nn.Linear(c * freq, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.d_ff,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        # "to_type": ModuleDict keys may not shadow Module attributes ("type" is one).
        self.heads = nn.ModuleDict(
            {f"to_{h}": nn.Linear(cfg.d_model, n) for h, n in HEAD_CLASSES.items()}
        )

    def logits(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each head's logits for a batch of clips (B, samples)."""
        x = self.frontend(audio).unsqueeze(1)  # (B, 1, F, T)
        x = self.subsample(x)  # (B, C, F/2, T/4)
        b, c, f, t = x.shape
        x = self.proj(x.permute(0, 3, 1, 2).reshape(b, t, c * f))  # (B, T/4, d_model)
        x = self.encoder(x)  # (B, T/4, d_model)
        pooled = self.drop(self.norm(x.mean(dim=1)))  # (B, d_model)
        return {h: self.heads[f"to_{h}"](pooled) for h in HEAD_CLASSES}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        logits = self.logits(batch["audio"])
        smoothing = self.cfg.label_smoothing
        losses = {
            h: F.cross_entropy(logits[h], batch[h], label_smoothing=smoothing) for h in logits
        }
        return ModelOutput(losses=losses, outputs=logits)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
