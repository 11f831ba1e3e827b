"""The family contract, end to end, with a family that lives outside podium.

``tests/families/toy`` is a tiny classifier named in its profile by module path
(``family = "tests.families.toy"``). Everything here runs ``python -m podium`` in real
processes from the repository root: training, its validation metrics and epoch hook, a
bit-identical resume, ``podium generate`` with the family's own flags, and the control socket's
``generate`` on a live run (for the toy, and briefly for the CP demo). Nothing in podium knows
the toy by name; if one of these fails, the contract leaks.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pretty_midi
import pytest

from podium.engine.checkpoints import load_state
from podium.engine.control import ControlClient
from podium.engine.errors import RunError
from podium.engine.families.registry import get_family
from podium.engine.store import RunReader
from tests.podium_cli import podium as _podium

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
DEMO = str(ROOT / "profiles" / "demo.toml")
TOY_STEPS = 60  # 4 epochs of 240 points in batches of 16
LONG = [  # a toy run that trains long enough to be driven over its socket
    "--set", "train.epochs=100000",
    "--set", "train.val_every_steps=1000000",
    "--set", "probe.every_epochs=0",
    "--set", "checkpoint.every_epochs=0",
]  # fmt: skip


podium = functools.partial(_podium, timeout=180)


def launch(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "podium", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def series(run: str, runs: Path, env: dict) -> dict[str, list[tuple[int, str]]]:
    """Every series of a run as (step, repr of the value): equal strings, equal floats."""
    out = podium("metrics", run, "--csv", "--runs-dir", str(runs), env=env).stdout
    rows = list(csv.reader(out.splitlines()))
    assert rows[0] == ["series", "step", "value"]
    found: dict[str, list[tuple[int, str]]] = {}
    for name, step, value in rows[1:]:
        found.setdefault(name, []).append((int(step), value))
    return found


def connect(run_path: Path, proc: subprocess.Popen, timeout: float = 60) -> ControlClient:
    """A client of a run that is starting in ``proc``, once its socket answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run exited {proc.returncode}:\n{proc.stdout.read()}")
        if (run_path / "control.json").exists():
            try:
                return ControlClient.for_run(run_path)
            except (RunError, OSError):
                pass
        time.sleep(0.02)
    raise AssertionError("the run's control socket never answered")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    # One torch thread: the toy's matrices are a few hundred numbers, and on a busy 2-core box
    # spinning intra-op threads make a step several times slower.
    return {
        **os.environ,
        "PODIUM_CACHE": str(cache),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contract") / "runs"


@pytest.fixture(scope="module")
def full(runs, env) -> str:
    """The toy profile trained to the end of its schedule, in one process."""
    out = podium("train", TOY, "--headless", "--runs-dir", str(runs), "--name", "full", env=env)
    assert f"run full finished at step {TOY_STEPS}: schedule complete" in out.stdout, out.stdout
    return "full"


def test_the_toy_family_is_found_by_its_module_path_and_declares_everything():
    family = get_family("tests.families.toy")
    assert family.name == "toy" and family.heads == ("class", "aux")
    assert family.metrics == ("accuracy",) and family.matrices == ("confusion",)
    assert [o.flag for o in family.sampler.options] == ["--mood"]
    assert [h.group for h in family.epoch_hooks] == ["probe"]


def test_a_toy_run_trains_with_its_heads_metrics_matrix_and_hook(full, runs, env):
    got = series(full, runs, env)
    for head in ("class", "aux"):
        assert [s for s, _ in got[f"train/loss/{head}"]] == list(range(1, TOY_STEPS + 1))
        assert len(got[f"val/loss/{head}"]) == 4  # one validation per epoch
    accuracy = [float(v) for _, v in got["val/accuracy"]]
    assert [s for s, _ in got["val/accuracy"]] == [15, 30, 45, 60]
    assert all(0.0 <= a <= 1.0 for a in accuracy) and accuracy[-1] >= 0.8  # it learns
    assert [s for s, _ in got["probe/confidence"]] == [15, 30, 45, 60]  # the epoch hook

    with RunReader.open(runs / full / "metrics.db") as store:
        confusion = store.matrices("confusion")
    assert [s for s, _ in confusion] == [15, 30, 45, 60]
    _, matrix = confusion[-1]
    assert matrix.rows == matrix.cols == ("A", "B", "C")
    assert sum(map(sum, matrix.values)) == 60  # every validation point counted once
    trace = sum(matrix.values[i][i] for i in range(3))
    assert trace / 60 == pytest.approx(accuracy[-1])

    state = load_state(runs / full / "checkpoints" / "latest.pt")
    assert state["family"] == "tests.families.toy"
    assert state["data_info"] == {"classes": ["A", "B", "C"], "dim": 8}
    listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
    assert {r["id"]: r["family"] for r in listed}[full] == "tests.families.toy"


def test_a_resumed_toy_run_is_bit_identical_to_an_uninterrupted_one(full, runs, env):
    common = ["--headless", "--runs-dir", str(runs)]
    out = podium("train", TOY, *common, "--name", "part", "--max-steps", "22", env=env).stdout
    assert "run part stopped at step 22" in out  # mid-epoch: 15 steps an epoch
    out = podium("resume", "part", *common, env=env).stdout
    assert "step 22" in out and f"run part finished at step {TOY_STEPS}" in out, out

    straight, resumed = series(full, runs, env), series("part", runs, env)
    compared = sorted(n for n in straight if not n.startswith("throughput/"))
    assert {"train/loss", "val/accuracy", "probe/confidence", "lr"} <= set(compared)
    assert sorted(n for n in resumed if not n.startswith("throughput/")) == compared
    for name in compared:
        assert resumed[name] == straight[name], f"{name} differs after resume"


def test_podium_generate_takes_the_familys_flags_and_refuses_others(full, runs, env):
    args = ["generate", full, "--runs-dir", str(runs)]
    out = podium(*args, "--mood", "calm", "--bars", "2", "--seed", "3", env=env)
    mid = runs / full / "samples" / "latest-calm-seed3.mid"
    assert f"podium: {mid} (calm, 5 tokens, ended by bars" in out.stdout, out.stdout
    notes = pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes
    assert len(notes) == 4  # two calm bars of two notes
    first = mid.read_bytes()
    podium(*args, "--mood", "calm", "--bars", "2", "--seed", "3", env=env)
    assert mid.read_bytes() == first  # same seed, same bytes

    for flags, words in (
        (["--emotion", "Q1"], "--emotion: family tests.families.toy takes --mood"),
        (["--mood", "angry"], "--mood 'angry': must be one of calm, busy"),
    ):
        bad = podium(*args, *flags, env=env, check=False)
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


@pytest.mark.slow  # two training runs of 800 steps, compared step by step
def test_the_socket_generates_from_live_weights_without_touching_the_run(runs, env):
    """Pause, sample the live weights and a fresh checkpoint, resume: the run's losses are those
    of the same run left alone."""
    steps = 800
    common = [TOY, "--headless", "--runs-dir", str(runs), "--max-steps", str(steps), *LONG]
    proc = launch("train", *common, "--name", "live", env=env)
    try:
        with connect(runs / "live", proc) as client:
            client.request("pause")  # answered once the trainer is between two steps
            step = client.request("status")["step"]
            assert step < steps, "the run ended before the test could pause it"
            live = client.request(
                "generate", checkpoint="live", conditioning={"mood": "busy"}, bars=2, seed=1
            )
            assert live["conditioning"] == {"mood": "busy"} and live["ended"] == "bars"
            assert live["tokens"] == 1 + 2 * 8 and live["seed"] == 1
            assert live["checkpoint"] == "live" and live["step"] == step
            assert json.loads(Path(live["meta_path"]).read_text())["step"] == step
            path = Path(live["path"])
            assert path.parent == runs / "live" / "samples"
            assert path.name == f"live-step{step}-busy-seed1.mid"
            assert len(pretty_midi.PrettyMIDI(str(path)).instruments[0].notes) == 16

            client.request("save")
            saved = client.request("generate", checkpoint="latest", bars=1, seed=1)
            mood = saved["conditioning"]["mood"]  # blank: drawn by the seed
            assert (
                mood in ("calm", "busy") and Path(saved["path"]).name == f"latest-{mood}-seed1.mid"
            )
            first = Path(saved["path"]).read_bytes()
            again = client.request("generate", checkpoint="latest", bars=1, seed=1)
            assert again == saved and Path(again["path"]).read_bytes() == first
            with pytest.raises(RunError, match=r"--emotion: family tests\.families\.toy takes"):
                client.request("generate", checkpoint="live", conditioning={"emotion": "Q1"})
            with pytest.raises(RunError, match=r"args\.bars must be between"):
                client.request("generate", checkpoint="live", bars=0)
            assert client.request("status")["step"] == step  # still paused: nothing stepped
            client.request("resume")
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and f"run live stopped at step {steps}" in out, out

    podium("train", *common, "--name", "alone", env=env)
    live_series, alone = series("live", runs, env), series("alone", runs, env)
    for name in ("train/loss", "train/loss/class", "train/loss/aux", "grad_norm"):
        assert [s for s, _ in live_series[name]] == list(range(1, steps + 1))
        assert live_series[name] == alone[name], f"{name} moved by the live generate"


def test_the_socket_generates_from_a_live_cp_demo_run(tmp_path, env):
    runs = tmp_path / "runs"
    tiny = [
        "data.n_pieces=48", "data.seq_len=64", "model.max_len=64", "model.d_model=32",
        "model.n_layers=1", "model.d_ff=64", "train.epochs=1000", "train.val_every_steps=100000",
        "checkpoint.every_epochs=0", "generate.check_every_epochs=0",
    ]  # fmt: skip
    sets = [a for item in tiny for a in ("--set", item)]
    proc = launch("train", DEMO, "--headless", "--runs-dir", str(runs), "--name", "cp", *sets,
                  env=env)  # fmt: skip
    try:
        with connect(runs / "cp", proc, timeout=120) as client:
            status = client.request("status")
            assert status["family"] == "cp" and status["metrics"] == []
            got = client.request(
                "generate",
                checkpoint="live",
                conditioning={"emotion": "q1", "key": "c:maj"},
                tokens=30,
                seed=2,
            )
            assert got["conditioning"] == {"emotion": "Q1", "key": "C:maj"}
            assert 1 < got["tokens"] <= 31 and Path(got["path"]).name.endswith("Q1-Cmaj-seed2.mid")
            pretty_midi.PrettyMIDI(got["path"])
            with pytest.raises(RunError, match="--mood: family cp takes --emotion, --key"):
                client.request("generate", checkpoint="live", conditioning={"mood": "calm"})
            client.request("stop")
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "run cp stopped" in out, out
