"""The GPU fast path's pieces that run the same on the CPU: MFU counting, the device-side skip
of non-finite updates (the fused AdamW kernel given a found-inf flag), DataLoader workers,
compile wiring. The CUDA half (bf16, TF32, flash-linear-attention) is bench/gpu_check.py's."""

from __future__ import annotations

import torch
from torch import nn

from podium.engine import series
from podium.engine.checkpoints import CheckpointConfig, Checkpointer
from podium.engine.cpu_share import CpuPlan, loader_workers
from podium.engine.events import EventBus, StepMetrics
from podium.engine.mfu import PEAK_ENV, count_flops, mfu, peak_env_error, peak_flops
from podium.engine.sinks import step_series
from podium.engine.train_config import TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.toy import ToyData, ToyModel

WEIGHTS = {"cls": 1.0, "reg": 0.5}


def _trainer(tmp_path, cfg: TrainConfig, model: nn.Module | None = None) -> tuple[Trainer, list]:
    seed_everything(0)
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    trainer = Trainer(
        model=model or ToyModel(),
        train_set=ToyData(64),
        val_set=ToyData(16, seed=1),
        cfg=cfg,
        loss_weights=WEIGHTS,
        checkpointer=Checkpointer(tmp_path / "ck", CheckpointConfig(), "hash"),
        bus=bus,
        device=torch.device("cpu"),
    )
    return trainer, events


def _steps(events) -> list[StepMetrics]:
    return [e for e in events if isinstance(e, StepMetrics)]


def test_flops_are_counted_by_shape_for_a_forward_and_tripled_for_training():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, batch):
            return {"l": self.net(batch["x"]).sum()}

    wrapped = Wrap().train()
    batch = {"x": torch.randn(5, 8)}
    state = torch.random.get_rng_state()
    count = count_flops(wrapped, batch, tokens=5)
    # 2 * batch * in * out per linear layer
    assert count.forward == 2 * 5 * (8 * 16 + 16 * 4)
    assert count.train_per_token == 3 * count.forward / 5
    assert wrapped.training, "counting puts the train mode back"
    assert torch.equal(torch.random.get_rng_state(), state), "counting draws no random numbers"
    assert mfu(count.train_per_token, 1e6, 2e12) == count.train_per_token * 1e6 / 2e12
    assert mfu(count.train_per_token, 1e6, None) is None


def test_peak_flops_comes_from_the_environment_on_a_cpu(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert peak_flops(torch.device("cpu")) is None
    monkeypatch.setenv(PEAK_ENV, "0.5")
    assert peak_flops(torch.device("cpu")) == 0.5e12
    assert peak_env_error() is None
    monkeypatch.setenv(PEAK_ENV, "fast")
    assert peak_flops(torch.device("cpu")) is None
    assert "PODIUM_PEAK_TFLOPS='fast'" in (peak_env_error() or "")


def test_mfu_is_published_and_counting_it_changes_no_number(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu")
    monkeypatch.delenv(PEAK_ENV, raising=False)
    plain, plain_events = _trainer(tmp_path / "a", cfg)
    plain.train()
    monkeypatch.setenv(PEAK_ENV, "0.001")  # 1 GFLOP/s: a made-up peak, so MFU is a number
    counted, counted_events = _trainer(tmp_path / "b", cfg)
    counted.train()

    a, b = _steps(plain_events), _steps(counted_events)
    assert [e.losses for e in a] == [e.losses for e in b], "the extra forward drew no dropout"
    assert all(e.mfu is None for e in a)
    assert counted.flops_per_token is not None and counted.flops_per_token > 0
    for e in b:
        assert e.mfu is not None
        assert abs(e.mfu - counted.flops_per_token * e.tokens_per_s / 1e9) < 1e-9 * max(e.mfu, 1)
    assert series.MFU in step_series(b[-1]) and series.MFU not in step_series(a[-1])


def _fused_on_device_skip(trainer: Trainer) -> None:
    """What a CUDA run does, on the CPU: CPU AdamW has the same fused kernel and flag."""
    groups = [{**g, "fused": True, "foreach": None} for g in trainer.optimizer.param_groups]
    trainer.optimizer = torch.optim.AdamW(groups)
    trainer.skip_on_device = True


def test_a_gpu_style_step_skips_a_non_finite_update_without_reading_it(tmp_path):
    cfg = TrainConfig(
        epochs=50, batch_size=8, lr=1e-2, device="cpu", max_nonfinite_steps=3, log_every_steps=4
    )
    trainer, events = _trainer(tmp_path, cfg)
    _fused_on_device_skip(trainer)
    for _ in range(2):
        trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.model.poison = True
    trainer.train_step()
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the NaN update was skipped"
    assert trainer.state.nonfinite_in_a_row == 0, "not read yet: no host sync in the step"
    trainer.model.poison = False
    trainer.train_step()  # a good step after the bad one: the run goes on
    trainer._flush_metrics()
    assert trainer.state.nonfinite_in_a_row == 0
    warned = [e for e in events if getattr(e, "text", "").startswith("step 3: non-finite")]
    assert len(warned) == 1

    trainer.model.poison = True
    result = trainer.train()
    assert result.status == "failed" and "3 consecutive steps" in result.reason
    assert result.step <= 4 + 3 + cfg.log_every_steps, "found at the next read"


def test_dataloader_workers_follow_the_cpus_on_a_gpu_and_stay_in_the_thread_on_a_cpu():
    plan = CpuPlan(usable=16, others=0, threads=8, ranks=2, wait_policy="passive")
    assert loader_workers(-1, "cpu", plan) == 0
    assert loader_workers(-1, "cuda", plan) == 4  # 8 CPUs per rank, capped
    assert loader_workers(-1, "cuda", CpuPlan(2, 0, 2, 1, "passive")) == 1
    assert loader_workers(-1, "cuda", CpuPlan(1, 0, 1, 1, "passive")) == 0
    assert loader_workers(3, "cpu", plan) == 3, "a number in the profile is kept"


def test_compile_wraps_the_training_module_but_checkpoints_stay_plain(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", compile=True)
    trainer, _ = _trainer(tmp_path, cfg)
    assert trainer.net is not trainer.model and hasattr(trainer.net, "_orig_mod")
    assert not any(k.startswith("_orig_mod") for k in trainer.state_dict()["model"])


def test_worker_and_compile_settings_are_checked():
    import pytest

    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-2)
    with pytest.raises(ValueError, match="prefetch_batches"):
        TrainConfig(prefetch_batches=0)
