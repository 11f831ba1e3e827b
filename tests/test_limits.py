"""A run that cannot fit is refused in one line before anything is allocated.

The estimate comes from the family's ``cost`` (the meta device); the memory it is compared with is
the host's ``MemAvailable`` or, for a GPU run, the free memory NVML reports (here the one allowed
fake, ``tests/fake_nvml.py``). The command-line checks run in children held to 8 GB of address
space, so that code which did allocate would fail the test instead of the machine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import subprocess
import sys

import pytest
import torch

from podium.engine.config import load_profile
from podium.engine.errors import ProfileError
from podium.engine.families.cp import vocab
from podium.engine.families.cp.model import CPTransformer
from podium.engine.limits import check_fits, host_available_bytes, training_bytes
from tests.fake_nvml import isolate, lab_config, lab_devices, write_fake
from tests.podium_cli import ROOT

DEMO = str(ROOT / "profiles" / "demo.toml")


def podium_limited(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
        preexec_fn=limit,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_the_cost_of_any_depth_matches_a_build_of_it():
    profile = load_profile(DEMO, ["model.n_layers=3"])
    cost = profile.family_spec.cost(profile.model, profile.data)
    with torch.device("meta"):
        model = CPTransformer(profile.model, vocab.vocab_sizes())
    assert cost.params == model.num_parameters()
    assert cost.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert cost.activation_bytes_per_token > 0
    deeper = dataclasses.replace(profile.model, n_layers=6)
    assert profile.family_spec.cost(deeper, profile.data).params > cost.params


def test_host_memory_is_read_from_proc_meminfo(tmp_path):
    assert host_available_bytes() > 0
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:  1000 kB\nMemAvailable:  512 kB\n")
    assert host_available_bytes(fake) == 512 * 1024
    profile = load_profile(DEMO)
    _, need = training_bytes(profile)
    check_fits(profile, host_bytes=need + 1)
    with pytest.raises(ProfileError, match=r"need about .* this host has 1\.0 KiB available"):
        check_fits(profile, host_bytes=1024)
    with pytest.raises(ProfileError, match="for 2 ranks"):
        check_fits(profile, processes=2, host_bytes=need + 1)


@pytest.mark.parametrize(
    "override", ["model.d_model=1000000", "model.d_ff=100000000", "model.max_len=100000000"]
)
def test_every_size_that_allocates_counts_in_the_estimate(override):
    _, base = training_bytes(load_profile(DEMO))
    _, need = training_bytes(load_profile(DEMO, [override]))
    assert need > 100 * base and need > host_available_bytes()


def _without_free_memory(line: str) -> str:
    return re.sub(r"has [0-9.]+ [KMGT]iB available", "has N available", line)


def test_a_model_too_big_for_the_host_is_one_line_before_allocation(tmp_path):
    runs = tmp_path / "runs"
    overflow = "model.n_layers=100000"
    line = one_line(
        podium_limited("train", DEMO, "--headless", "--set", overflow, "--runs-dir", str(runs))
    )
    assert "parameters need about" in line and "available (MemAvailable)" in line, line
    assert not runs.exists() or not any(runs.iterdir())  # the failed run left nothing
    # Dashboard mode says the same before any UI starts (no "failed" run on a dashboard).
    dashboard = podium_limited("train", DEMO, "--set", overflow, "--runs-dir", str(runs))
    # The host's free memory moves between the two starts; compare the lines without it.
    assert _without_free_memory(one_line(dashboard)) == _without_free_memory(line)
    assert not runs.exists() or not any(runs.iterdir())


def test_a_model_too_big_for_the_gpu_names_the_gpu(tmp_path, monkeypatch):
    box = isolate(monkeypatch, tmp_path)
    lab_config(box, box / "leases")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    runs = tmp_path / "runs"
    args = ["train", DEMO, "--headless", "--gpus", "3,", "--set", "model.n_layers=100000",
            "--set", "train.device=auto", "--runs-dir", str(runs)]  # fmt: skip
    line = one_line(podium_limited(*args, env=dict(os.environ)))
    assert "parameters need about" in line and "GPU 3" in line and "free" in line, line


def test_dataset_sizes_are_bounded():
    with pytest.raises(ProfileError, match=r"data\.n_pieces: at most 100,000 demo pieces"):
        load_profile(DEMO, ["data.n_pieces=1000000000"])
