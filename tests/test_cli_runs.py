"""The CLI contract on the demo profile, with real processes, signals and SQLite files.

The demo profile is shrunk with ``--set`` (a smaller corpus, shorter sequences) so each process
trains for seconds; the code paths are the ones ``podium train profiles/demo.toml`` takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podium.engine.units import size
from tests.podium_cli import podium

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "profiles" / "demo.toml")
SMALL = [
    "--set", "data.n_pieces=48",
    "--set", "data.seq_len=96",
    "--set", "model.max_len=96",
    "--set", "train.batch_size=4",
    "--set", "train.val_every_steps=15",
    "--set", "train.warmup_steps=5",
]  # fmt: skip
HEADS = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion", "key")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "PODIUM_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def metrics(run: str, runs: Path, env: dict) -> dict[str, list]:
    """``podium metrics RUN --json``'s series (the matrices sit beside them, latest of each)."""
    out = json.loads(podium("metrics", run, "--json", "--runs-dir", str(runs), env=env).stdout)
    assert set(out) == {"series", "matrices"}
    assert all(set(m) == {"step", "rows", "cols", "values"} for m in out["matrices"].values())
    return out["series"]


def test_resume_gives_bit_identical_losses_for_every_head(tmp_path, env):
    runs = tmp_path / "runs"
    common = [DEMO, "--headless", "--runs-dir", str(runs), *SMALL]
    podium("train", *common, "--max-steps", "40", "--name", "full", env=env)
    out = podium("train", *common, "--max-steps", "20", "--name", "part", env=env).stdout
    assert "run part stopped at step 20: --max-steps 20 reached" in out
    out = podium(
        "resume", "part", "--headless", "--max-steps", "40", "--runs-dir", str(runs), env=env
    ).stdout
    assert "resuming part from checkpoint" in out and "step 20" in out

    full, part = metrics("full", runs, env), metrics("part", runs, env)
    for head in HEADS:
        name = f"train/loss/{head}"
        assert [s for s, _ in part[name]] == list(range(1, 41)), (
            name
        )  # no duplicate or missing step
        assert part[name] == full[name], f"{name} differs after resume"
    assert part["train/loss"] == full["train/loss"]
    assert part["val/loss"] == full["val/loss"]
    assert {"lr", "throughput/tokens_per_s", "val/loss/pitch"} <= set(full)

    listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
    states = {r["id"]: (r["state"], r["step"]) for r in listed}
    assert states == {"full": ("stopped", 40), "part": ("stopped", 40)}
    cks = json.loads(
        podium("checkpoints", "part", "--json", "--runs-dir", str(runs), env=env).stdout
    )
    assert max(c["step"] for c in cks) == 40 and all(Path(c["path"]).is_file() for c in cks)
    table = podium("checkpoints", "part", "--runs-dir", str(runs), env=env).stdout
    assert all(size(c["size"]) in table for c in cks), table
    csv_out = podium(
        "metrics", "part", "--csv", "--series", "lr", "--runs-dir", str(runs), env=env
    ).stdout
    assert csv_out.splitlines()[0] == "series,step,value" and len(csv_out.splitlines()) == 41


def test_sigterm_stops_cleanly_a_live_run_cannot_be_resumed_and_resume_continues(tmp_path, env):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podium.tui.cli",
            "train",
            DEMO,
            "--headless",
            "--runs-dir",
            str(runs),
            "--name",
            "live",
            *SMALL,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("step "):
                break
            assert line or proc.poll() is None, "training ended before its first step line"
        else:
            raise AssertionError("no step line")
        refused = podium(
            "resume", "live", "--headless", "--runs-dir", str(runs), env=env, check=False
        )
        assert refused.returncode == 2
        assert refused.stderr.strip().startswith("podium: error: run live is live")
        listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
        assert listed[0]["state"] == "live"

        def control(*words: str) -> str:
            return podium("control", "live", *words, "--runs-dir", str(runs), env=env).stdout

        control("pause")
        paused = json.loads(control("status"))
        assert paused["state"] == "paused"
        time.sleep(0.5)
        assert json.loads(control("status"))["step"] == paused["step"]
        assert "set-lr: ok (0.0001)" in control("set-lr", "1e-4")
        control("resume")
        bad = podium(
            "control", "live", "set-lr", "fast", "--runs-dir", str(runs), env=env, check=False
        )
        assert bad.returncode == 2 and "the learning rate must be a number" in bad.stderr
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "SIGTERM received" in rest
    listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
    assert listed[0]["state"] == "stopped" and listed[0]["reason"] == "SIGTERM received"
    stopped_at = listed[0]["step"]
    cks = json.loads(
        podium("checkpoints", "live", "--json", "--runs-dir", str(runs), env=env).stdout
    )
    assert max(c["step"] for c in cks) == stopped_at

    podium(
        "resume",
        "live",
        "--headless",
        "--max-steps",
        str(stopped_at + 3),
        "--runs-dir",
        str(runs),
        env=env,
    )
    series = metrics("live", runs, env)
    steps = [s for s, _ in series["train/loss"]]
    assert steps == list(range(1, stopped_at + 4))
    lrs = dict(series["lr"])
    assert lrs[paused["step"] + 1] == pytest.approx(
        1e-4
    )  # the new rate took effect after the pause


