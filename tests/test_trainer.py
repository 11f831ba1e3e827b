"""The generic loop on a toy two-head model: commands, limits, failures, checkpoints, resume."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from podium.engine.checkpoints import (
    CheckpointConfig,
    Checkpointer,
    list_checkpoints,
    newest_checkpoint,
)
from podium.engine.events import (
    CheckpointSaved,
    EvalMetrics,
    EventBus,
    Message,
    StateChanged,
    StepMetrics,
)
from podium.engine.train_config import EarlyStoppingConfig, TrainConfig
from podium.engine.trainer import Trainer, seed_everything
from tests.toy import ToyData, ToyModel

WEIGHTS = {"cls": 1.0, "reg": 0.5}


def make(tmp_path, cfg: TrainConfig | None = None, **kw) -> tuple[Trainer, list]:
    seed_everything(0)
    cfg = cfg or TrainConfig(epochs=4, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu")
    events: list = []
    bus = EventBus()
    bus.subscribe(events.append)
    ck = Checkpointer(tmp_path / "ck", kw.pop("ck_cfg", CheckpointConfig()), "hash")
    trainer = Trainer(
        model=ToyModel(),
        train_set=ToyData(64),
        val_set=ToyData(16, seed=1),
        cfg=cfg,
        loss_weights=WEIGHTS,
        checkpointer=ck,
        bus=bus,
        device=torch.device("cpu"),
        **kw,
    )
    return trainer, events


def steps(events) -> list[StepMetrics]:
    return [e for e in events if isinstance(e, StepMetrics)]


def test_trains_to_the_end_of_the_schedule_and_reports_every_step(tmp_path):
    trainer, events = make(tmp_path)
    result = trainer.train()
    assert result.status == "finished" and result.step == 4 * 8
    got = steps(events)
    assert [e.step for e in got] == list(range(1, 33))
    first, last = got[0], got[-1]
    assert set(first.losses) == {"cls", "reg"}
    assert first.loss == pytest.approx(first.losses["cls"] + 0.5 * first.losses["reg"], rel=1e-5)
    assert last.loss < first.loss
    assert last.tokens_per_s > 0 and last.eta_s == 0.0
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert [e.step for e in evals] == [8, 16, 24, 32]
    names = {e.name for e in events if isinstance(e, CheckpointSaved)}
    assert {"latest", "best"} <= names
    assert [e.state for e in events if isinstance(e, StateChanged)] == ["running", "finished"]


def test_max_steps_stops_without_changing_the_schedule(tmp_path):
    trainer, events = make(tmp_path, max_steps=5)
    result = trainer.train()
    assert result.status == "stopped" and result.step == 5
    assert trainer.total_steps == 32
    assert steps(events)[-1].lr == pytest.approx(trainer.schedule.lr_at(4))
    info, _ = newest_checkpoint(tmp_path / "ck")
    assert info.step == 5  # a resumable checkpoint at the step the run ended on


def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path):
    full, full_events = make(tmp_path / "a")
    full.train()
    first, _ = make(tmp_path / "b", max_steps=13)  # mid-epoch, mid-schedule
    first.train()
    info, state = newest_checkpoint(tmp_path / "b" / "ck")
    assert info.step == 13
    second, second_events = make(tmp_path / "b")
    second.load_state_dict(state)
    second.train()
    a = {e.step: (e.loss, e.losses) for e in steps(full_events)}
    b = {e.step: (e.loss, e.losses) for e in steps(second_events)}
    assert sorted(b) == list(range(14, 33))
    for step, value in b.items():
        assert value == a[step], f"step {step} differs"
    for p, q in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)


def _in_thread(trainer):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", trainer.train()), daemon=True)
    thread.start()
    return thread, box


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_pause_resume_save_set_lr_stop_from_another_thread(tmp_path):
    cfg = TrainConfig(
        epochs=10_000, batch_size=8, lr=1e-2, warmup_steps=0, schedule="constant", device="cpu"
    )
    trainer, events = make(tmp_path, cfg)
    thread, box = _in_thread(trainer)
    _wait(lambda: trainer.state.step >= 3)

    paused_at = trainer.pause().result(timeout=10)
    time.sleep(0.3)
    assert trainer.state.step == paused_at  # no step while paused
    assert trainer.run_state == "paused"

    saved = trainer.save_now().result(timeout=10)  # served while paused
    assert saved[0].kind == "manual" and saved[0].step == paused_at
    assert (tmp_path / "ck" / f"step-{paused_at:08d}.pt").is_file()

    assert trainer.set_lr(1e-4).result(timeout=10) == 1e-4
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)

    step, weights = trainer.snapshot_weights().result(timeout=10)  # a copy, between steps
    live = trainer.model.state_dict()
    assert step == paused_at and weights.keys() == live.keys()
    assert all(torch.equal(weights[k], live[k].cpu()) for k in live)
    assert all(weights[k].data_ptr() != live[k].data_ptr() for k in live)

    trainer.resume().result(timeout=10)
    _wait(lambda: trainer.state.step >= paused_at + 3)
    trainer.stop("test over").result(timeout=10)
    thread.join(20)
    assert box["result"].status == "stopped" and box["result"].reason == "test over"
    later = [e for e in steps(events) if e.step > paused_at]
    assert later and all(e.lr == pytest.approx(1e-4) for e in later)
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["running", "paused", "running", "stopped"]
    with pytest.raises(ValueError):
        trainer.set_lr(-1.0).result(timeout=1)


def test_non_finite_steps_are_skipped_then_the_run_fails(tmp_path):
    cfg = TrainConfig(epochs=50, batch_size=8, lr=1e-2, device="cpu", max_nonfinite_steps=3)
    trainer, events = make(tmp_path, cfg)
    trainer.train_step()
    good = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.poison = True
    result = trainer.train()
    assert result.status == "failed" and "non-finite" in result.reason
    warnings = [e for e in events if isinstance(e, Message) and e.level == "warning"]
    assert len(warnings) == 3
    for p, q in zip(good, trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)  # no NaN ever reached the weights


def test_early_stopping_ends_the_run(tmp_path):
    cfg = TrainConfig(
        epochs=200,
        batch_size=8,
        lr=1e-9,  # too small to improve: validation stalls
        warmup_steps=0,
        schedule="constant",
        device="cpu",
        early_stopping=EarlyStoppingConfig(patience=2, min_delta=0.5),
    )
    trainer, events = make(tmp_path, cfg)
    result = trainer.train()
    assert result.status == "finished" and "early stopping" in result.reason
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert len(evals) == 3 and evals[-1].patience_left == 0


class ModeRecordingModel(ToyModel):
    """A toy model that notes, at each forward, whether it (and its first layer) trains."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[tuple[bool, bool, bool]] = []

    def forward(self, batch):
        first = next(iter(self.children()))
        self.modes.append((torch.is_grad_enabled(), self.training, first.training))
        return super().forward(batch)


