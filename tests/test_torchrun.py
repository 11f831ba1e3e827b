"""Multi-node worlds that a launcher starts: torchrun's and srun's environments, on one machine.

Two "nodes" of one gloo rank each run on localhost as two torchrun processes with the same
rendezvous (``python -m torch.distributed.run`` is the ``torchrun`` script); a Slurm world is two
plain ``podium`` processes given the variables srun and the batch script would set. The
reference is one process training with the same global batch: the weights must match it, and
checkpoints must move between world sizes (2 -> 1 and 1 -> 2 ranks).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from podium.engine.build import assemble
from podium.engine.checkpoints import load_state
from podium.engine.config import load_profile
from podium.engine.control import ControlClient
from podium.engine.errors import RunError
from podium.engine.gpus.leases import holders
from podium.engine.gpus.select import GpuSelectionError, ReservedGpuError
from podium.engine.launcher import claim_node_gpus, detect_world, read_worlds, tasks_per_node
from podium.engine.runs import RunDir
from podium.engine.series import LR as LR_SERIES
from podium.engine.session import new_session, resume_session
from podium.engine.store import RunStore
from tests.fake_nvml import end, hold_lease, isolate, lab_config, lab_devices, uuid, write_fake

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "profiles" / "demo.toml"
# dropout 0: each rank draws its own masks (see podium.engine.distributed, Limits); an odd
# global batch (3 + 2 examples) makes the ranks' token counts differ.
SETTINGS = [
    "data.n_pieces=48",
    "data.seq_len=64",
    "model.max_len=64",
    "model.d_model=32",
    "model.n_layers=1",
    "model.d_ff=64",
    "model.dropout=0.0",
    "train.batch_size=5",
    "train.val_every_steps=1000",
    "train.warmup_steps=2",
    "train.cpu_threads=1",
    "checkpoint.every_epochs=0",
]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


# ----------------------------------------------------------------------------------------------
# Reading the launcher's environment


def torchrun_env(**extra: str) -> dict[str, str]:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "job7",
        "TORCHELASTIC_RESTART_COUNT": "0",
    }
    return {**env, **extra}


def slurm_env(**extra: str) -> dict[str, str]:
    env = {
        "SLURM_PROCID": "2",
        "SLURM_NTASKS": "3",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "2,1",
        "SLURM_JOB_NODELIST": "gpu[01-02]",
        "MASTER_ADDR": "gpu01",
        "MASTER_PORT": "29400",
    }
    return {**env, **extra}


def test_torchrun_and_srun_environments_give_each_rank_its_place():
    w = detect_world(torchrun_env())
    assert w is not None and w.kind == "torchrun" and not w.is_lead
    assert (w.rank, w.world_size, w.local_rank, w.local_world_size, w.node_rank) == (3, 4, 1, 2, 1)
    assert (w.master_addr, w.master_port) == ("node0", 29500)
    s = detect_world(slurm_env())
    assert s is not None and s.kind == "slurm" and s.label == "srun"
    assert (s.rank, s.world_size, s.local_world_size, s.node_rank) == (2, 3, 1, 1)
    assert s.nodelist == "gpu[01-02]"
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    # torchrun inside a Slurm job is torchrun's world
    assert detect_world({**slurm_env(), **torchrun_env()}).kind == "torchrun"
    # no launcher, or a launcher of one rank (an interactive srun shell): podium as usual
    assert detect_world({}) is None
    assert detect_world(slurm_env(SLURM_NTASKS="1")) is None
    assert detect_world(torchrun_env(WORLD_SIZE="1", RANK="0")) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (slurm_env(MASTER_ADDR=""), r"srun .*MASTER_ADDR is not set; export it .*scontrol"),
        (torchrun_env(RANK="three"), r"torchrun: RANK='three' must be a whole number"),
        (torchrun_env(RANK="4"), r"rank 4 is not below the world size 4"),
        (torchrun_env(LOCAL_RANK="2"), r"local rank 2 is not below the ranks on its node \(2\)"),
        (torchrun_env(LOCAL_WORLD_SIZE=""), r"LOCAL_WORLD_SIZE is not set"),
        (slurm_env(SLURM_STEP_TASKS_PER_NODE="two"), r"SLURM_STEP_TASKS_PER_NODE='two'"),
        (slurm_env(MASTER_PORT="70000"), r"MASTER_PORT=70000 is not a TCP port"),
    ],
)
def test_an_incomplete_launcher_environment_is_one_line(env, message):
    with pytest.raises(RunError, match=message):
        detect_world(env)


def test_the_other_ranks_stop_with_rank_0s_reason_instead_of_waiting():
    from torch.distributed import TCPStore

    from podium.engine.launcher import Launched

    world = detect_world(torchrun_env(MASTER_ADDR="127.0.0.1"))
    host = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    follower = Launched(world=world, store=TCPStore("127.0.0.1", host.port, is_master=False))
    lead = Launched(world=world, store=host)
    lead.store.set("job", "{}")
    assert follower.wait_key("job", "the run's job") == "{}"
    lead.abort("profiles/x.toml:3: train.lr: must be > 0\nmore")
    with pytest.raises(RunError, match=r"rank 0 failed, so rank 3 stops: profiles/x.toml:3: "):
        follower.wait_key("gpus/node/1", "this node's GPUs")
    gone = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    orphan = Launched(world=world, store=TCPStore("127.0.0.1", gone.port, is_master=False))
    del gone  # the store's host is gone (rank 0 under srun died)
    with pytest.raises(RunError, match=r"lost the rendezvous store at 127\.0\.0\.1:29500"):
        orphan.wait_key("job", "the run's job", timeout=30)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables (CI may run under one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_")) and k not in LAUNCHER_VARS
    }
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_the_cli_refuses_a_bad_launcher_environment_in_one_line(tmp_path):
    env = clean_env(**{k: v for k, v in slurm_env(SLURM_PROCID="0").items() if k != "MASTER_ADDR"})
    out = subprocess.run(
        [sys.executable, "-m", "podium", "train", str(DEMO), "--headless",
         "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "MASTER_ADDR is not set" in out.stderr
    assert "Traceback" not in out.stderr and not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# GPUs of a node (the FAKE NVML lab: 0 and 1 reserved, 2 leased by another run, 3 free)


def test_each_node_leases_one_gpu_per_local_rank_and_never_a_reserved_one(monkeypatch, tmp_path):
    box = isolate(monkeypatch, tmp_path)
    lease_dir = box / "leases"
    lab_config(box, lease_dir)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    other = hold_lease(uuid(2), "alice-run", lease_dir)
    try:
        placement = claim_node_gpus(None, local_world=1, device="auto", run_id="world-run")
        try:
            assert placement.uuids == (uuid(3),)
            info = holders(uuid(3), lease_dir=lease_dir)
            assert info is not None and info.holders[0].run_id == "world-run"
        finally:
            placement.release()
        with pytest.raises(GpuSelectionError, match=r"1 of 4 GPUs free, 2 wanted"):
            claim_node_gpus(None, local_world=2, device="auto", run_id="world-run")
        with pytest.raises(ReservedGpuError, match="GPU 0"):
            claim_node_gpus("0,", local_world=1, device="auto", run_id="world-run")
        with pytest.raises(RunError, match=r"--gpus 3: 3 GPU\(s\) for 2 rank\(s\) on this node"):
            claim_node_gpus("3", local_world=2, device="auto", run_id="world-run")
        assert claim_node_gpus("cpu", local_world=2, device="auto", run_id="r").uuids == ()
    finally:
        end(other)
    # a node without NVIDIA GPUs trains on the CPU under auto, as without a launcher
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "none.json", [], "no driver")))
    assert claim_node_gpus(None, local_world=2, device="auto", run_id="r").uuids == ()


# ----------------------------------------------------------------------------------------------
# Two nodes on localhost


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podium_args(*args: str) -> list[str]:
    out = [*args]
    for item in SETTINGS:
        out += ["--set", item]
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_state(run / "checkpoints" / "latest.pt")["model"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def series(run: Path, name: str = "train/loss") -> list[tuple[int, float]]:
    store = RunStore.open(run / "metrics.db", readonly=True)
    try:
        return [(int(s), v) for s, v in store.query(name)]
    finally:
        store.close()


def wait_all(procs: list[subprocess.Popen], what: str) -> None:
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"{what} rank {rank} exited {p.returncode}\n{out}\n{err}"


def start_torchrun_node(node: int, port: int, root: Path) -> subprocess.Popen:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank NODE ... -m podium train``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
           "1", "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port",
           str(port), "-m", "podium"]  # fmt: skip
    cmd += podium_args("train", str(DEMO), "--headless", "--max-steps", "3", "--name", "tr")
    cmd += ["--runs-dir", str(root)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def start_srun_task(task: int, port: int, root: Path) -> subprocess.Popen:
    """Task TASK of ``srun --nodes 2 --ntasks-per-node 1 podium resume ref``: srun's variables
    and the batch script's MASTER_ADDR/PORT, set by hand. It trains until it is stopped."""
    env = clean_env(
        SLURM_PROCID=str(task),
        SLURM_NTASKS="2",
        SLURM_LOCALID="0",
        SLURM_NODEID=str(task),
        SLURM_STEP_TASKS_PER_NODE="1(x2)",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_JOB_ID="42",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    cmd = [sys.executable, "-m", "podium", "resume", "ref", "--headless"]
    return subprocess.Popen(
        [*cmd, "--runs-dir", str(root)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


LR = 5e-3


def drive(run: Path, procs: list[subprocess.Popen]) -> dict[str, int]:
    """Through rank 0's control socket, as a user would: pause at step 5 or later, check the
    run stands still, save, set the learning rate, resume for two steps, stop."""
    deadline = time.monotonic() + 240
    client = None
    while client is None:
        assert all(p.poll() is None for p in procs), "a rank exited before its run was live"
        assert time.monotonic() < deadline, "the run's control socket never came up"
        try:
            client = ControlClient.for_run(run)
            client.request("status")
        except RunError:
            client = None
            time.sleep(0.1)

    def wait_step(n: int) -> None:
        while client.request("status")["step"] < n:
            assert time.monotonic() < deadline, f"no step {n}"
            time.sleep(0.02)

    with client:
        wait_step(5)
        paused_at = client.request("pause")
        time.sleep(0.5)
        status = client.request("status")
        assert (status["state"], status["step"]) == ("paused", paused_at)
        assert (status["ranks"], status["nodes"], status["launcher"]) == (2, 2, "srun")
        assert {c["step"] for c in client.request("save")} == {paused_at}
        client.request("set_lr", lr=LR)  # while paused: must reach rank 1 too
        client.request("resume")
        wait_step(paused_at + 2)
        client.request("stop")
    return {"paused_at": paused_at}


def step_of(run: Path) -> int:
    return int(load_state(run / "checkpoints" / "latest.pt")["train_state"]["step"])


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """ref: one process, 3 steps; tr: torchrun, 2 nodes x 1 rank, 3 steps; straight: one
    process, 5 steps. Then tr resumes on one process to step 5 (2 -> 1), and ref resumes under
    srun on 2 ranks (1 -> 2) and is paused, saved, given a new lr, resumed and stopped over its
    control socket; straight repeats those commands at the same steps on one process."""
    root = tmp_path_factory.mktemp("worlds")
    prof = load_profile(DEMO, SETTINGS)
    ref = new_session(prof, root=root, name="ref", gpus="cpu", max_steps=3)
    assert ref.run_training().step == 3  # also prepares the data the subprocesses find cached
    got: dict = {"ref@3": weights(root / "ref")}

    port = free_port()
    torchrun = [start_torchrun_node(node, port, root) for node in (0, 1)]
    straight = new_session(prof, root=root, name="straight", gpus="cpu", max_steps=5)
    assert straight.run_training().step == 5
    got["straight@5"] = weights(root / "straight")
    wait_all(torchrun, "torchrun")
    got["tr@3"] = weights(root / "tr")

    port = free_port()
    slurm = [start_srun_task(task, port, root) for task in (0, 1)]
    try:
        single = resume_session(RunDir(root / "tr"), max_steps=5, cpu_ranks=1)
        assert single.trainer.group is None and single.run_training().step == 5
        got.update(drive(root / "ref", slurm))
    except BaseException:
        for p in slurm:
            p.kill()
        raise
    wait_all(slurm, "srun")
    got["end"] = step_of(root / "ref")
    assert got["end"] >= got["paused_at"] + 2

    # The same commands at the same steps on one process. Had rank 1 missed the new learning
    # rate, its weights would have drifted from rank 0's, and so would the averaged gradients.
    base = RunDir(root / "straight")
    if got["paused_at"] > 5:
        assert resume_session(base, max_steps=got["paused_at"]).run_training().step > 5
    cont = resume_session(base, max_steps=got["end"])
    cont.trainer.set_lr(LR)  # applied at the first step boundary, as after the pause
    assert cont.run_training().step == got["end"]
    return root, got


def test_two_torchrun_nodes_train_the_weights_of_one_process(worlds):
    root, got = worlds
    diff = max_diff(got["ref@3"], got["tr@3"])
    print(f"\n2 torchrun nodes vs 1 process, 3 steps: max abs weight diff {diff:.2e}")
    assert diff < 1e-5
    initial = assemble(load_profile(DEMO, SETTINGS), log=lambda line: None).model.state_dict()
    assert max_diff(got["ref@3"], initial) > 1e-3  # they trained: equal is not untouched
    assert not any(k.startswith("module.") for k in got["tr@3"])  # the bare model
    # rank 0 alone records the global batch's losses, once per step
    tr, ref = series(root / "tr"), series(root / "straight")[:5]
    assert [s for s, _ in tr] == [1, 2, 3, 4, 5]
    assert [v for _, v in tr] == pytest.approx([v for _, v in ref], rel=1e-5)


def test_a_run_resumes_from_two_ranks_on_one_and_from_one_on_two_under_srun(worlds):
    root, got = worlds
    two_to_one = max_diff(got["straight@5"], weights(root / "tr"))
    one_to_two = max_diff(weights(root / "straight"), weights(root / "ref"))
    print(
        f"\nvs one process: 2 -> 1 ranks at step 5 {two_to_one:.2e}, 1 -> 2 ranks under srun "
        f"with pause/save/set_lr/stop at step {got['end']} {one_to_two:.2e}"
    )
    assert two_to_one < 1e-5
    assert one_to_two < 1e-5
    end = got["end"]
    assert [s for s, _ in series(root / "ref")] == list(range(1, end + 1))  # no gap, no repeat
    assert series(root / "ref", LR_SERIES)[-1][1] == pytest.approx(LR, rel=0.05)


def test_the_run_directory_records_each_sessions_world(worlds):
    root, _ = worlds
    first, second = read_worlds(root / "tr")
    assert (first["launcher"], first["world_size"], first["nodes"], first["step"]) == (
        "torchrun", 2, 2, 0,
    )  # fmt: skip
    assert [(r["rank"], r["node"], r["local_rank"]) for r in first["ranks"]] == [
        (0, 0, 0),
        (1, 1, 0),
    ]
    assert first["hosts"] == [socket.gethostname()] and first["master"].startswith("127.0.0.1:")
    assert len({r["pid"] for r in first["ranks"]}) == 2
    assert (second["launcher"], second["world_size"], second["step"]) == ("none", 1, 3)
    (srun,) = read_worlds(root / "ref")  # its first session had no world: one process
    assert (srun["launcher"], srun["world_size"], srun["step"], srun["nodelist"]) == (
        "srun", 2, 3, "node[1-2]",
    )  # fmt: skip
    assert not (root / "straight" / "world.json").exists()
    rows = json.loads(
        subprocess.run(
            [sys.executable, "-m", "podium", "runs", "--json", "--runs-dir", str(root)],
            capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=120, check=True,
        ).stdout
    )  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    assert by_id["ref"]["world"] == {"launcher": "srun", "ranks": 2, "nodes": 2,
                                     "hosts": [socket.gethostname()]}  # fmt: skip
    assert by_id["straight"]["world"] is None
