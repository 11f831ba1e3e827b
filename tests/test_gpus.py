"""The GPU door: NA, the fake and real providers, the monitor thread, and ``podium gpus``."""

from __future__ import annotations

import argparse
import ctypes.util
import json
import math
import os
import pickle
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from podium.engine.cli import gpus as gpus_cli
from podium.engine.gpus.nvml import (
    NA,
    FakeNvmlProvider,
    GpuError,
    GpuMonitor,
    GpuProcessInfo,
    NvmlProvider,
    is_na,
    normalize_bus_id,
    normalize_uuid,
    provider,
    read_snapshot,
)
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

NO_NVML = ctypes.util.find_library("nvidia-ml") is None


@pytest.fixture(autouse=True)
def box(monkeypatch, tmp_path) -> Path:
    return isolate(monkeypatch, tmp_path)


# ----------------------------------------------------------------------------------------------
# NA and names


def test_na_is_a_quiet_sentinel():
    assert str(NA) == "N/A" and repr(NA) == "NA" and not NA
    assert (
        math.isnan(NA + 1) and math.isnan(2 * NA) and math.isnan(NA / 3) and math.isnan(float(NA))
    )
    assert f"{NA:>6.1f}" == "   N/A" and f"{NA:.0%}" == "N/A"
    assert pickle.loads(pickle.dumps(NA)) is NA
    with pytest.raises(ValueError):
        int(NA)  # a silent 0 would look like a reading
    assert is_na(NA) and not is_na("N/A")


@pytest.mark.parametrize(
    "text", ["0000:3b:00.0", "3B:00.0", "00000000:3B:00.0", "3b:0.0", " 0:3b:00.0 "]
)
def test_bus_ids_normalise_to_nvml_form(text):
    assert normalize_bus_id(text) == "00000000:3B:00.0"


def test_not_bus_ids_or_uuids():
    assert normalize_bus_id("3b:00") is None and normalize_bus_id("GPU-1") is None
    assert normalize_uuid("GPU-5A4B0000-1111-2222-3333-444444444444") == (
        "gpu-5a4b0000-1111-2222-3333-444444444444"
    )
    assert normalize_uuid("0") is None and normalize_uuid("MIG-1234") is None


# ----------------------------------------------------------------------------------------------
# Providers


def test_fake_provider_serves_plain_data_with_na_for_gaps():
    fake = FakeNvmlProvider(
        [
            {"name": "A", "utilization": 50, "memory_used": 1, "memory_total": 4},
            {"processes": [{"pid": 7, "user": None, "command": None, "gpu_memory": None}]},
            {"processes": None},
        ]
    )
    snap = read_snapshot(fake)
    assert snap.available and snap.state == "3 fake GPUs (fake NVML)" and snap.source == "fake NVML"
    a, b, c = snap.gpus
    assert (a.utilization, a.memory_free, a.memory_fraction) == (50, 3, 0.25)
    assert a.temperature is NA and a.power_draw is NA and a.processes == ()
    assert b.uuid == "GPU-00000000-0000-0000-0000-000000000001"
    assert b.pci_bus_id == "00000000:02:00.0"
    assert b.processes == (GpuProcessInfo(7, NA, NA, NA, "C"),)
    assert b.memory_free is NA and is_na(b.memory_fraction)
    assert c.processes is NA  # a table the driver would not give
    with pytest.raises(AttributeError):
        a.utilization = 3  # snapshots are immutable


def test_fake_provider_can_play_a_machine_without_driver():
    fake = FakeNvmlProvider([], state="no NVIDIA GPU: NVIDIA driver not loaded")
    snap = read_snapshot(fake)
    assert not snap.available and snap.gpus == ()
    assert snap.state == "no NVIDIA GPU: NVIDIA driver not loaded"


def test_fake_rejects_typos():
    with pytest.raises(GpuError, match="unknown keys"):
        FakeNvmlProvider([{"utilisation": 3}])