def test_every_training_step_after_a_validation_runs_in_train_mode(tmp_path):
    # The loop calls train() only when the model is out of train mode (it walks every
    # submodule, ~1 ms a step for midikompanion's five networks); validation and the samplers'
    # eval_mode put the mode back themselves. Either way, every step trains in train mode.
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu", val_every_steps=3)
    seed_everything(0)
    model = ModeRecordingModel()
    trainer = Trainer(
        model=model,
        train_set=ToyData(64),
        val_set=ToyData(16, seed=1),
        cfg=cfg,
        loss_weights=WEIGHTS,
        checkpointer=None,
        bus=EventBus(),
        device=torch.device("cpu"),
    )
    trainer.train()
    training = [m for m in model.modes if m[0]]  # forwards with gradients: the steps
    validating = [m for m in model.modes if not m[0]]
    assert len(training) == 16 and len(validating) >= 5 * 2  # 5+ validations of 2 batches
    assert all(m == (True, True, True) for m in training), training
    assert all(m == (False, False, False) for m in validating), validating


def test_retention_keeps_last_k_epoch_checkpoints(tmp_path):
    trainer, _ = make(tmp_path, ck_cfg=CheckpointConfig(every_epochs=1, keep_last=2))
    trainer.train()
    names = [i.name for i in list_checkpoints(tmp_path / "ck")]
    epochs = [n for n in names if n.startswith("epoch-")]
    assert len(epochs) == 2 and epochs[-1].startswith("epoch-0004-val-")
    assert "best" in names and "latest" in names


