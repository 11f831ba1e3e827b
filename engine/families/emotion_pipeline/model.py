"""The five networks and the module that trains them together.

Each network is an MLP of the MidiKompanion guide's recipe: hidden layers of Linear + ReLU +
BatchNorm + Dropout, then a Linear to the width the C++ host expects and the output's activation
(Tanh, Sigmoid or Softmax). ``forward`` is what ONNX exports; ``raw`` gives the pre-activation
for numerically stable losses (BCE-with-logits, cross-entropy).

``EmotionPipeline.forward(batch)`` runs all five on one batch of examples (``data.py`` says
what each reads) and returns one loss per network, plus the outputs the validation metrics read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from podium.engine.families.emotion_pipeline.config import NetConfig, PipelineModelConfig
from podium.engine.metrics import ModelOutput


@dataclass(frozen=True)
class NetSpec:
    """What the host sees of one network: its ONNX file's name, widths and tensor names."""

    head: str
    """The loss head (and profile table) name."""
    title: str
    inputs: int
    outputs: int
    activation: str
    input_name: str
    output_name: str


SPECS = (
    NetSpec("emotion", "EmotionRecognizer", 128, 64, "tanh", "features", "emotion"),
    NetSpec("melody", "MelodyTransformer", 64, 128, "sigmoid", "emotion", "note_probs"),
    NetSpec("harmony", "HarmonyPredictor", 128, 64, "softmax", "context", "chord_probs"),
    NetSpec("dynamics", "DynamicsEngine", 32, 16, "sigmoid", "affect", "velocities"),
    NetSpec("groove", "GroovePredictor", 64, 32, "tanh", "emotion", "groove"),
)
HEADS = tuple(s.head for s in SPECS)


class Network(nn.Module):
    """One MLP: ``inputs`` -> hidden layers -> ``outputs``, then its activation."""

    def __init__(self, spec: NetSpec, cfg: NetConfig, dropout: float) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.inputs
        for hidden in cfg.hidden:
            layers += [
                nn.Linear(width, hidden),
                nn.ReLU(),
                nn.BatchNorm1d(hidden),
                nn.Dropout(dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, spec.outputs))
        self.body = nn.Sequential(*layers)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, outputs), before the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.spec.activation == "tanh":
            return torch.tanh(y)
        if self.spec.activation == "sigmoid":
            return torch.sigmoid(y)
        return torch.softmax(y, dim=-1)


def harmony_context(cond: torch.Tensor, prev_chord: torch.Tensor) -> torch.Tensor:
    """The HarmonyPredictor's 128 inputs: the emotion embedding and the previous chord, one-hot."""
    return torch.cat([cond, F.one_hot(prev_chord, 64).to(cond.dtype)], dim=-1)  # (B, 128)


def _masked_mean(per_row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)


class EmotionPipeline(nn.Module):
    """The five networks, trained together: heads emotion, melody, harmony, dynamics, groove."""

    def __init__(self, cfg: PipelineModelConfig) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(
            {s.head: Network(s, getattr(cfg, s.head), cfg.dropout) for s in SPECS}
        )

    def net(self, head: str) -> Network:
        return self.nets[head]  # type: ignore[return-value]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        cond, music = batch["cond"], batch["music"]  # (B, 64), (B,): 0 for recognizer-only rows
        emotion = self.net("emotion")(batch["features"])  # (B, 64)
        melody = self.net("melody").raw(cond)  # (B, 128) logits
        harmony = self.net("harmony").raw(harmony_context(cond, batch["prev_chord"]))  # (B, 64)
        dynamics = self.net("dynamics")(cond[:, :32])  # (B, 16)
        groove = self.net("groove")(cond)  # (B, 32)
        losses = {
            "emotion": F.mse_loss(emotion, batch["emotion"]),
            "melody": _masked_mean(
                F.binary_cross_entropy_with_logits(melody, batch["melody"], reduction="none").mean(
                    -1
                ),
                music,
            ),
            "harmony": _masked_mean(
                F.cross_entropy(harmony, batch["chord"], reduction="none"), music
            ),
            "dynamics": _masked_mean(((dynamics - batch["dynamics"]) ** 2).mean(-1), music),
            "groove": _masked_mean(((groove - batch["groove"]) ** 2).mean(-1), music),
        }
        outputs = {
            "emotion": emotion,
            "melody": torch.sigmoid(melody),
            "harmony": harmony,
            "dynamics": dynamics,
            "groove": groove,
        }
        return ModelOutput(losses=losses, outputs=outputs)


def param_count(cfg: PipelineModelConfig) -> int:
    """Trainable parameters, from the layer sizes (no torch): Linear weights and biases, and
    BatchNorm's two affine vectors per hidden layer."""
    total = 0
    for spec in SPECS:
        width = spec.inputs
        for hidden in getattr(cfg, spec.head).hidden:
            total += width * hidden + hidden + 2 * hidden
            width = hidden
        total += width * spec.outputs + spec.outputs
    return total
