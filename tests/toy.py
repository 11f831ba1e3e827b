"""A tiny two-head model and dataset for testing the generic loop without any music code."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class ToyData(Dataset):
    """Regression and classification targets from fixed random inputs."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x.sum(dim=1) > 0).long()
        self.t = self.x[:, :2].sum(dim=1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "t": self.t[i]}


class ToyModel(nn.Module):
    """Returns named losses like every podium model; ``poison`` makes the next losses NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2))
        self.cls = nn.Linear(16, 2)
        self.reg = nn.Linear(16, 1)
        self.poison = False

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.body(batch["x"])
        losses = {
            "cls": nn.functional.cross_entropy(self.cls(h), batch["y"]),
            "reg": nn.functional.mse_loss(self.reg(h), batch["t"]),
        }
        if self.poison:
            losses["reg"] = losses["reg"] * float("nan")
        return losses
