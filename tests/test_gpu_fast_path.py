"""On a CUDA GPU: a training step in bf16 with fused AdamW syncs with the host nowhere, and a
non-finite update is still skipped. Skipped without a GPU (bench/gpu_check.py runs it)."""

from __future__ import annotations

import pytest
import torch

from podium.engine.events import EventBus
from podium.engine.train_config import TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.toy import ToyData, ToyModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(**cfg) -> Trainer:
    seed_everything(0)
    return Trainer(
        model=ToyModel(),
        train_set=ToyData(256),
        val_set=None,
        cfg=TrainConfig(epochs=10, batch_size=8, lr=1e-2, device="cuda", **cfg),
        loss_weights={"cls": 1.0, "reg": 0.5},
        checkpointer=None,
        bus=EventBus(),
        device=torch.device("cuda", 0),
    )


def test_a_bf16_step_makes_no_host_sync():
    trainer = _trainer(precision="bf16", log_every_steps=1000)
    assert trainer.amp_dtype is torch.bfloat16 and trainer.skip_on_device
    trainer.train_step()  # first batch: the loader, the FLOP count and allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.state.step == 6


def test_a_non_finite_update_is_skipped_on_the_gpu():
    trainer = _trainer(precision="bf16", log_every_steps=2, max_nonfinite_steps=2)
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.model.poison = True
    result = trainer.train()
    assert result.status == "failed" and "non-finite" in result.reason
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
