"""The toy family's torch side: data, classifier, validation metrics and the probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from podium.engine.families.registry import LogFn
from podium.engine.metrics import Matrix, MetricValues, ModelOutput
from tests.families.toy import ToyDataConfig, ToyModelConfig


class Points(Dataset):
    """Fixed points: ``x`` (dim,), class ``y`` and regression target ``t`` (the first two
    coordinates' sum)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = torch.from_numpy(x.astype(np.float32))
        self.y = torch.from_numpy(y.astype(np.int64))
        self.t = self.x[:, :2].sum(dim=1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "t": self.t[i]}


@dataclass
class ToyBundle:
    train: Points
    val: Points | None
    model_info: dict[str, Any] = field(default_factory=dict)


def build_data(cfg: ToyDataConfig, log: LogFn) -> ToyBundle:
    """The same points for the same ``[data]`` table, on any machine (numpy's PCG64)."""
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    centres = rng.standard_normal((cfg.classes, cfg.dim)) * 2.0

    def split(n: int) -> Points:
        y = rng.permutation(np.arange(n) % cfg.classes)
        x = centres[y] + cfg.noise * rng.standard_normal((n, cfg.dim))
        return Points(x, y)

    train, val = split(cfg.n_train), split(cfg.n_val)
    log(f"toy: {cfg.classes} classes in {cfg.dim}-D, {cfg.n_train} train / {cfg.n_val} val points")
    return ToyBundle(train, val, {"classes": list(cfg.labels), "dim": cfg.dim})


class ToyClassifier(nn.Module):
    """One hidden layer; heads ``class`` (cross-entropy) and ``aux`` (MSE on ``t``)."""

    def __init__(self, cfg: ToyModelConfig, *, dim: int, classes: int) -> None:
        super().__init__()
        self.dim, self.classes = dim, classes
        self.body = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.cls = nn.Linear(cfg.hidden, classes)
        self.reg = nn.Linear(cfg.hidden, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.body(x))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        h = self.body(batch["x"])
        logits = self.cls(h)
        losses = {
            "class": nn.functional.cross_entropy(logits, batch["y"]),
            "aux": nn.functional.mse_loss(self.reg(h), batch["t"]),
        }
        return ModelOutput(losses=losses, outputs={"logits": logits})


class ToyMetrics:
    """Accuracy and the confusion matrix (rows: true class, columns: predicted; counts)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.counts = torch.zeros(len(labels), len(labels), dtype=torch.long)

    def update(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> None:
        pred = outputs["logits"].argmax(dim=-1).cpu()
        true = batch["y"].cpu()
        n = len(self.labels)
        self.counts += torch.bincount(true * n + pred, minlength=n * n).reshape(n, n)

    def compute(self) -> MetricValues:
        total = int(self.counts.sum())
        correct = int(self.counts.diagonal().sum())
        return MetricValues(
            scalars={"accuracy": correct / total if total else float("nan")},
            matrices={"confusion": Matrix.of(self.labels, self.labels, self.counts.tolist())},
        )


@torch.no_grad()
def confidence(model: nn.Module, points: int) -> float:
    """Mean top-class probability on fixed points (a private generator: the run's RNG is never
    touched); the model's mode is restored."""
    bare: Any = getattr(model, "module", model)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(points, bare.dim, generator=g).to(next(bare.parameters()).device)
    was_training = bare.training
    bare.eval()
    try:
        probs = bare.logits(x).float().softmax(dim=-1)
    finally:
        bare.train(was_training)
    return float(probs.max(dim=-1).values.mean())
