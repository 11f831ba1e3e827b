"""One validation metric per network, each saying whether that network learned something.

=====================  ==================================================  =========
series                 what                                                 improves
=====================  ==================================================  =========
emotion_cosine         cosine similarity of predicted and true embedding    up
melody_f1              note-set F1 over the 128 pitches (threshold 0.5)     up
chord_accuracy         top-1 chord accuracy over the 64 classes            up
dynamics_mae           mean absolute velocity error, in MIDI velocity      down
groove_onset_accuracy  onset/no-onset accuracy over the bar's 16 steps      up
=====================  ==================================================  =========

All from torchmetrics. Real labelled examples (``music`` 0) count for the emotion metric only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchmetrics
from torchmetrics import classification, regression

from podium.engine.metrics import MetricValues


class PipelineMetrics:
    """Accumulates the five metrics over one validation pass (CPU, fresh per pass)."""

    def __init__(self) -> None:
        self.parts: dict[str, torchmetrics.Metric] = {
            "emotion_cosine": regression.CosineSimilarity(reduction="mean"),
            "melody_f1": classification.MultilabelF1Score(num_labels=128, average="micro"),
            "chord_accuracy": classification.MulticlassAccuracy(num_classes=64, average="micro"),
            "dynamics_mae": regression.MeanAbsoluteError(),
            "groove_onset_accuracy": classification.BinaryAccuracy(),
        }

    def update(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        out = {k: v.detach().float().cpu() for k, v in outputs.items()}
        music = batch["music"].cpu() > 0
        self.parts["emotion_cosine"].update(out["emotion"], batch["emotion"].float().cpu())
        if not music.any():
            return
        self.parts["melody_f1"].update(out["melody"][music], batch["melody"].cpu()[music].long())
        self.parts["chord_accuracy"].update(out["harmony"][music], batch["chord"].cpu()[music])
        self.parts["dynamics_mae"].update(
            out["dynamics"][music] * 127, batch["dynamics"].cpu()[music] * 127
        )
        onsets = (batch["groove"].cpu()[music][:, :16] > 0).long()
        chance = (out["groove"][music][:, :16] + 1) / 2  # Tanh's -1..1 as 0..1
        self.parts["groove_onset_accuracy"].update(chance, onsets)

    def compute(self) -> MetricValues:
        scalars = {}
        for name, metric in self.parts.items():
            scalars[name] = float(metric.compute()) if metric.update_count else float("nan")
        return MetricValues(scalars=scalars)
