"""The names of every stored series, in one place.

A run's store holds scalar series by name; the sinks write them, the dashboard, ``podium
metrics`` and ``podium runs`` read them. The names::

    train/loss            weighted total, every step          val/loss        each validation
    train/loss/<head>     one per output head                 val/loss/<head>
    val/<metric>          a family's validation metric (accuracy, top5, perplexity...)
    <group>/<name>        an epoch hook's values (the CP conditioning check: cond/valence...)
    lr  grad_norm  throughput/tokens_per_s  throughput/samples_per_s  throughput/mfu

Each plotted series also has a direction, the way it improves: losses fall ("min"); a metric or
an epoch hook's value is a score that rises ("max") unless its family declares it "min"
(``Family.direction``). The dashboard's "best" follows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
LR = "lr"
GRAD_NORM = "grad_norm"
TOKENS_PER_S = "throughput/tokens_per_s"
SAMPLES_PER_S = "throughput/samples_per_s"
MFU = "throughput/mfu"
"""Model FLOPs utilisation (0..1); only where the device's peak is known."""
STATS = (LR, GRAD_NORM, TOKENS_PER_S, SAMPLES_PER_S, MFU)
"""Per-step readings that are shown as numbers, not plotted with the losses."""

Kind = Literal["train_loss", "val_loss", "metric", "hook", "stat"]
Direction = Literal["min", "max"]
"""Which way a series improves: "min" (a loss, an error) or "max" (accuracy, a match rate)."""
DIRECTIONS: tuple[Direction, ...] = ("min", "max")


def train_loss(head: str | None = None) -> str:
    return TRAIN_LOSS if head is None else f"{TRAIN_LOSS}/{head}"


def val_loss(head: str | None = None) -> str:
    return VAL_LOSS if head is None else f"{VAL_LOSS}/{head}"


def val_metric(name: str) -> str:
    return f"val/{name}"


def hook_series(group: str, name: str) -> str:
    return f"{group}/{name}"


def kind(name: str) -> Kind:
    """Which of the families of names above ``name`` belongs to."""
    if name == TRAIN_LOSS or name.startswith(TRAIN_LOSS + "/"):
        return "train_loss"
    if name == VAL_LOSS or name.startswith(VAL_LOSS + "/"):
        return "val_loss"
    if name in STATS or name.startswith("throughput/"):
        return "stat"
    if name.startswith("val/"):
        return "metric"
    return "hook"


def default_direction(name: str) -> Direction:
    """The direction of a series whose family declares none: losses fall, everything else is
    taken for a score (the stats, lr and grad norm, have no better way and are never judged)."""
    return "min" if kind(name) in ("train_loss", "val_loss") else "max"


def best(values: Iterable[float], direction: Direction) -> float | None:
    """The best of ``values`` (NaNs left out) in ``direction``; None when there is none."""
    finite = [v for v in values if v == v]
    if not finite:
        return None
    return min(finite) if direction == "min" else max(finite)


def head_of(name: str) -> str | None:
    """The head of a per-head loss series, else None."""
    for prefix in (TRAIN_LOSS + "/", VAL_LOSS + "/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def metric_of(name: str) -> str:
    """``val/accuracy`` -> ``accuracy``."""
    return name.removeprefix("val/")


def group_of(name: str) -> str:
    """An epoch hook series' group: ``cond/valence`` -> ``cond``."""
    return name.split("/", 1)[0]


def plotted(names: Iterable[str]) -> list[str]:
    """The series the dashboard plots: losses, metrics and hook values (not the stats)."""
    return [n for n in names if kind(n) != "stat"]


def heads_in(names: Iterable[str]) -> list[str]:
    """The heads that have a training loss series, sorted."""
    return sorted({h for n in names if kind(n) == "train_loss" and (h := head_of(n)) is not None})


def metrics_in(names: Iterable[str]) -> list[str]:
    """Validation metrics present (``val/accuracy`` -> ``accuracy``), sorted."""
    return sorted(metric_of(n) for n in names if kind(n) == "metric")


def hook_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Hook series by group, each group's names sorted."""
    out: dict[str, list[str]] = {}
    for n in sorted(names):
        if kind(n) == "hook":
            out.setdefault(group_of(n), []).append(n)
    return out


def step_values(
    *,
    loss: float,
    losses: Mapping[str, float],
    lr: float,
    grad_norm: float,
    tokens_per_s: float,
    samples_per_s: float,
    mfu: float | None = None,
) -> dict[str, float]:
    """One training step's series (MFU only when it is known)."""
    values = {TRAIN_LOSS: loss, LR: lr, GRAD_NORM: grad_norm}
    values.update({train_loss(h): v for h, v in losses.items()})
    values[TOKENS_PER_S] = tokens_per_s
    values[SAMPLES_PER_S] = samples_per_s
    if mfu is not None:
        values[MFU] = mfu
    return values


def eval_values(
    *, loss: float, losses: Mapping[str, float], metrics: Mapping[str, float]
) -> dict[str, float]:
    """One validation pass's series."""
    values = {VAL_LOSS: loss}
    values.update({val_loss(h): v for h, v in losses.items()})
    values.update({val_metric(m): v for m, v in metrics.items()})
    return values