def test_kill_9_leaves_an_interrupted_run_that_resumes(tmp_path, env):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "train", DEMO, "--headless", "--runs-dir", str(runs), "--name", "k9", *SMALL,
         "--set", "checkpoint.every_steps=5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        ck = runs / "k9" / "checkpoints" / "latest.json"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
            ck.exists() and json.loads(ck.read_text())["step"] >= 10
        ):
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
    assert listed[0]["state"] == "interrupted"
    out = podium(
        "resume", "k9", "--headless", "--max-steps", "22", "--runs-dir", str(runs), env=env
    ).stdout
    assert "resuming k9 from checkpoint" in out
    steps = [s for s, _ in metrics("k9", runs, env)["train/loss"]]
    assert steps == list(range(1, 23))  # points after the checkpoint were dropped, none duplicated


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", DEMO, "--headless", "--name", "../x"], "--name '../x': not a safe run name"),
        (["train", DEMO, "--headless", "--max-steps", "0"], "--max-steps: must be >= 1"),
        (["train", DEMO, "--headless", "--set", "train.lr=abc"], "train.lr: expected a number"),
        (["resume", "nope", "--headless"], "no run 'nope'"),
        (["metrics", "nope"], "one of the arguments --json --csv --history is required"),
        (["train", "missing.toml"], "missing.toml: profile not found"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, env, args, fragment):
    proc = (
        podium(*args, "--runs-dir", str(tmp_path), env=env, check=False)
        if args[0] != "bogus"
        else podium(*args, env=env, check=False)
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_name_is_refused_and_nothing_is_lost(tmp_path, env):
    runs = tmp_path / "runs"
    (runs / "taken").mkdir(parents=True)
    (runs / "taken" / "precious.txt").write_text("mine")
    proc = podium(
        "train",
        DEMO,
        "--headless",
        "--name",
        "taken",
        "--runs-dir",
        str(runs),
        env=env,
        check=False,
    )
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (runs / "taken" / "precious.txt").read_text() == "mine"


def test_detach_trains_in_a_new_session_without_a_terminal(tmp_path, env):
    runs = tmp_path / "runs"
    out = podium(
        "train",
        DEMO,
        "--detach",
        "--name",
        "bg",
        "--max-steps",
        "60",
        "--runs-dir",
        str(runs),
        *SMALL,
        env=env,
    )
    assert "run bg is training in the background" in out.stdout
    pid = int(out.stdout.split("(pid ")[1].split(",")[0])
    try:
        assert os.getsid(pid) == pid  # its own session: a closing login cannot hang it up
        tty_nr = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])
        assert tty_nr == 0  # no controlling terminal
    except (ProcessLookupError, FileNotFoundError):
        pass  # it may already have finished
    states = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = json.loads(podium("runs", "--json", "--runs-dir", str(runs), env=env).stdout)
        states.append(listed[0]["state"])
        if listed[0]["state"] == "stopped":
            break
        time.sleep(0.3)
    assert states[0] == "detached"  # live, and nobody is watching it
    assert listed[0]["state"] == "stopped" and listed[0]["step"] == 60
    log = (runs / "bg" / "train.log").read_text()
    assert "run bg stopped at step 60" in log  # the child's own stdout went to the run's log


def test_detach_reports_errors_from_before_training_starts(tmp_path, env):
    proc = podium(
        "train", DEMO, "--detach", "--runs-dir", str(tmp_path),
        "--set", "data.source=midi_dir", "--set", f"data.path={tmp_path / 'nowhere'}",
        env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such dataset directory" in lines[0]
    assert not list(tmp_path.iterdir())  # no dead run left behind


def test_branch_from_an_older_checkpoint_starts_a_new_run_with_its_parent(tmp_path, env):
    runs = tmp_path / "runs"
    common = [DEMO, "--headless", "--runs-dir", str(runs), *SMALL]
    podium("train", *common, "--max-steps", "25", "--name", "straight", env=env)
    podium("train", *common, "--max-steps", "20", "--name", "parent", env=env)
    cks = {
        c["name"]: c["step"]
        for c in json.loads(
            podium("checkpoints", "parent", "--json", "--runs-dir", str(runs), env=env).stdout
        )
    }
    assert cks["best"] == 15 and cks["latest"] == 20  # validation at 15, stop at 20
    out = podium(
        "resume",
        "parent",
        "--checkpoint",
        "best",
        "--name",
        "child",
        "--headless",
        "--max-steps",
        "25",
        "--runs-dir",
        str(runs),
        env=env,
    ).stdout
    assert "new run child from run parent, checkpoint best (step 15)" in out
    info = json.loads((runs / "child" / "run.json").read_text())
    assert (
        info["parent"]["run"] == "parent"
        and info["parent"]["checkpoint"] == "best"
        and info["parent"]["step"] == 15
    )
    straight, parent, child = (metrics(r, runs, env) for r in ("straight", "parent", "child"))
    assert (
        child["train/loss/pitch"] == straight["train/loss/pitch"]
    )  # 1-15 copied, 16-25 recomputed exactly
    assert [s for s, _ in parent["train/loss"]] == list(range(1, 21))  # the parent is untouched
    child_cks = json.loads(
        podium("checkpoints", "child", "--json", "--runs-dir", str(runs), env=env).stdout
    )
    assert all(str(runs / "child") in c["path"] for c in child_cks)
    bad = podium(
        "resume",
        "parent",
        "--checkpoint",
        "nope",
        "--headless",
        "--runs-dir",
        str(runs),
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "no checkpoint named 'nope'" in bad.stderr
