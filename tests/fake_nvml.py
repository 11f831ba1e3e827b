"""Test helpers for the GPU door: a FAKE NVML lab, isolated config layers, lease-holding children.

The lab is the issue's example: four GPUs, 0 and 1 reserved (lab-wide), 2 leased by another run
(a real child process holds the lease), 3 free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def uuid(index: int) -> str:
    return f"GPU-{index:08x}-1111-2222-3333-444444444444"


def lab_devices() -> list[dict[str, Any]]:
    """Four 80 GiB GPUs; GPU 0 carries the production server's process."""
    devices = []
    for i in range(4):
        devices.append(
            {
                "name": "NVIDIA A100-SXM4-80GB",
                "uuid": uuid(i),
                "pci_bus_id": f"00000000:{0x17 + 0x20 * i:02X}:00.0",
                "utilization": [97, 0, 35, 0][i],
                "memory_used": [70 * GIB, GIB // 2, 2 * GIB, GIB // 2][i],
                "memory_total": 80 * GIB,
                "temperature": [71, 30, 55, 29][i],
                "power_draw": [380_000, 60_000, 200_000, 58_000][i],
                "power_limit": 400_000,
                "processes": [
                    {
                        "pid": 4000 + i,
                        "user": "prod",
                        "command": "tritonserver --model-repository /models",
                        "gpu_memory": 69 * GIB,
                    }
                ]
                if i == 0
                else [],
            }
        )
    return devices


def write_fake(path: Path, devices: list[dict[str, Any]], state: str | None = None) -> Path:
    path.write_text(json.dumps({"devices": devices, "state": state}))
    return path


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real /etc/podium or ~/.config/podium, no inherited GPU variables. Returns the sandbox.

    In this process the fixed lab file moves into the sandbox (absent), so the
    ``PODIUM_SYSTEM_CONFIG`` file stands in for it; child processes read the real one, which CI
    machines do not have.
    """
    from podium.engine.gpus import config

    box = tmp_path / "gpu-env"
    (box / "xdg").mkdir(parents=True)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", str(box / "no-fixed-lab-config.toml"))
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", str(box / "etc-podium-config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(box / "xdg"))
    for name in ("PODIUM_RESERVED_GPUS", "PODIUM_FAKE_NVML", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    return box


def lab_config(box: Path, lease_dir: Path, extra: str = "") -> Path:
    """The lab-wide file: GPUs 0 (by index) and 1 (by PCI bus id, lspci's short form) reserved.

    The test's user is the lab's admin, so that a lease directory it creates is trusted.
    """
    path = Path(os.environ["PODIUM_SYSTEM_CONFIG"])
    path.write_text(
        "# lab-wide podium configuration\n"
        "[gpus]\n"
        "reserved = [\n"
        '    "0",          # production inference\n'
        '    "37:00.0",    # GPU 1, by bus id\n'
        "]\n"
        f'lease_dir = "{lease_dir}"\n'
        f"admin = {os.getuid()}\n" + extra
    )
    return path


_HOLD = """
import sys, time
from podium.engine.gpus.leases import acquire
lease = acquire(
    sys.argv[1], sys.argv[2], sys.argv[3] == "shared", lease_dir=sys.argv[4],
    admins=[int(sys.argv[5])],
)
print("held", flush=True)
sys.stdin.read()  # hold until the parent closes stdin (or kills us)
"""


def hold_lease(
    uuid_: str, run_id: str, lease_dir: Path, *, shared: bool = False, user: str | None = None
) -> subprocess.Popen[str]:
    """A child process that holds a lease until its stdin closes; returns once it holds it."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _HOLD,
            uuid_,
            run_id,
            "shared" if shared else "exclusive",
            str(lease_dir),
            str(os.getuid()),  # the test's user may own the test's lease directory
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        user=user,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "held":
        child.kill()
        raise AssertionError(f"child did not take the lease: {line!r} {child.stderr.read()!r}")
    return child


def end(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(timeout=10)
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()
