"""The one assembly: profile -> data, model and trainer, for any family.

The session (rank 0, or the only process) and every DDP worker build their run here, so they
cannot drift apart: the same seeding gives every rank the same data and the same initial
weights. Only rank 0 validates, checkpoints and runs the family's epoch hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podium.engine import series
from podium.engine.config import Profile
from podium.engine.families.registry import DataBundle, Family, LogFn
from podium.engine.trainer import Trainer, seed_everything

if TYPE_CHECKING:
    import torch
    from torch import nn

    from podium.engine.checkpoints import Checkpointer
    from podium.engine.distributed import RankGroup
    from podium.engine.events import EventBus
    from podium.engine.metrics import ValidationMetrics


@dataclass
class Assembly:
    """A profile's family, data and fresh model."""

    profile: Profile
    family: Family
    data: DataBundle
    model: nn.Module

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def assemble(profile: Profile, *, log: LogFn) -> Assembly:
    """Build the data and the model, seeded by the profile (the same on every rank)."""
    family = profile.family_spec
    seed_everything(profile.train.seed)
    data = family.build_data(profile.data, log)
    # Re-seed: preparing data on first use may draw random numbers that a cached run would not.
    seed_everything(profile.train.seed)
    model = family.build_model(profile.model, data.model_info)
    return Assembly(profile=profile, family=family, data=data, model=model)


def checkpoint_extras(assembly: Assembly) -> dict[str, Any]:
    """What every checkpoint holds beside the trainer's state: the resolved profile, its hash,
    the family and the data info its model is rebuilt from, and the family's own state."""
    profile = assembly.profile
    extras: dict[str, Any] = {
        "profile": profile.to_dict(),
        "profile_hash": profile.hash(),
        "family": profile.family,
        "data_info": dict(assembly.data.model_info),
    }
    if assembly.family.extra_state is not None:
        extras.update(assembly.family.extra_state(assembly.data))
    return extras


def build_trainer(
    assembly: Assembly,
    *,
    device: torch.device,
    bus: EventBus,
    checkpointer: Checkpointer | None,
    max_steps: int | None,
    max_epochs: int | None,
    group: RankGroup | None = None,
) -> Trainer:
    """The trainer for an assembly. Rank 0 (``group`` None or lead) validates, measures and
    checkpoints; the other ranks only train."""
    profile = assembly.profile
    lead = group is None or group.is_lead
    trainer = Trainer(
        model=assembly.model,
        train_set=assembly.data.train,
        val_set=assembly.data.val if lead else None,
        cfg=profile.train,
        loss_weights=profile.loss_weights,
        checkpointer=checkpointer if lead else None,
        bus=bus,
        device=device,
        max_steps=max_steps,
        max_epochs=max_epochs,
        extra_state=checkpoint_extras(assembly) if lead else None,
        save_every_steps=profile.checkpoint.every_steps,
        group=group,
        metrics=_metrics_factory(assembly) if lead else None,
        best_metrics={
            m: assembly.family.direction(series.val_metric(m))
            for m in profile.checkpoint.best_metrics
        },
    )
    if lead:
        trainer.on_epoch_end = epoch_hooks(trainer, assembly)
    return trainer


def _metrics_factory(assembly: Assembly) -> Callable[[], ValidationMetrics] | None:
    build = assembly.family.build_metrics
    if build is None:
        return None
    model_cfg, info = assembly.profile.model, dict(assembly.data.model_info)
    return lambda: build(model_cfg, info)


def epoch_hooks(
    trainer: Trainer, assembly: Assembly
) -> Callable[[], Mapping[str, float] | None] | None:
    """The family's epoch hooks as the trainer's end-of-epoch callback (None when none is on).

    A hook that fails to generate (a diverging model) is skipped with a warning; training goes
    on."""
    from podium.engine.generate import GenerateError

    profile = assembly.profile
    active = [(h, h.every_epochs(profile)) for h in assembly.family.epoch_hooks]
    active = [(h, every) for h, every in active if every > 0]
    if not active:
        return None

    def run_hooks() -> Mapping[str, float] | None:
        epoch = trainer.state.epoch
        values: dict[str, float] = {}
        for hook, every in active:
            if epoch % every:
                continue
            try:
                values.update(hook.run(trainer.model, profile, epoch))
            except GenerateError as exc:
                trainer._message("warning", f"{hook.name} skipped: {exc}")
        return values or None

    return run_hooks
