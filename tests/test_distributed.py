"""DDP on the CPU: real gloo ranks (worker processes) training a shrunken demo profile.

Rank 0 runs in the test process through the session API (as under the dashboard); the other
rank is a ``python -m podium.engine.distributed`` worker. The single-process run with the same global
batch is the reference: the weights must match it, commands must reach every rank, and the
checkpoints must move between rank counts.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from podium.engine.checkpoints import list_checkpoints, load_state
from podium.engine.config import Profile, load_profile
from podium.engine.distributed import (
    RankGroup,
    WorkerJob,
    cpu_ranks_from_env,
    shard_sizes,
    start_ranks,
)
from podium.engine.errors import DataError, RunError
from podium.engine.runs import RunDir
from podium.engine.session import Session, new_session, resume_session
from podium.engine.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.n_pieces=48",
    "data.seq_len=64",
    "model.max_len=64",
    "model.d_model=32",
    "model.n_layers=1",
    "model.d_ff=64",
    "train.val_every_steps=1000",
    "train.warmup_steps=2",
    "checkpoint.every_epochs=0",
]


def profile(*extra: str) -> Profile:
    return load_profile(ROOT / "profiles" / "demo.toml", [*TINY, *extra])


def weights(run: Path, name: str = "latest") -> dict[str, torch.Tensor]:
    return load_state(run / "checkpoints" / f"{name}.pt")["model"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def train(session: Session) -> tuple[str, int, list[int | None]]:
    group = session.trainer.group
    result = session.run_training()
    return result.status, result.step, group.exitcodes() if group is not None else []


def steps_of(run: Path, series: str = "train/loss") -> list[int]:
    store = RunStore.open(run / "metrics.db", readonly=True)
    try:
        return [int(s) for s, _ in store.query(series)]
    finally:
        store.close()


def test_shards_cover_each_global_batch_in_order():
    assert shard_sizes(5, 2) == [3, 2] and shard_sizes(4, 4) == [1, 1, 1, 1]
    ranks = [
        RankGroup(rank=r, world=3, backend="gloo", device=torch.device("cpu"), store=None)
        for r in range(3)
    ]
    batch = [9, 4, 7, 1, 0, 3, 8]
    assert [i for g in ranks for i in g.shard(batch)] == batch


def test_rank_count_comes_from_the_environment_and_is_checked():
    assert cpu_ranks_from_env({}) == 1
    assert cpu_ranks_from_env({"PODIUM_CPU_RANKS": "2"}) == 2
    with pytest.raises(RunError, match="PODIUM_CPU_RANKS='two'"):
        cpu_ranks_from_env({"PODIUM_CPU_RANKS": "two"})


def test_a_global_batch_smaller_than_the_ranks_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"train\.batch_size: 2 .* 3 ranks"):
        new_session(profile("train.batch_size=2"), root=tmp_path, gpus="cpu", cpu_ranks=3)
    assert not any(tmp_path.iterdir())  # no dead run left behind


def test_a_worker_that_cannot_start_is_reported_with_its_reason(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    job = WorkerJob(profile_toml=profile().to_toml(), source="test", resume_from=str(bad))
    with pytest.raises(RunError, match=r"DDP rank 1 failed while starting .*CheckpointError"):
        start_ranks(world=2, device=torch.device("cpu"), job=job, stderr=subprocess.DEVNULL)
    assert not torch.distributed.is_initialized()


def test_two_gloo_ranks_train_the_weights_of_one_process(tmp_path):
    # An odd global batch (3 + 2 examples) with accumulation: the ranks see different numbers of
    # valid tokens, which only the token weighting turns into the single-process gradient.
    prof = profile("model.dropout=0.0", "train.batch_size=5", "train.grad_accum=2")
    one = new_session(prof, root=tmp_path, name="one", gpus="cpu", cpu_ranks=1, max_steps=5)
    assert train(one) == ("stopped", 5, [])
    two = new_session(prof, root=tmp_path, name="two", gpus="cpu", cpu_ranks=2, max_steps=5)
    assert two.trainer.steps_per_epoch == one.trainer.steps_per_epoch  # batch_size is global
    assert train(two) == ("stopped", 5, [0])  # the worker ran to the end and exited cleanly

    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert not any(k.startswith("module.") for k in w2)  # the bare model, loadable anywhere
    assert max_diff(w1, w2) < 1e-5
    start = new_session(prof, root=tmp_path, name="start", gpus="cpu", max_steps=1)
    initial = {k: v.detach().clone() for k, v in start.trainer.model.state_dict().items()}
    start.close()
    assert max_diff(w1, initial) > 1e-3  # they trained: equal weights are not untouched weights

    # Rank 0 records the global batch's losses, once per step.
    s1, s2 = (RunStore.open(tmp_path / n / "metrics.db", readonly=True) for n in ("one", "two"))
    try:
        for head in ("train/loss", "train/loss/pitch"):
            l1, l2 = s1.query(head), s2.query(head)
            assert [s for s, _ in l2] == [1, 2, 3, 4, 5]
            assert [v for _, v in l2] == pytest.approx([v for _, v in l1], rel=1e-5)
    finally:
        s1.close()
        s2.close()


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_commands_reach_every_rank_and_the_checkpoint_resumes_on_one_process(tmp_path):
    prof = profile("model.dropout=0.0")
    ddp = new_session(prof, root=tmp_path, name="ddp", gpus="cpu", cpu_ranks=2)
    trainer, group = ddp.trainer, ddp.trainer.group
    assert group is not None and group.world == 2
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(ddp.run_training()))
    thread.start()
    try:
        _wait(lambda: trainer.state.step >= 2)
        paused_at = trainer.pause().result(timeout=30)
        time.sleep(0.8)
        assert trainer.state.step == paused_at and trainer.run_state == "paused"
        assert group.exitcodes() == [None]  # the worker waits with rank 0, it has not left
        trainer.set_lr(5e-3).result(timeout=30)  # while paused: must reach the worker too
        trainer.resume().result(timeout=30)
        _wait(lambda: trainer.state.step >= paused_at + 2)
        trainer.stop("test stop").result(timeout=30)
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    result = outcome[0]
    assert (result.status, result.reason) == ("stopped", "test stop")
    assert group.exitcodes() == [0]
    end = result.step
    assert [(i.name, i.step) for i in list_checkpoints(tmp_path / "ddp" / "checkpoints")] == [
        ("latest", end)
    ]
    assert steps_of(tmp_path / "ddp") == list(range(1, end + 1))  # rank 0 alone wrote metrics

    # The same commands at the same steps on one process. Had the worker missed the new
    # learning rate, its weights would have drifted from rank 0's and so would the gradients.
    ref = new_session(prof, root=tmp_path, name="ref", gpus="cpu", max_steps=paused_at)
    train(ref)
    ref_run = RunDir(tmp_path / "ref")
    cont = resume_session(ref_run, max_steps=end, cpu_ranks=1)
    cont.trainer.set_lr(5e-3)  # applied at the first step boundary, as the pause did
    assert train(cont)[1] == end
    assert max_diff(weights(tmp_path / "ref"), weights(tmp_path / "ddp")) < 1e-5

    # The DDP checkpoint continues on one process, in step with the reference.
    single = resume_session(RunDir(tmp_path / "ddp"), max_steps=end + 2, cpu_ranks=1)
    assert single.trainer.group is None and single.trainer.state.step == end
    assert train(single) == ("stopped", end + 2, [])
    train(resume_session(ref_run, max_steps=end + 2, cpu_ranks=1))
    assert max_diff(weights(tmp_path / "ref"), weights(tmp_path / "ddp")) < 1e-5
    assert steps_of(tmp_path / "ddp") == list(range(1, end + 3))


def test_a_ddp_resume_repeats_an_uninterrupted_ddp_run_exactly(tmp_path):
    prof = profile("train.batch_size=4")  # dropout on: the workers' streams must resume too
    straight = new_session(
        prof, root=tmp_path, name="straight", gpus="cpu", cpu_ranks=2, max_steps=4
    )
    assert train(straight) == ("stopped", 4, [0])
    part = new_session(prof, root=tmp_path, name="part", gpus="cpu", cpu_ranks=2, max_steps=2)
    assert train(part) == ("stopped", 2, [0])
    rest = resume_session(RunDir(tmp_path / "part"), max_steps=4, cpu_ranks=2)
    assert rest.trainer.group is not None
    assert train(rest) == ("stopped", 4, [0])
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_cpu_ranks_flag_trains_with_two_processes(tmp_path):
    import sys

    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "podium", "train", str(ROOT / "profiles" / "demo.toml"),
           "--headless", "--cpu-ranks", "2", "--max-steps", "3", "--name", "two",
           "--runs-dir", str(runs)]  # fmt: skip
    for item in TINY:
        cmd += ["--set", item]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "x 2 ranks" in out.stdout
    assert [c.step for c in list_checkpoints(runs / "two" / "checkpoints")] == [3]
    bad = subprocess.run(
        [*cmd[:6], "--cpu-ranks", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert bad.returncode == 2 and "--cpu-ranks" in bad.stderr