def test_provider_honours_the_fake_env_and_rereads_the_file(box, monkeypatch):
    path = write_fake(box / "fake.json", lab_devices())
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(path))
    fake = provider()
    assert isinstance(fake, FakeNvmlProvider) and str(path) in fake.name
    assert read_snapshot(fake).gpus[1].utilization == 0
    devices = lab_devices()
    devices[1]["utilization"] = 64
    write_fake(path, devices)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a surely different mtime
    assert read_snapshot(fake).gpus[1].utilization == 64
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(box / "missing.json"))
    with pytest.raises(GpuError, match=r"missing\.json"):
        provider()


def test_real_provider_without_driver_reports_one_line_and_raises_nothing():
    nvml = NvmlProvider()
    available, state = nvml.probe()
    snap = read_snapshot(nvml)
    if NO_NVML:
        assert (available, state) == (False, "no NVIDIA GPU: NVML library not found")
        assert snap.gpus == () and not snap.available and snap.state == state
        assert nvml.gauges() == () and nvml.processes(0) is NA
    else:  # a machine with a driver: it must at least be consistent
        assert available == snap.available and state == snap.state
    assert isinstance(provider(), NvmlProvider)  # no fake variable: the real one


@pytest.mark.skipif(not NO_NVML, reason="checks the no-driver path")
def test_no_driver_path_never_reaches_nvitop_and_prints_no_banner():
    code = (
        "import sys; from podium.engine.gpus.nvml import read_snapshot, NvmlProvider;"
        "s = read_snapshot(NvmlProvider(), processes=True);"
        "print(s.state); print(sorted(m for m in sys.modules if m.startswith('nvitop')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PODIUM_FAKE_NVML"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.splitlines() == ["no NVIDIA GPU: NVML library not found", "[]"]


def test_only_nvitops_api_is_ever_imported():
    code = (
        "import sys, podium.engine.gpus.nvml, podium.engine.cli.gpus, podium.engine.gpus.select, nvitop.api;"
        "print(sorted(m for m in sys.modules if m.startswith(('nvitop.tui', 'nvitop.gui', "
        "'nvitop.cli', 'textual', 'tui'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------
# The monitor


class CountingFake(FakeNvmlProvider):
    """The fake, counting how often each kind of reading is asked for (and from which thread)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gauge_reads = 0
        self.process_reads = 0
        self.threads: set[str] = set()

    def gauges(self):
        self.gauge_reads += 1
        self.threads.add(threading.current_thread().name)
        return super().gauges()

    def processes(self, index):
        if index == 0:
            self.process_reads += 1
        return super().processes(index)


def test_monitor_polls_gauges_often_processes_rarely_in_its_own_thread():
    fake = CountingFake(lab_devices())
    seen = []
    started = time.monotonic()
    with GpuMonitor(fake, poll_seconds=0.1, process_poll_seconds=0.5) as monitor:
        unsubscribe = monitor.subscribe(seen.append)
        time.sleep(1.25)
        unsubscribe()
        count = len(seen)
        time.sleep(0.3)
        assert len(seen) == count  # unsubscribed
    elapsed = time.monotonic() - started  # in seconds, about 1.6
    assert fake.threads == {"podium-gpu-monitor"}
    # Never faster than asked (one read per interval, plus the first); slower only under load.
    assert elapsed / 0.1 * 0.4 <= fake.gauge_reads <= elapsed / 0.1 + 1
    assert 2 <= fake.process_reads <= elapsed / 0.5 + 1
    # Between process polls, snapshots carry the last table forward.
    assert all(s.gpus[0].processes[0].user == "prod" for s in seen)
    assert monitor.latest is not None and monitor.latest.available
    assert not any(t.name == "podium-gpu-monitor" for t in threading.enumerate())


def test_monitor_refreshes_processes_on_demand_and_survives_a_bad_subscriber():
    fake = CountingFake(lab_devices())
    got = threading.Event()
    monitor = GpuMonitor(fake, poll_seconds=0.1, process_poll_seconds=60)

    def bad(snapshot):
        raise RuntimeError("subscriber bug")

    monitor.subscribe(bad)
    monitor.subscribe(lambda s: got.set())
    with monitor:
        assert got.wait(5)
        time.sleep(0.3)
        before = fake.process_reads
        assert before == 1  # the first poll; the next is a minute away
        monitor.refresh_processes()
        time.sleep(0.4)
        assert fake.process_reads == before + 1


def test_monitor_refuses_to_poll_faster_than_the_floor():
    with pytest.raises(ValueError, match="poll_seconds"):
        GpuMonitor(FakeNvmlProvider([]), poll_seconds=0.01)


# ----------------------------------------------------------------------------------------------
# podium gpus


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="podium")
    gpus_cli.add_parser(parser.add_subparsers(dest="command"))
    return gpus_cli.run(parser.parse_args(["gpus", *argv]))


@pytest.fixture
def lab(box, monkeypatch):
    """The issue's lab: 0 and 1 reserved, 2 leased by another process, 3 free."""
    lease_dir = box / "leases"
    config = lab_config(box, lease_dir)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    child = hold_lease(uuid(2), "alice-run", lease_dir)
    yield config, child
    end(child)


def test_podium_gpus_marks_reserved_leased_busy_free(lab, capsys):
    config, child = lab
    assert cli() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("4 fake GPUs")
    rows = {line.split()[0]: line for line in out if line[:1].isdigit()}
    assert rows["0"].split()[1] == "RESERVED" and f"{config}:4" in rows["0"]
    assert rows["1"].split()[1] == "RESERVED" and "'37:00.0'" in rows["1"]
    assert rows["2"].split()[1] == "LEASED" and f"run alice-run, pid {child.pid}" in rows["2"]
    assert rows["3"].split()[1] == "FREE"
    assert "97%" in rows["0"] and "70.0/80.0 GiB" in rows["0"] and "380/400 W" in rows["0"]
    assert any("tritonserver" in line and "prod" in line for line in out)


def test_podium_gpus_json_has_the_same_facts(lab, capsys):
    config, child = lab
    assert cli("--json", "--gpus", "auto") == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["status"] for g in data["gpus"]] == ["RESERVED", "RESERVED", "LEASED", "FREE"]
    assert data["gpus"][0]["reservation"]["source"] == f"{config}:4"
    assert data["gpus"][2]["lease"]["holders"][0]["pid"] == child.pid
    assert data["gpus"][1]["temperature"] == 30 and data["gpus"][1]["power_draw"] == 60_000
    assert data["selection"]["indices"] == [3]
    assert [s["index"] for s in data["selection"]["skipped"]] == [0, 1, 2]


def test_podium_gpus_dry_run_refuses_a_reserved_gpu_with_exit_2(lab, capsys):
    config, _ = lab
    assert cli("--gpus", "0,") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("podium: error: --gpus 0,: GPU 0")
    assert "reserved lab-wide" in err and f"{config}:4" in err and "\n" not in err


def test_podium_gpus_dry_run_refuses_a_leased_gpu_naming_the_holder(lab, capsys):
    _, child = lab
    assert cli("--gpus", uuid(2)) == 2
    err = capsys.readouterr().err
    assert "alice-run" in err and f"pid {child.pid}" in err


def test_podium_gpus_keeps_the_lab_reservations_whatever_podium_system_config_says(
    box, monkeypatch, capsys
):
    from podium.engine.gpus import config as gpu_config

    fixed = box / "fixed-lab-config.toml"
    fixed.write_text('[gpus]\nreserved = ["3"]\n')
    monkeypatch.setattr(gpu_config, "SYSTEM_CONFIG", str(fixed))  # /etc/podium/config.toml
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", "/dev/null")
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    assert cli() == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["3"].split()[1] == "RESERVED" and f"{fixed}:2" in rows["3"]
    assert cli("--gpus", "3,") == 2
    assert "reserved lab-wide" in capsys.readouterr().err


def test_podium_gpus_shows_an_unusable_lease_file_as_blocked_not_leased(lab, capsys):
    config, _ = lab
    os.mkfifo(box_leases(config) / f"{uuid(3).lower()}.lease")  # somebody's FIFO on GPU 3
    assert cli() == 0
    rows = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()
    }
    me = pwd.getpwuid(os.getuid()).pw_name
    assert rows["3"].split()[1] == "BLOCKED"
    assert f"is a FIFO, owned by {me}: ask {me} or the admin to remove it" in rows["3"]
    assert cli("--gpus", "auto") == 2  # nothing else is free, and a blocked GPU is not chosen
    err = capsys.readouterr().err
    assert "GPU 3 cannot be leased: lease file" in err and err.count("\n") == 1
    assert cli("--json", "--gpus", "3,") == 2
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["gpus"][3]["status"] == "BLOCKED" and "FIFO" in data["gpus"][3]["lease"]["problem"]
    assert "cannot be leased" in out.err


