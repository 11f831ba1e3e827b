"""Reserved-GPU config layers, GPU selection, claiming leases, and CUDA visibility."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.engine.gpus.config import GpuConfigError, GpuSettings, load_gpu_config
from podium.engine.gpus.leases import Holder, LeaseInfo, holders
from podium.engine.gpus.nvml import FakeNvmlProvider, GpuSnapshot, read_snapshot
from podium.engine.gpus.select import (
    GpuSelectionError,
    LeasedGpuError,
    ReservedGpuError,
    apply_visibility,
    claim_gpus,
    classify,
    cuda_initialized,
    parse_spec,
    select_gpus,
)
from tests.fake_nvml import (
    GIB,
    ROOT,
    end,
    hold_lease,
    isolate,
    lab_config,
    lab_devices,
    uuid,
    write_fake,
)


@pytest.fixture(autouse=True)
def box(monkeypatch, tmp_path) -> Path:
    return isolate(monkeypatch, tmp_path)


def system_file() -> Path:
    return Path(os.environ["PODIUM_SYSTEM_CONFIG"])


def user_file() -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "podium" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------
# Config layers


def test_layers_add_reservations_and_remember_where(box, monkeypatch):
    lab_config(box, box / "leases")
    user_file().write_text('[gpus]\nreserved = ["GPU-00000003-1111-2222-3333-444444444444"]\n')
    monkeypatch.setenv("PODIUM_RESERVED_GPUS", "2, ")
    config = load_gpu_config()
    got = [(r.name, r.kind, r.source, r.lab_wide) for r in config.reserved]
    assert got == [
        ("0", "index", f"{system_file()}:4", True),
        ("37:00.0", "pci", f"{system_file()}:5", True),
        ("GPU-00000003-1111-2222-3333-444444444444", "uuid", f"{user_file()}:2", False),
        ("2", "index", "env PODIUM_RESERVED_GPUS", False),
    ]
    assert config.settings.lease_dir == str(box / "leases")
    assert config.files == (str(system_file()), str(user_file()))
    snap = read_snapshot(FakeNvmlProvider(lab_devices()))
    assert [config.reservation_for(g) is not None for g in snap.gpus] == [True] * 4


def test_user_layers_cannot_shrink_or_loosen_the_lab(box):
    lab_config(box, box / "leases", extra="busy_memory_fraction = 0.2\npoll_seconds = 2.0\n")
    user_file().write_text(
        "[gpus]\n"
        "reserved = []\n"
        'unreserve = ["0"]\n'
        "busy_memory_fraction = 0.9\n"
        "poll_seconds = 0.5\n"
        "process_poll_seconds = 30\n"
        'lease_dir = "/tmp/my-private-leases"\n'
    )
    config = load_gpu_config()
    assert [r.name for r in config.reserved] == ["0", "37:00.0"]
    assert config.settings.busy_memory_fraction == 0.2
    assert config.settings.poll_seconds == 2.0
    assert config.settings.process_poll_seconds == 30.0  # slower than the lab: allowed
    assert config.settings.lease_dir == str(box / "leases")
    assert len(config.warnings) == 4
    assert all(w.startswith(f"{user_file()}:") and "ignored" in w for w in config.warnings)
    assert any(":3: gpus.unreserve" in w for w in config.warnings)


def test_user_may_be_stricter_than_what_the_lab_left_unset(box):
    system_file().write_text('[gpus]\nreserved = ["0"]\n')
    user_file().write_text("[gpus]\nbusy_memory_fraction = 0.05\npoll_seconds = 3\n")
    config = load_gpu_config()
    assert config.settings.busy_memory_fraction == 0.05
    assert config.settings.poll_seconds == 3.0
    assert config.warnings == ()


def test_podiums_defaults_are_the_floor_where_the_lab_sets_nothing(box):
    """A server is multi-user unless the lab says otherwise: no weakening of the defaults."""
    system_file().write_text('[gpus]\nreserved = ["0"]\n')
    user_file().write_text(
        "[gpus]\n"
        'lease_dir = "/tmp/my-private-leases"\n'
        "busy_memory_fraction = 1.0\n"
        "poll_seconds = 0.1\n"
        "process_poll_seconds = 0.5\n"
        "admin = 0\n"
        'final = ["poll_seconds"]\n'
    )
    config = load_gpu_config()
    assert config.settings == GpuSettings()
    assert config.settings.lease_dir == "/tmp/podium-leases"
    assert len(config.warnings) == 6 and all("ignored" in w for w in config.warnings)
    assert any(
        ":2: gpus.lease_dir: ignored; the lease directory is lab-wide" in w for w in config.warnings
    )
    assert any(":6: gpus.admin: ignored; only the lab file sets it" in w for w in config.warnings)


def test_the_lab_can_make_settings_final(box):
    lab_config(
        box,
        box / "leases",
        extra='busy_memory_fraction = 0.2\nfinal = ["busy_memory_fraction", "poll_seconds"]\n',
    )
    user_file().write_text(
        "[gpus]\nbusy_memory_fraction = 0.05\npoll_seconds = 5\nprocess_poll_seconds = 9\n"
    )
    config = load_gpu_config()
    assert config.final == {"busy_memory_fraction", "poll_seconds"}
    assert config.settings.busy_memory_fraction == 0.2  # even a stricter value: final is final
    assert config.settings.poll_seconds == 1.0  # final at podium's default
    assert config.settings.process_poll_seconds == 9.0  # not final: slower is allowed
    assert [w.split(": ignored; ")[1] for w in config.warnings] == [
        "the lab file made it final"
    ] * 2


def test_a_bad_final_list_is_one_line(box):
    system_file().write_text('[gpus]\nfinal = ["poll_second"]\n')
    with pytest.raises(GpuConfigError, match=r":2: gpus.final: must be a list of setting names"):
        load_gpu_config()


def test_the_lab_file_path_is_fixed_and_the_override_can_only_add(box, monkeypatch, tmp_path):
    """``PODIUM_SYSTEM_CONFIG=/dev/null`` used to turn a lab-reserved GPU free."""
    fixed = tmp_path / "etc-podium" / "config.toml"
    fixed.parent.mkdir()
    fixed.write_text(
        '[gpus]\nreserved = ["0"]\nbusy_memory_fraction = 0.2\nfinal = ["poll_seconds"]\n'
    )
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", "/dev/null")
    config = load_gpu_config(lab_path=fixed)
    assert [(r.name, r.source, r.lab_wide) for r in config.reserved] == [("0", f"{fixed}:2", True)]
    assert config.files[0] == str(fixed)
    # An override that tries to shrink or loosen the lab adds its reservations and nothing else.
    override = tmp_path / "mine.toml"
    override.write_text(
        '[gpus]\nreserved = ["1"]\nunreserve = ["0"]\nbusy_memory_fraction = 0.9\n'
        'poll_seconds = 2\nlease_dir = "/tmp/mine"\nadmin = 0\nfinal = ["lease_dir"]\n'
    )
    monkeypatch.setenv("PODIUM_SYSTEM_CONFIG", str(override))
    config = load_gpu_config(lab_path=fixed)
    assert [r.name for r in config.reserved] == ["0", "1"]
    assert config.settings.busy_memory_fraction == 0.2
    assert config.settings.poll_seconds == 1.0 and config.settings.lease_dir == "/tmp/podium-leases"
    assert config.settings.admin is None and "lease_dir" in config.final  # final may only grow
    assert len(config.warnings) == 5
    assert config.files == (str(fixed), str(override))


def test_no_files_means_defaults():
    config = load_gpu_config()
    assert config.reserved == () and config.files == ()
    assert config.settings.lease_dir == "/tmp/podium-leases"
    assert (config.settings.poll_seconds, config.settings.process_poll_seconds) == (1.0, 5.0)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("[gpus]\nreserved = ['0']\nreserverd = ['1']\n", ":3: gpus.reserverd:", "unknown key"),
        ("[gpus]\nbusy_memory_fraction = 1.5\n", ":2: gpus.busy_memory_fraction:", "between 0"),
        ("[gpus]\npoll_seconds = 0.01\n", ":2: gpus.poll_seconds:", "between 0.1"),
        ("[gpus]\nreserved = [\n  '0',\n  'GPU0',\n]\n", ":4: gpus.reserved:", "'GPU0'"),
        ("[gpus]\nreserved = '0'\n", ":2: gpus.reserved:", "list of GPU names"),
        ("[gpus]\nlease_dir = 'rel/dir'\n", ":2: gpus.lease_dir:", "absolute"),
        ("[gpus]\npoll_seconds = true\n", ":2: gpus.poll_seconds:", "number"),
        ("gpus = 3\n", ":1: gpus:", "table"),
        ("[gpus]\nreserved = [\n", ":2: TOML syntax error", ""),
    ],
)
def test_bad_config_is_one_line_naming_file_line_key(text, where, what):
    system_file().write_text(text)
    with pytest.raises(GpuConfigError) as err:
        load_gpu_config()
    message = str(err.value)
    assert message.startswith(f"{system_file()}{where}") and what in message
    assert "\n" not in message and err.value.exit_code == 2


def test_bad_env_reservation_names_the_variable(monkeypatch):
    monkeypatch.setenv("PODIUM_RESERVED_GPUS", "0,banana")
    with pytest.raises(GpuConfigError, match=r"^PODIUM_RESERVED_GPUS: 'banana' is not a GPU"):
        load_gpu_config()


def test_unreadable_lab_config_is_refused_not_skipped():
    system_file().mkdir()  # unreadable as a file, even for root
    with pytest.raises(GpuConfigError, match="cannot read the GPU configuration"):
        load_gpu_config()


def test_other_tables_belong_to_others():
    system_file().write_text('[dashboard]\ntheme = "dark"\n[gpus]\nreserved = [1]\n')
    assert [r.source for r in load_gpu_config().reserved] == [f"{system_file()}:4"]


# ----------------------------------------------------------------------------------------------
# Specs and selection


def test_parse_spec_forms():
    assert parse_spec("auto").kind == "auto" and parse_spec("").count == 1
    assert parse_spec("CPU").kind == "cpu" and parse_spec("none").kind == "cpu"
    assert (parse_spec("2").kind, parse_spec("2").count) == ("count", 2)
    assert parse_spec("2,3").names == ("2", "3") and parse_spec("0,").names == ("0",)
    assert parse_spec(f"{uuid(1)},3b:00.0").names == (uuid(1), "3b:00.0")
    with pytest.raises(GpuSelectionError, match=r"write --gpus 0, for GPU 0"):
        parse_spec("0")
    with pytest.raises(GpuSelectionError, match="'gpu1' is not a GPU"):
        parse_spec("gpu1,2")


def lab_snapshot() -> GpuSnapshot:
    return read_snapshot(FakeNvmlProvider(lab_devices()))


def holder(run: str = "alice-run", pid: int = 999_999, shared: bool = False) -> Holder:
    return Holder("alice", 1001, pid, run, "gpu-box", time.time(), shared)


LAB_LEASES = {uuid(2): LeaseInfo(uuid(2), False, (holder(),))}


def lab_select(spec: str, box: Path, **kw):
    lab_config(box, box / "leases")
    config = load_gpu_config()
    kw.setdefault("leases", LAB_LEASES)
    return select_gpus(
        spec,
        snapshot=lab_snapshot(),
        reserved=config.reserved,
        busy_memory_fraction=config.settings.busy_memory_fraction,
        **kw,
    )


def test_auto_picks_the_free_gpu_and_says_what_it_skipped(box):
    sel = lab_select("auto", box)
    assert [g.index for g in sel.gpus] == [3] and sel.uuids == (uuid(3),)
    reasons = {s.gpu.index: s.reason for s in sel.skipped}
    assert reasons[0].startswith("reserved lab-wide as '0' (") and ":4)" in reasons[0]
    assert ":5)" in reasons[1]
    assert reasons[2].startswith("leased by alice (run alice-run, pid 999999")
    assert sel.describe()[0] == f"devices: GPU 3 ({uuid(3)})"


def test_a_count_too_large_lists_why_each_gpu_was_skipped(box):
    with pytest.raises(GpuSelectionError) as err:
        lab_select("2", box)
    message = str(err.value)
    assert message.startswith("--gpus 2: 1 of 4 GPUs free, 2 wanted: GPU 0 reserved")
    assert "GPU 1 reserved" in message and "GPU 2 leased by alice" in message


@pytest.mark.parametrize("name", ["0,", "GPU-00000000-1111-2222-3333-444444444444", "17:00.0"])
def test_asking_for_a_reserved_gpu_names_the_reservation(box, name):
    with pytest.raises(ReservedGpuError) as err:
        lab_select(name, box)
    assert err.value.exit_code == 2
    assert f"reserved lab-wide as '0' ({system_file()}:4)" in str(err.value)


def test_asking_for_a_leased_gpu_names_the_holder(box):
    with pytest.raises(LeasedGpuError, match=r"alice \(run alice-run, pid 999999"):
        lab_select("2,3", box)
    shared = {uuid(2): LeaseInfo(uuid(2), True, (holder(shared=True),))}
    with pytest.raises(LeasedGpuError, match="--share-gpu"):
        lab_select("2,", box, leases=shared)
    assert lab_select("2,", box, leases=shared, share=True).uuids == (uuid(2),)
    with pytest.raises(LeasedGpuError, match="exclusively"):
        lab_select("2,", box, share=True)


def test_unknown_gpu_and_busy_gpu_by_name(box):
    with pytest.raises(GpuSelectionError, match=r"no GPU 7 on this machine \(GPUs 0, 1, 2, 3\)"):
        lab_select("7,", box)
    devices = lab_devices()
    devices[3]["processes"] = [{"pid": 5, "user": "bob", "command": "python", "gpu_memory": GIB}]
    sel = select_gpus(
        "3,",
        snapshot=read_snapshot(FakeNvmlProvider(devices)),
        reserved=(),
        leases={},
        busy_memory_fraction=0.1,
    )
    assert sel.uuids == (uuid(3),) and "busy" in sel.warnings[0] and "bob" in sel.warnings[0]


def test_busy_means_foreign_compute_or_memory_over_the_threshold():
    devices = [
        {"memory_used": 1 * GIB, "memory_total": 10 * GIB},  # 10%: not over
        {"memory_used": 2 * GIB, "memory_total": 10 * GIB},  # 20%: busy
        {"memory_used": 0, "memory_total": 10 * GIB, "processes": [{"pid": 77, "user": "bob"}]},
        {"memory_used": 0, "memory_total": 10 * GIB, "processes": [{"pid": 78, "kind": "G"}]},
        {"memory_used": 0, "memory_total": 12 * GIB, "processes": [{"pid": os.getpid()}]},
        {},  # readings unavailable: not busy, but sorted last
    ]
    snap = read_snapshot(FakeNvmlProvider(devices))
    states = classify(snap, reserved=(), leases={}, busy_memory_fraction=0.1)
    assert [s.state for s in states] == ["FREE", "BUSY", "BUSY", "FREE", "FREE", "FREE"]
    assert states[1].detail == "20% of memory in use (over 10%)"
    assert states[2].detail == "1 compute process (user bob)" and states[2].users == ("bob",)
    sel = select_gpus("3", snapshot=snap, reserved=(), leases={}, busy_memory_fraction=0.1)
    assert [g.index for g in sel.gpus] == [4, 3, 0]  # most free memory first, then index


def test_without_a_driver_auto_means_cpu_and_named_gpus_are_refused():
    snap = read_snapshot(FakeNvmlProvider([], state="no NVIDIA GPU: NVML library not found"))
    sel = select_gpus("auto", snapshot=snap, reserved=(), leases={}, busy_memory_fraction=0.1)
    assert sel.cpu and sel.note == "no NVIDIA GPU: NVML library not found"
    assert sel.describe() == ["devices: CPU only (no NVIDIA GPU: NVML library not found)"]
    with pytest.raises(GpuSelectionError, match="use --gpus cpu"):
        select_gpus("1", snapshot=snap, reserved=(), leases={}, busy_memory_fraction=0.1)
    cpu = select_gpus(
        "cpu", snapshot=lab_snapshot(), reserved=(), leases={}, busy_memory_fraction=0.1
    )
    assert cpu.cpu and cpu.uuids == ()


@st.composite
def labs(draw):
    n = draw(st.integers(1, 6))
    devices, reserved_names, leases = [], [], {}
    for i in range(n):
        procs = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"pid": st.sampled_from([1, 2, os.getpid()]), "kind": st.sampled_from("CG")}
                ),
                max_size=2,
            )
        )
        devices.append(
            {
                "uuid": uuid(i),
                "memory_total": 16 * GIB,
                "memory_used": draw(st.sampled_from([0, GIB, 8 * GIB, None])),
                "processes": procs,
            }
        )
        if draw(st.booleans()):
            form = draw(st.sampled_from(["index", "uuid", "pci"]))
            reserved_names.append(
                {"index": str(i), "uuid": uuid(i).upper(), "pci": f"{i + 1:x}:00.0"}[form]
            )
        lease = draw(st.sampled_from([None, "exclusive", "shared"]))
        if lease:
            leases[uuid(i)] = LeaseInfo(
                uuid(i), lease == "shared", (holder(shared=lease == "shared"),)
            )
    spec = draw(
        st.one_of(
            st.just("auto"),
            st.integers(1, n + 1).map(str),
            st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True).map(
                lambda ix: ",".join(map(str, ix)) + ","
            ),
            st.integers(0, n - 1).map(uuid),
        )
    )
    return devices, reserved_names, leases, spec, draw(st.booleans())


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(labs())
def test_property_never_a_reserved_or_leased_gpu(lab):
    devices, reserved_names, leases, spec, share = lab
    env = {
        "PODIUM_SYSTEM_CONFIG": "/nonexistent/podium.toml",
        "XDG_CONFIG_HOME": "/nonexistent",
        "PODIUM_RESERVED_GPUS": ",".join(reserved_names),
    }
    reserved = load_gpu_config(env).reserved
    snap = read_snapshot(FakeNvmlProvider(devices))
    statuses = {
        s.gpu.uuid: s
        for s in classify(snap, reserved=reserved, leases=leases, busy_memory_fraction=0.25)
    }
    try:
        sel = select_gpus(
            spec,
            snapshot=snap,
            reserved=reserved,
            leases=leases,
            busy_memory_fraction=0.25,
            share=share,
        )
    except GpuSelectionError:
        # A refusal must be justified: too few free GPUs, or a named one that may not be used.
        parsed = parse_spec(spec)
        if parsed.kind in ("auto", "count"):
            assert sum(s.state == "FREE" for s in statuses.values()) < parsed.count
        else:
            named = [statuses[uuid(int(n))] if n.isdigit() else statuses[n] for n in parsed.names]
            assert any(
                s.state == "RESERVED" or (s.lease and not (s.lease.shared and share)) for s in named
            )
        return
    assert len(set(sel.uuids)) == len(sel.uuids)
    for gpu in sel.gpus:
        index = gpu.index
        assert str(index) not in reserved_names
        assert uuid(index).upper() not in reserved_names
        assert f"{index + 1:x}:00.0" not in reserved_names
        lease = leases.get(gpu.uuid)
        if lease is not None:  # only a shared lease, joined on purpose by name
            assert lease.shared and share and sel.spec.kind == "list"
        if sel.spec.kind in ("auto", "count"):
            assert statuses[gpu.uuid].state == "FREE"


# ----------------------------------------------------------------------------------------------
# Claiming: selection plus real leases


def test_claim_takes_the_free_gpu_and_holds_its_lease(box, monkeypatch):
    lease_dir = box / "leases"
    lab_config(box, lease_dir)
    monkeypatch.setenv("PODIUM_FAKE_NVML", str(write_fake(box / "fake.json", lab_devices())))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    child = hold_lease(uuid(2), "alice-run", lease_dir)
    try:
        placement = claim_gpus("auto", run_id="my-run")
        assert placement.uuids == (uuid(3),)
        info = holders(uuid(3), lease_dir=lease_dir)
        assert info is not None and info.holders[0].run_id == "my-run"
        assert any("CUDA_VISIBLE_DEVICES=1 is replaced" in w for w in placement.selection.warnings)
        with pytest.raises(GpuSelectionError, match="0 of 4 GPUs free"):
            claim_gpus("auto", run_id="second-run")  # 3 is ours now, 2 is alice's
        placement.release()
        assert holders(uuid(3), lease_dir=lease_dir) is None
        with pytest.raises(LeasedGpuError, match="alice-run"):
            claim_gpus("2,", run_id="my-run")
        assert claim_gpus("cpu", run_id="my-run").leases == ()
    finally:
        end(child)


# ----------------------------------------------------------------------------------------------
# CUDA visibility


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_apply_visibility_hides_every_gpu_before_torch_starts():
    code = (
        "import os, sys\n"
        "from podium.engine.gpus.select import apply_visibility, check_visible_devices\n"
        "apply_visibility([])\n"
        "print('torch' in sys.modules)\n"  # choosing devices never imports torch
        "print(repr(os.environ['CUDA_VISIBLE_DEVICES']), os.environ['CUDA_DEVICE_ORDER'])\n"
        "import torch\n"
        "print(torch.cuda.device_count(), torch.cuda.is_initialized())\n"
        "check_visible_devices([])\n"
        "try:\n"
        "    check_visible_devices(['GPU-00000000-1111-2222-3333-444444444444'])\n"
        "except Exception as err:\n"
        "    print(type(err).__name__)\n"
    )
    out = run_python(code, CUDA_VISIBLE_DEVICES="0,1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "False",
        "'' PCI_BUS_ID",
        "0 False",
        "CudaAlreadyInitialized",
    ]


def test_apply_visibility_refuses_gpus_once_cuda_is_initialised():
    code = (
        "import os, torch\n"
        "from podium.engine.gpus.select import apply_visibility, cuda_initialized\n"
        "print(cuda_initialized())\n"
        "torch.cuda._initialized = True  # what a library that started CUDA first leaves behind\n"
        "print(cuda_initialized())\n"
        "try:\n"
        "    apply_visibility(['GPU-00000003-1111-2222-3333-444444444444'])\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err.exit_code, 'fresh process' in str(err))\n"
        "print(os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
        "apply_visibility([])  # the CPU needs no hiding to be safe\n"
        "print(repr(os.environ['CUDA_VISIBLE_DEVICES']))\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "False",
        "True",
        "CudaAlreadyInitialized 2 True",
        "None",
        "''",
    ]


def test_apply_visibility_writes_the_chosen_uuids():
    env: dict[str, str] = {}
    apply_visibility([uuid(2), uuid(3)], environ=env)
    assert env == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": f"{uuid(2)},{uuid(3)}",
    }
    assert not cuda_initialized()
