"""A toy family: a tiny MLP that classifies fixed random points into a few classes.

It lives outside podium on purpose (``family = "tests.families.toy"``): everything the loop, the
store, the CLI and the socket do with it goes through the family contract only. It has two heads
(``class``: cross-entropy, ``aux``: a small regression), validation metrics (``accuracy`` and a
``confusion`` matrix), an own profile table (``[probe]``) driving an epoch hook, and a sampler
with one conditioning option (``--mood calm|busy``) that writes a few notes as MIDI.

Like a real family, this module stays light: torch and pretty_midi are imported by the builders.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podium.engine.families.registry import (
    ConditionOption,
    DataBundle,
    DataInfo,
    EpochHook,
    Family,
    LogFn,
    ModelCost,
    Sample,
    SampleRequest,
    SamplerSpec,
)

if TYPE_CHECKING:
    import pretty_midi
    import torch
    from torch import nn

    from podium.engine.config import Profile
    from podium.engine.metrics import ValidationMetrics

HEADS = ("class", "aux")
MOODS = ("calm", "busy")


@dataclass(frozen=True, kw_only=True)
class ToyModelConfig:
    """``[model]``: one hidden layer."""

    hidden: int = 16
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1 (got {self.hidden})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")


@dataclass(frozen=True, kw_only=True)
class ToyDataConfig:
    """``[data]``: points around one random centre per class, all drawn from ``seed``."""

    seed: int = 0
    classes: int = 3
    dim: int = 8
    n_train: int = 240
    n_val: int = 60
    noise: float = 1.0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= 26:
            raise ValueError(f"classes: must be between 2 and 26 (got {self.classes})")
        if self.dim < 2:
            raise ValueError(f"dim: must be >= 2 (got {self.dim})")
        for name in ("n_train", "n_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.noise < 0:
            raise ValueError(f"noise: must be >= 0 (got {self.noise})")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(string.ascii_uppercase[: self.classes])


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """``[probe]``, the family's own table: how often the epoch hook measures confidence."""

    every_epochs: int = 1
    """0 turns the hook off."""
    points: int = 32

    def __post_init__(self) -> None:
        if self.every_epochs < 0:
            raise ValueError(f"every_epochs: must be >= 0 (got {self.every_epochs})")
        if self.points < 1:
            raise ValueError(f"points: must be >= 1 (got {self.points})")


def _build_data(cfg: ToyDataConfig, log: LogFn) -> DataBundle:
    from tests.families.toy.model import build_data

    return build_data(cfg, log)


def _build_model(cfg: ToyModelConfig, info: DataInfo) -> nn.Module:
    from tests.families.toy.model import ToyClassifier

    return ToyClassifier(cfg, dim=int(info["dim"]), classes=len(info["classes"]))


def param_count(cfg: ToyModelConfig, dim: int, classes: int) -> int:
    """The classifier's parameters, counted from its layers' shapes (no torch)."""
    body = dim * cfg.hidden + cfg.hidden
    return body + (cfg.hidden * classes + classes) + (cfg.hidden + 1)


def _cost(cfg: ToyModelConfig, data: ToyDataConfig) -> ModelCost:
    params = param_count(cfg, data.dim, data.classes)
    return ModelCost(params=params, flops_per_token=6.0 * params)


def _check(model: ToyModelConfig, data: ToyDataConfig, sections: Mapping[str, Any]) -> None:
    probe: ProbeConfig = sections["probe"]
    if probe.points > data.n_val * 100:
        raise ValueError(f"probe.points: at most 100 x data.n_val ({data.n_val * 100})")


def _build_metrics(cfg: ToyModelConfig, info: DataInfo) -> ValidationMetrics:
    from tests.families.toy.model import ToyMetrics

    return ToyMetrics(tuple(info["classes"]))


# -- sampling ---------------------------------------------------------------------------------


def _check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    from podium.engine.generate import GenerateError

    mood = str(conditioning.get("mood", "") or "").strip().lower()
    if mood and mood not in MOODS:
        raise GenerateError(f"--mood {mood!r}: must be one of {', '.join(MOODS)}")
    return {"mood": mood}


def _sample(
    model: nn.Module, profile: Profile, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    from tests.families.toy.sampler import sample_batch

    return sample_batch(model, requests, device)


def _to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    from tests.families.toy.sampler import to_midi

    return to_midi(sample)


SAMPLER = SamplerSpec(
    options=(
        ConditionOption(name="mood", help="calm or busy (blank: drawn by the seed)", choices=MOODS),
    ),
    check=_check_conditioning,
    sample=_sample,
    to_midi=_to_midi,
)


# -- the epoch hook ---------------------------------------------------------------------------


def _probe_every(profile: Profile) -> int:
    return profile.section("probe").every_epochs


def _run_probe(model: nn.Module, profile: Profile, epoch: int) -> Mapping[str, float]:
    from tests.families.toy.model import confidence

    return {"probe/confidence": confidence(model, profile.section("probe").points)}


PROBE = EpochHook(
    name="confidence probe",
    group="probe",
    title="probe · mean top-class probability on fixed points",
    every_epochs=_probe_every,
    run=_run_probe,
)


FAMILY: Family[ToyModelConfig, ToyDataConfig] = Family(
    name="toy",
    description="a tiny MLP classifying random points (tests only)",
    model_config=ToyModelConfig,
    data_config=ToyDataConfig,
    sections={"probe": ProbeConfig},
    heads=HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    check=_check,
    metrics=("accuracy",),
    matrices=("confusion",),
    build_metrics=_build_metrics,
    sampler=SAMPLER,
    epoch_hooks=(PROBE,),
)
