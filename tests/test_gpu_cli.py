"""GPU stewardship through the real CLI, on the FAKE NVML lab (CI has no GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fake_nvml import (
    ROOT,
    end,
    hold_lease,
    isolate,
    lab_config,
    lab_devices,
    uuid,
    write_fake,
)


def podium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gpus_table_and_train_refusing_a_reserved_gpu(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    leases = box / "leases"
    config = lab_config(box, leases)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    holder = hold_lease(uuid(2), "someone-elses-run", leases)
    try:
        listed = json.loads(podium("gpus", "--json").stdout)
        states = {g["index"]: g["status"] for g in listed["gpus"]}
        assert states == {0: "RESERVED", 1: "RESERVED", 2: "LEASED", 3: "FREE"}

        chosen = podium("gpus", "--gpus", "auto")
        assert chosen.returncode == 0 and "GPU 3" in chosen.stdout + chosen.stderr

        runs = tmp_path / "runs"
        refused = podium(
            "train",
            str(ROOT / "profiles" / "demo.toml"),
            "--headless",
            "--gpus",
            "0,",
            "--runs-dir",
            str(runs),
        )
        assert refused.returncode == 2
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "reserved" in lines[0] and f"{config}:" in lines[0], (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
        assert not runs.exists() or not list(runs.iterdir())  # nothing trained, nothing left behind

        taken = podium(
            "train",
            str(ROOT / "profiles" / "demo.toml"),
            "--headless",
            "--gpus",
            "2,",
            "--runs-dir",
            str(runs),
        )
        assert taken.returncode == 2 and "someone-elses-run" in taken.stderr
    finally:
        end(holder)
