"""What validation measures beyond the loss: the value types and the accumulator a family gives.

A family that declares metrics gives the trainer a fresh ``ValidationMetrics`` per validation
pass; its model returns a ``ModelOutput`` whose ``outputs`` (logits, predictions) the accumulator
reads, so validation costs one forward per batch. Scalars become series ``val/<name>``; matrices
(a confusion matrix) are stored latest per step and drawn as a heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class ModelOutput:
    """A model's result when validation metrics need more than its losses."""

    losses: Mapping[str, Tensor]
    """Scalar loss per head (masked means), as a plain model returns them."""
    outputs: Mapping[str, Tensor] = field(default_factory=dict)
    """Whatever the family's metrics read (logits by head, say); detached by the reader."""


def split_output(
    result: Mapping[str, Tensor] | ModelOutput,
) -> tuple[Mapping[str, Tensor], Mapping[str, Tensor]]:
    """(losses, outputs) of a model's ``forward``: a mapping of losses, or a ``ModelOutput``."""
    if isinstance(result, ModelOutput):
        return result.losses, result.outputs
    return result, {}


@dataclass(frozen=True)
class Matrix:
    """A small labelled matrix (rows x cols), e.g. a confusion matrix: rows true, columns
    predicted, values counts or row-normalised fractions."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.rows) or any(len(r) != len(self.cols) for r in self.values):
            raise ValueError(
                f"matrix: {len(self.rows)} x {len(self.cols)} labels for values of another shape"
            )

    @classmethod
    def of(cls, rows: Sequence[str], cols: Sequence[str], values: Any) -> Matrix:
        """From labels and anything nested of numbers (a list of lists, a tensor's ``tolist()``)."""
        return cls(tuple(rows), tuple(cols), tuple(tuple(float(v) for v in r) for r in values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": list(self.rows),
            "cols": list(self.cols),
            "values": [[v if math.isfinite(v) else None for v in r] for r in self.values],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Matrix:
        """The inverse of ``to_dict`` (JSON ``null`` is NaN); ValueError when malformed."""
        try:
            values = [[math.nan if v is None else float(v) for v in r] for r in data["values"]]
            return cls.of(data["rows"], data["cols"], values)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"matrix: malformed ({exc})") from None


@dataclass(frozen=True)
class MetricValues:
    """One validation pass's metrics."""

    scalars: dict[str, float] = field(default_factory=dict)
    matrices: dict[str, Matrix] = field(default_factory=dict)


class ValidationMetrics(Protocol):
    """Accumulates over one validation pass (fresh per pass; rank 0 only)."""

    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        """One batch: the model's ``ModelOutput.outputs`` and the batch it saw."""
        ...

    def compute(self) -> MetricValues:
        """The pass's metrics, named as the family declares them."""
        ...
