"""The chord family's validation metrics, computed with torchmetrics.

Per head (type, root, bass): accuracy, top-3 accuracy and macro F1 as scalars
(``val/<head>/accuracy``...), and two matrices: the confusion matrix (rows true, columns
predicted, counts) and the per-class precision / recall / F1 (a row per class). Plus
``chord/accuracy``: the share of clips with all three heads right.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from podium.engine.metrics import Matrix, MetricValues

HEADS = ("type", "root", "bass")
TOP_K = 3


class ChordMetrics:
    """One validation pass's accumulators (the contract's ``ValidationMetrics``)."""

    def __init__(self, labels: Mapping[str, list[str]]) -> None:
        self.labels = {h: list(labels[h]) for h in HEADS}
        self.m: dict[str, dict[str, object]] = {}
        for h in HEADS:
            n = len(self.labels[h])
            kw = {"num_classes": n, "validate_args": False}
            self.m[h] = {
                "accuracy": MulticlassAccuracy(average="micro", **kw),
                f"top{TOP_K}": MulticlassAccuracy(average="micro", top_k=min(TOP_K, n), **kw),
                "f1": MulticlassF1Score(average="macro", **kw),
                "precision_c": MulticlassPrecision(average=None, **kw),
                "recall_c": MulticlassRecall(average=None, **kw),
                "f1_c": MulticlassF1Score(average=None, **kw),
                "confusion": MulticlassConfusionMatrix(**kw),
            }
        self.all_right = 0
        self.seen = 0

    def update(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        right = None
        for h in HEADS:
            logits = outputs[h].detach().float().cpu()
            target = batch[h].detach().cpu()
            for metric in self.m[h].values():
                metric.update(logits, target)  # type: ignore[attr-defined]
            hit = logits.argmax(dim=-1) == target
            right = hit if right is None else right & hit
        assert right is not None
        self.all_right += int(right.sum())
        self.seen += int(right.numel())

    def compute(self) -> MetricValues:
        scalars: dict[str, float] = {}
        matrices: dict[str, Matrix] = {}
        for h in HEADS:
            m = self.m[h]
            for name in ("accuracy", f"top{TOP_K}", "f1"):
                scalars[f"{h}/{name}"] = float(m[name].compute())  # type: ignore[attr-defined]
            labels = self.labels[h]
            confusion = m["confusion"].compute()  # type: ignore[attr-defined]
            matrices[f"{h}/confusion"] = Matrix.of(labels, labels, confusion.tolist())
            per_class = torch.stack(
                [m[k].compute() for k in ("precision_c", "recall_c", "f1_c")],  # type: ignore[attr-defined]
                dim=1,
            )  # (classes, 3)
            matrices[f"{h}/per_class"] = Matrix.of(
                labels, ("precision", "recall", "f1"), per_class.tolist()
            )
        scalars["chord/accuracy"] = self.all_right / self.seen if self.seen else float("nan")
        return MetricValues(scalars=scalars, matrices=matrices)
