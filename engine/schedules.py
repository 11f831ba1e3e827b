"""Learning-rate schedules as pure functions of the step.

A pure function makes exact resume trivial (the step is all the state there is) and lets the
dashboard change the learning rate mid-run: ``rescale_to`` scales the peak so the schedule's shape
continues from the new value, and that one number is the schedule's checkpointed state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class LRSchedule:
    kind: str
    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1

    def factor(self, step: int) -> float:
        """Multiplier of ``base_lr`` for the update that follows ``step`` completed steps."""
        warm = self.warmup_steps
        if self.kind == "noam":
            # Vaswani et al. 2017, normalised so the peak (at the end of warmup) is 1.
            w = max(warm, 1)
            s = step + 1
            return min(s / w, math.sqrt(w / s))
        if warm and step < warm:
            return (step + 1) / warm
        if self.kind == "constant":
            return 1.0
        span = max(self.total_steps - warm, 1)
        progress = min(max(step - warm, 0) / span, 1.0)
        floor = self.min_lr_ratio
        if self.kind == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "onecycle":
            return 1.0 - (1.0 - floor) * progress
        raise ValueError(f"unknown schedule {self.kind!r}")

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def rescale_to(self, lr: float, step: int) -> None:
        """Make the learning rate at ``step`` equal ``lr``, keeping the schedule's shape."""
        f = self.factor(step)
        self.base_lr = lr / f if f > 0 else lr

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
