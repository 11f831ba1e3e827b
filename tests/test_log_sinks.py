"""The ``[log]`` mirrors: TensorBoard event files read back with TensorBoard's own reader, a W&B
offline run read back from its own record file, both equal to the run's store; a missing
package refused before the run; a broken mirror never stops training."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from podium.engine.errors import ProfileError
from podium.engine.events import StepMetrics
from podium.engine.log_sinks import LogConfig, TensorBoardSink, WandbConfig, check_log_config
from podium.engine.store import RunReader
from tests.podium_cli import ROOT, podium

TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
STEPS = 60

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("mirrors")
    env = {**os.environ, "PODIUM_CACHE": str(base / "cache"), "OMP_NUM_THREADS": "1"}
    env["WANDB_SILENT"] = "true"
    out = podium(
        "train", TOY, "--headless", "--runs-dir", str(base / "runs"), "--name", "mirrored",
        "--set", "log.tensorboard=true", "--set", 'log.wandb.project="podium-tests"', env=env,
    ).stdout  # fmt: skip
    assert f"finished at step {STEPS}" in out, out
    return base / "runs" / "mirrored"


def _stored(run: Path) -> dict[str, dict[int, float]]:
    with RunReader.open(run / "metrics.db") as store:
        return {
            name: {int(s): v for s, v in store.query(name)}
            for name in store.series_names()
            if not name.startswith("throughput/")
        }


def test_tensorboard_holds_every_series_at_its_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    stored = _stored(run)
    assert {"train/loss/class", "val/accuracy", "probe/confidence", "lr"} <= set(stored)
    assert set(stored) <= set(acc.Tags()["scalars"])
    for name, points in stored.items():
        got = {e.step: e.value for e in acc.Scalars(name)}
        assert got.keys() == points.keys(), name
        for step, value in points.items():
            assert got[step] == pytest.approx(value, rel=1e-6, abs=1e-7), (name, step)
    assert sorted(stored["train/loss"]) == list(range(1, STEPS + 1))


def _wandb_history(path: Path) -> list[dict[str, float]]:
    """History rows of a W&B run file: a LevelDB-style log (32 KiB blocks of records, each
    checksum u32, length u16, type u8) of W&B's protobuf ``Record``s after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, records, partial = 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # the block's zero padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            records.append(partial + chunk)
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}
            )
    return rows


def test_wandb_offline_holds_every_series_at_its_steps(run):
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list((run / "wandb").iterdir())
    rows = {int(r["_step"]): r for r in _wandb_history(files[0])}
    stored = _stored(run)
    assert sorted(rows) == list(range(1, STEPS + 1))  # one row per step, every step
    for name, points in stored.items():
        for step, value in points.items():
            assert rows[step][name] == pytest.approx(value, rel=1e-6, abs=1e-7), (name, step)


def test_a_missing_package_is_refused_before_the_run(tmp_path):
    check_log_config(LogConfig())  # nothing asked: nothing needed
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"
        "from podium.tui.cli import main; sys.exit(main())"
    )
    runs = tmp_path / "runs"
    args = ["train", TOY, "--headless", "--runs-dir", str(runs), "--set", "log.tensorboard=true"]
    proc = __import__("subprocess").run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "log.tensorboard: the tensorboard package is not installed" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_a_missing_wandb_names_its_table(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ProfileError, match=r"^p\.toml: log\.wandb: the wandb package"):
        check_log_config(LogConfig(wandb=WandbConfig(project="x")), "p.toml")


def test_a_broken_mirror_warns_once_and_lets_training_go_on(tmp_path):
    blocked = tmp_path / "tensorboard"
    blocked.write_text("a file where the event directory should be")
    warnings: list[str] = []
    sink = TensorBoardSink(blocked, warnings.append)
    for step in (1, 2, 3):
        event = StepMetrics(
            step=step, epoch=0.0, wall=float(step), loss=1.0, losses={"a": 1.0}, lr=1e-3,
            grad_norm=1.0, tokens_per_s=1.0, samples_per_s=1.0, eta_s=0.0,
        )  # fmt: skip
        sink(event)  # never raises into the bus
    sink.close()
    assert len(warnings) == 1 and warnings[0].startswith("TensorBoard mirror stopped: "), warnings