def test_too_small_dataset_is_a_clear_error(tmp_path):
    from podium.engine.errors import DataError

    with pytest.raises(DataError, match="fewer than one optimizer step"):
        Trainer(
            model=ToyModel(),
            train_set=ToyData(3),
            val_set=None,
            cfg=TrainConfig(batch_size=4, device="cpu"),
            loss_weights=WEIGHTS,
            checkpointer=None,
        )


def test_history_is_handed_over_before_each_checkpoint_is_written(tmp_path):
    """After a crash the store must reach the newest checkpoint: the hook runs after every
    step up to the checkpoint's step was published, and before the checkpoint file exists."""
    trainer, events = make(
        tmp_path, ck_cfg=CheckpointConfig(every_steps=3), save_every_steps=3, max_steps=10
    )
    seen = []

    def hook():
        latest = max((e.step for e in steps(events)), default=0)
        on_disk = list_checkpoints(tmp_path / "ck")
        seen.append((trainer.state.step, latest, max((i.step for i in on_disk), default=0)))

    trainer.before_checkpoint = hook
    trainer.train()
    assert [s for s, _, _ in seen] == [
        3,
        6,
        8,
        9,
        10,
    ]  # every 3 steps, the epoch-end validation, the stop
    for step, published, newest_file in seen:
        assert published == step and newest_file < step


@pytest.mark.parametrize(("every", "expected"), [(1, [1, 2, 3, 4]), (2, [2, 4])])
def test_epoch_checkpoints_come_at_every_nth_epoch_end_whatever_the_validation_interval(
    tmp_path, every, expected
):
    """8 steps an epoch, validation every 3 steps: only the end of epoch 3 (step 24) meets a
    validation. Epoch checkpoints used to wait for that meeting."""
    cfg = TrainConfig(
        epochs=4, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu", val_every_steps=3
    )
    trainer, events = make(tmp_path, cfg, ck_cfg=CheckpointConfig(every_epochs=every, keep_last=0))
    assert trainer.train().status == "finished"
    epochs = [i for i in list_checkpoints(tmp_path / "ck") if i.kind == "epoch"]
    assert [(round(i.epoch), i.step) for i in epochs] == [(e, 8 * e) for e in expected]
    # A validated epoch end carries its loss in the name; the others have none to give.
    for info in epochs:
        validated = info.step % 3 == 0
        assert info.name.startswith(f"epoch-{round(info.epoch):04d}")
        assert ("-val-" in info.name) == validated and (info.val_loss is not None) == validated
    saved = {e.name for e in events if isinstance(e, CheckpointSaved)}
    assert {i.name for i in epochs} <= saved


def test_nan_weights_never_replace_the_last_good_checkpoint(tmp_path):
    """Weights gone NaN (as from a damaged file) after the step-8 checkpoint: the validation at
    16 and the stop must not overwrite ``latest``/``best`` with them, and they say why."""
    cfg = TrainConfig(
        epochs=4, batch_size=8, lr=1e-2, warmup_steps=2, device="cpu", max_nonfinite_steps=20
    )
    trainer, events = make(tmp_path, cfg, max_steps=8)
    trainer.train()
    directory = tmp_path / "ck"
    good = {i.name: (i.step, (directory / f"{i.name}.pt").read_bytes())
            for i in list_checkpoints(directory)}  # fmt: skip
    assert {n: s for n, (s, _) in good.items()} == {"latest": 8, "best": 8}
    with torch.no_grad():
        trainer.model.cls.weight.fill_(float("nan"))
    trainer.max_steps = 17  # past the validation at step 16
    manual = trainer.save_now()  # served at the first step boundary
    result = trainer.train()
    assert result.status == "stopped" and result.step == 17
    assert "checkpoint at step 17 not saved: the weights hold NaN/inf (cls.weight)" in result.reason
    after = {i.name: (i.step, (directory / f"{i.name}.pt").read_bytes())
             for i in list_checkpoints(directory)}  # fmt: skip
    assert after == good
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("checkpoint at step 16 not saved: the weights hold NaN/inf" in t for t in warnings)
    assert newest_checkpoint(directory)[0].step == 8
    assert "not saved: the weights hold NaN/inf" in str(manual.exception(timeout=0))
