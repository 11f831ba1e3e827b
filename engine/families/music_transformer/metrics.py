"""Next-token accuracy over the targets that count (torchmetrics' micro accuracy)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics.classification import MulticlassAccuracy

from podium.engine.metrics import MetricValues

IGNORE = -100


class NextTokenAccuracy:
    """Fraction of masked-in targets the argmax predicts (padding and conditioning excluded)."""

    def __init__(self, vocab_size: int) -> None:
        self.acc = MulticlassAccuracy(num_classes=vocab_size, average="micro", ignore_index=IGNORE)

    def update(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        target = batch["y"].masked_fill(batch["mask"] <= 0, IGNORE)
        self.acc.update(outputs["pred"].flatten().cpu(), target.flatten().cpu())

    def compute(self) -> MetricValues:
        return MetricValues(scalars={"accuracy": float(self.acc.compute())})
