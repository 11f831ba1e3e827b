"""The checkpoint policy beyond latest/best: a best checkpoint per validation metric, and
checkpoints kept every N steps with their own retention (the toy family, in one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from podium.engine.build import assemble, build_trainer
from podium.engine.checkpoints import Checkpointer, list_checkpoints, load_state, read_info
from podium.engine.config import load_profile
from podium.engine.errors import ProfileError
from podium.engine.events import EvalMetrics, EventBus

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "families" / "toy" / "toy.toml"
POLICY = [
    'checkpoint.best_metrics=["accuracy"]',
    "checkpoint.keep_every_steps=10",
    "checkpoint.keep_last=2",
    "train.val_every_steps=5",  # 12 validations, so the accuracy's best is not the last one
]


def _trainer(directory: Path, *, max_steps: int | None = None, events: list | None = None):
    profile = load_profile(TOY, POLICY)
    bus = EventBus()
    if events is not None:
        bus.subscribe(events.append)
    assembly = assemble(profile, log=lambda _line: None)
    checkpointer = Checkpointer(directory, profile.checkpoint, profile.hash())
    return build_trainer(
        assembly,
        device=torch.device("cpu"),
        bus=bus,
        checkpointer=checkpointer,
        max_steps=max_steps,
        max_epochs=None,
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, list]:
    directory = tmp_path_factory.mktemp("policy") / "straight"
    events: list = []
    result = _trainer(directory, events=events).train()
    assert result.status == "finished"
    return directory, [e for e in events if isinstance(e, EvalMetrics)]


def test_each_named_metric_keeps_its_own_best_checkpoint(straight):
    directory, evals = straight
    accuracy = [(e.step, e.metrics["accuracy"]) for e in evals]
    best_step, best_value = max(accuracy, key=lambda sv: (sv[1], -sv[0]))  # first of the highest
    info = read_info(directory / "best-accuracy.json")
    assert info is not None and info.kind == "best"
    assert (info.step, info.extra) == (best_step, {"metric": "accuracy", "value": best_value})
    assert load_state(directory / "best-accuracy.pt")["train_state"]["step"] == best_step
    # ``best`` still follows the validation loss.
    loss_step = min(((e.step, e.loss) for e in evals), key=lambda sl: (sl[1], sl[0]))[0]
    assert read_info(directory / "best.json").step == loss_step


def test_checkpoints_every_n_steps_keep_the_last_n(straight):
    directory, _ = straight
    infos = list_checkpoints(directory)
    periodic = [i.name for i in infos if i.kind == "periodic"]
    assert periodic == ["periodic-00000050", "periodic-00000060"]  # 60 steps, keep_last 2
    # Epoch checkpoints keep their own last two beside them.
    assert [i.step for i in infos if i.kind == "epoch"] == [45, 60]


def test_a_resumed_run_keeps_the_same_best_metric_checkpoint(straight, tmp_path):
    directory, _ = straight
    part = tmp_path / "part"
    assert _trainer(part, max_steps=22).train().status == "stopped"
    resumed = _trainer(part)
    resumed.load_state_dict(load_state(part / "latest.pt"))
    assert resumed.train().status == "finished"
    want, got = read_info(directory / "best-accuracy.json"), read_info(part / "best-accuracy.json")
    assert (got.step, got.extra) == (want.step, want.extra)


def test_a_best_metric_the_family_does_not_measure_is_refused_by_name():
    with pytest.raises(ProfileError, match=r"checkpoint\.best_metrics: 'f1' is not a validation"):
        load_profile(TOY, ['checkpoint.best_metrics=["f1"]'])
    with pytest.raises(ProfileError, match=r"checkpoint\.best_metrics: expected an array"):
        load_profile(TOY, ["checkpoint.best_metrics=accuracy"])