def box_leases(config: Path) -> Path:
    return config.parent / "leases"


def test_podium_gpus_without_a_driver_prints_the_state_and_exits_0(box, monkeypatch, capsys):
    monkeypatch.setenv(
        "PODIUM_FAKE_NVML",
        str(write_fake(box / "none.json", [], state="no NVIDIA GPU: NVML library not found")),
    )
    assert cli() == 0
    assert capsys.readouterr().out == "no NVIDIA GPU: NVML library not found\n"
    assert cli("--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["available"] is False and data["gpus"] == []


def test_podium_gpus_reports_a_bad_config_in_one_line(box, capsys):
    Path(os.environ["PODIUM_SYSTEM_CONFIG"]).write_text('[gpus]\nreserved = ["zero"]\n')
    assert cli() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "etc-podium-config.toml:2" in err and "'zero'" in err


# ----------------------------------------------------------------------------------------------
# The real provider against a stub libnvidia-ml (no GPU here): the wrapper, not the hardware

_STUB_NVML_C = r"""
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
typedef struct { unsigned gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct {
    char busIdLegacy[16]; unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_t;
/* STUB_NVML_INIT picks what nvmlInit returns: 0 success, 9 driver not loaded, 18 mismatch. */
int nvmlInitWithFlags(unsigned flags) { const char *e = getenv("STUB_NVML_INIT");
    return e ? atoi(e) : 0; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int r) { return r == 3 ? "Not Supported" : "Stub Error"; }
int nvmlSystemGetDriverVersion(char *v, unsigned n) { snprintf(v, n, "999.1"); return 0; }
int nvmlDeviceGetCount_v2(unsigned *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **h) { *h = (void *)(long)(i + 1); return 0; }
int nvmlDeviceGetName(void *h, char *s, unsigned n) { snprintf(s, n, "Stub GPU %ld", (long)h);
    return 0; }
int nvmlDeviceGetUUID(void *h, char *s, unsigned n) {
    snprintf(s, n, "GPU-0000000%ld-aaaa-bbbb-cccc-dddddddddddd", (long)h); return 0; }
int nvmlDeviceGetPciInfo_v3(void *h, pci_t *p) { memset(p, 0, sizeof *p);
    snprintf(p->busId, 32, "00000000:%02lX:00.0", 0x3a + (long)h); return 0; }
int nvmlDeviceGetUtilizationRates(void *h, util_t *u) { u->gpu = 40 + (long)h; u->memory = 1;
    return 0; }
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) { m->total = 16ULL << 30; m->used = 1ULL << 30;
    m->free = m->total - m->used; return 0; }
int nvmlDeviceGetTemperature(void *h, int sensor, unsigned *t) { *t = 50; return 0; }
/* GPU 1 does not report power: NVML_ERROR_NOT_SUPPORTED. */
int nvmlDeviceGetPowerUsage(void *h, unsigned *w) { if ((long)h == 2) return 3; *w = 123456;
    return 0; }
int nvmlDeviceGetEnforcedPowerLimit(void *h, unsigned *w) { *w = 300000; return 0; }
/* GPU 0 runs two compute processes: the caller itself (1 GiB) and pid 1; GPU 1 none. */
typedef struct { unsigned pid; unsigned long long usedGpuMemory; } proc_t;
int nvmlDeviceGetComputeRunningProcesses(void *h, unsigned *count, proc_t *out) {
    unsigned want = (long)h == 1 ? 2 : 0;
    if (want == 0) { *count = 0; return 0; }
    if (out == NULL || *count < want) { *count = want; return 7; } /* INSUFFICIENT_SIZE */
    out[0].pid = getpid(); out[0].usedGpuMemory = 1ULL << 30;
    out[1].pid = 1; out[1].usedGpuMemory = 1ULL << 20;
    *count = want; return 0; }
int nvmlDeviceGetGraphicsRunningProcesses(void *h, unsigned *count, proc_t *out) {
    *count = 0; return 0; }
"""


@pytest.fixture(scope="module")
def stub_nvml(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the stub NVML library")
    lib = tmp_path_factory.mktemp("stub-nvml")
    (lib / "stub.c").write_text(_STUB_NVML_C)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(lib / "libnvidia-ml.so.1"), str(lib / "stub.c")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return lib


def stub_snapshot(lib: Path, init: str = "0") -> dict:
    code = (
        "import json, os; from podium.engine.gpus.nvml import read_snapshot;"
        "print(json.dumps({**read_snapshot().to_json(), 'pid': os.getpid()}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PODIUM_FAKE_NVML"}
    env.update(LD_LIBRARY_PATH=str(lib), STUB_NVML_INIT=init)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # nvitop's complaints about the stub stay off the terminal
    return json.loads(out.stdout)


def test_real_provider_reads_gauges_and_maps_unsupported_calls_to_na(stub_nvml):
    snap = stub_snapshot(stub_nvml)
    assert snap["available"] and snap["state"] == "2 NVIDIA GPUs (driver 999.1)"
    assert snap["source"] == "nvml"
    first, second = snap["gpus"]
    assert first["name"] == "Stub GPU 1"
    assert first["uuid"] == "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd"
    assert first["pci_bus_id"] == "00000000:3B:00.0"
    assert (first["utilization"], first["temperature"]) == (41, 50)
    assert (first["memory_used"], first["memory_total"]) == (1 << 30, 16 << 30)
    assert (first["power_draw"], first["power_limit"]) == (123456, 300000)  # milliwatts
    assert second["power_draw"] is None and second["power_limit"] == 300000  # NA -> null
    # Process tables come through nvitop.api, which fills in user and command from the OS.
    init, me = first["processes"]  # sorted by pid
    assert (me["pid"], me["gpu_memory"], me["kind"]) == (snap["pid"], 1 << 30, "C")
    assert me["user"] == pwd.getpwuid(os.getuid()).pw_name and "read_snapshot" in me["command"]
    assert (init["pid"], init["gpu_memory"]) == (1, 1 << 20)
    assert second["processes"] == []


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("9", "no NVIDIA GPU: NVIDIA driver not loaded"),
        ("18", "no NVIDIA GPU: NVIDIA driver/library version mismatch"),
    ],
)
def test_real_provider_turns_init_failures_into_one_line(stub_nvml, code, state):
    snap = stub_snapshot(stub_nvml, init=code)
    assert not snap["available"] and snap["gpus"] == [] and snap["state"].startswith(state)


def test_a_subscriber_may_stop_its_monitor_and_a_stopped_one_stays_stopped():
    monitor = GpuMonitor(FakeNvmlProvider(lab_devices()), poll_seconds=0.1)
    stopped = threading.Event()

    def stop_on_first(snapshot):
        monitor.stop()
        stopped.set()

    monitor.subscribe(stop_on_first)
    monitor.start()
    assert stopped.wait(5)
    time.sleep(0.2)
    assert not any(t.name == "podium-gpu-monitor" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="cannot restart"):
        monitor.start()
