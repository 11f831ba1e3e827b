"""The one door to NVML: GPU gauges, per-GPU process tables and a background monitor.

Everything podium knows about NVIDIA GPUs comes through a *provider* built here:

* ``NvmlProvider`` reads the real driver through nvidia-ml-py (``pynvml``) and the per-GPU process
  table through ``nvitop.api`` (only nvitop's Apache-2.0 API package, never its UI modules);
* ``FakeNvmlProvider`` serves the same readings from plain data, for machines without a GPU (CI,
  demos). It is named as a fake in every state line it produces.

``provider()`` picks one: ``PODIUM_FAKE_NVML=/path/to/fake.json`` selects the fake (so subprocess
tests and the dashboard can run against it), otherwise the real one.

Readings that are simply unavailable (an NVML call that is not supported, a process owned by a user
whose details the OS hides) are the ``NA`` sentinel, never ``None`` or an exception. A machine with
no driver, no NVML library or a driver/library mismatch is not an error either: the snapshot says
so in one line (``"no NVIDIA GPU: NVML library not found"``) and lists no GPUs, and the rest of
podium keeps working on the CPU.

``GpuMonitor`` polls in its own daemon thread (gauges about once a second, process tables, which
are far more expensive and take a driver-wide lock, about every five) and posts immutable
``GpuSnapshot`` values to subscribers; the training thread never calls NVML.

Try it: ``python -m podium.engine.gpus.nvml`` prints one snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pynvml

from podium.engine.errors import PodiumError

log = logging.getLogger(__name__)

FAKE_ENV = "PODIUM_FAKE_NVML"
"""Environment variable naming a JSON file that the fake provider serves instead of NVML."""

MIN_POLL_SECONDS = 0.1
"""No monitor polls faster than this, whatever it is asked: NVML calls are not free."""


class GpuError(PodiumError):
    """A GPU description (a fake NVML file, a GPU name) given by the user is unusable."""


# ----------------------------------------------------------------------------------------------
# The "not available" sentinel


class NaType(str):
    """A reading that is not available: the string ``"N/A"`` that acts as nan in arithmetic.

    A sentinel rather than ``None`` so that a table can print it as it is and arithmetic on it
    (``used / total``) gives nan instead of a ``TypeError`` in the middle of a render.
    ``bool(NA)`` is False; ``int(NA)`` raises, because a silent 0 would look like a real reading.
    """

    _instance: NaType | None = None

    def __new__(cls) -> NaType:
        if cls._instance is None:
            cls._instance = super().__new__(cls, "N/A")
        return cls._instance

    def __repr__(self) -> str:
        return "NA"

    def __reduce__(self) -> tuple[type[NaType], tuple[()]]:
        return (NaType, ())

    def __bool__(self) -> bool:
        return False

    def __float__(self) -> float:
        return math.nan

    def __format__(self, spec: str) -> str:
        # A numeric spec such as ".1f" keeps only its fill, alignment and width.
        try:
            return str.__format__(self, spec)
        except ValueError:
            m = re.match(r"^((?:.?[<>^])?)[+\- ]?#?0?(\d*)", spec)
            align, width = (m.group(1), m.group(2)) if m else ("", "")
            return str.__format__(self, f"{align or '>'}{width}")

    def _nan(self, other: object) -> Any:
        if isinstance(other, (int, float)):
            return math.nan
        return NotImplemented

    __add__ = __radd__ = __sub__ = __rsub__ = _nan
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _nan


NA = NaType()
"""The one "not available" value."""


def is_na(value: object) -> bool:
    return value is NA


def plain(value: Any) -> Any:
    """``value`` with every ``NA`` (nested in tuples, lists, dicts) turned into ``None``, for JSON."""
    if value is NA:
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# GPU names: UUIDs and PCI bus ids come in several spellings

_BUS_ID = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<device>[0-9a-fA-F]{1,2})\.(?P<function>[0-7])$"
)
_UUID = re.compile(r"^GPU-[0-9a-fA-F]{1,8}(?:-[0-9a-fA-F]{1,12}){0,4}$", re.IGNORECASE)


def normalize_bus_id(text: str) -> str | None:
    """The canonical NVML form ``00000000:3B:00.0`` of a PCI bus id, or None if ``text`` is not one.

    nvidia-smi prints 8 domain digits, older NVML and lspci -D print 4, plain lspci none; all of
    them name the same slot, and a reservation must match whichever form the admin pasted.
    """
    m = _BUS_ID.match(text.strip())
    if not m:
        return None
    domain = int(m["domain"] or "0", 16)
    return f"{domain:08X}:{int(m['bus'], 16):02X}:{int(m['device'], 16):02X}.{m['function']}"


def normalize_uuid(text: str) -> str | None:
    """A GPU UUID (``GPU-…``) in lower case for comparison, or None if ``text`` is not one."""
    text = text.strip()
    return text.lower() if _UUID.match(text) else None


# ----------------------------------------------------------------------------------------------
# Readings


class GpuProcessInfo(NamedTuple):
    """One process with a context on a GPU, as the process table shows it."""

    pid: int
    """Host process id (NVML reports host pids, also for processes inside containers)."""
    user: str | NaType
    """Login name of the owner; NA where the OS refuses to say."""
    command: str | NaType
    """Command line; NA where the OS refuses to say (other users' processes under hidepid)."""
    gpu_memory: int | NaType  # in bytes
    """GPU memory this process holds, in bytes."""
    kind: str
    """nvidia-smi's letters: "C" compute, "G" graphics, "C+G" both."""

    @property
    def is_compute(self) -> bool:
        return "C" in self.kind


class GpuInfo(NamedTuple):
    """One GPU's identity and gauges at one moment."""

    index: int
    """NVML index: PCI bus order, the order nvidia-smi prints."""
    name: str | NaType
    uuid: str | NaType
    """``GPU-…``: the stable name that leases and ``CUDA_VISIBLE_DEVICES`` use."""
    pci_bus_id: str | NaType
    """Normalised ``00000000:3B:00.0``."""
    utilization: int | NaType  # in percent, 0..100
    memory_used: int | NaType  # in bytes
    memory_total: int | NaType  # in bytes
    temperature: int | NaType  # in degrees Celsius
    power_draw: int | NaType  # in milliwatts
    power_limit: int | NaType  # in milliwatts (the enforced limit)
    processes: tuple[GpuProcessInfo, ...] | NaType = NA
    """The process table at ``GpuSnapshot.processes_at``; NA before it was first read."""

    @property
    def memory_free(self) -> int | NaType:  # in bytes
        if is_na(self.memory_used) or is_na(self.memory_total):
            return NA
        return max(self.memory_total - self.memory_used, 0)

    @property
    def memory_fraction(self) -> float | NaType:  # 0..1
        if is_na(self.memory_used) or is_na(self.memory_total) or not self.memory_total:
            return NA
        return self.memory_used / self.memory_total


class GpuSnapshot(NamedTuple):
    """Every GPU of the machine at one moment; immutable, so it can cross threads as it is."""

    taken_at: float  # in seconds since the epoch
    available: bool
    """False when there is no usable NVML (no driver, no library, a mismatch, or a fake saying so)."""
    state: str
    """One line for humans: "2 NVIDIA GPUs (driver 550.54)" or "no NVIDIA GPU: NVML library not found"."""
    source: str
    """Which provider answered: "nvml" or "fake NVML (<path>)"."""
    gpus: tuple[GpuInfo, ...] = ()
    processes_at: float | NaType = NA  # in seconds since the epoch
    """When the process tables in ``gpus`` were read; NA if they never were."""

    def by_index(self, index: int) -> GpuInfo | None:
        return next((g for g in self.gpus if g.index == index), None)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` and the control socket: NA becomes null."""
        return plain(self)


# ----------------------------------------------------------------------------------------------
# Providers


class GpuProvider(Protocol):
    """What podium needs from NVML. Methods never raise for missing hardware or drivers."""

    name: str

    def probe(self) -> tuple[bool, str]:
        """(usable, one-line state). Initialises lazily; cheap after the first call."""
        ...

    def gauges(self) -> tuple[GpuInfo, ...]:
        """Identity and gauges of every GPU (``processes`` left NA); () when not usable."""
        ...

    def processes(self, index: int) -> tuple[GpuProcessInfo, ...] | NaType:
        """The process table of GPU ``index``; NA when it cannot be read."""
        ...


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_state(err: pynvml.NVMLError) -> str:
    """The one line shown for an NVML that cannot be initialised."""
    value = getattr(err, "value", None)
    if value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return "no NVIDIA GPU: NVML library not found"
    if value == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "no NVIDIA GPU: NVIDIA driver not loaded"
    if value == pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return (
            "no NVIDIA GPU: NVIDIA driver/library version mismatch "
            "(reload the nvidia kernel module or reboot)"
        )
    if value == pynvml.NVML_ERROR_NO_PERMISSION:
        return "no NVIDIA GPU: no permission to use NVML"
    return f"no NVIDIA GPU: NVML unavailable ({err})"


class NvmlProvider:
    """The real door: nvidia-ml-py for gauges, ``nvitop.api`` for process tables.

    Every NVML call goes through ``_query``, which initialises NVML once, lazily, under a lock
    (nothing touches the driver at import time, so importing podium on a CPU box costs nothing)
    and maps ``NVMLError`` to ``NA``: a GPU that does not report its power draw still reports
    everything else. A failed initialisation is remembered; its reason is the state line.
    """

    name = "nvml"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._initialised = False
        self._failure: str | None = None
        self._driver = ""

    def _init(self) -> bool:
        with self._lock:
            if not self._initialised and self._failure is None:
                try:
                    pynvml.nvmlInit()
                except pynvml.NVMLError as err:
                    self._failure = _nvml_state(err)
                    log.info("NVML: %s", self._failure)
                else:
                    self._initialised = True
                    with contextlib.suppress(pynvml.NVMLError):
                        self._driver = _text(pynvml.nvmlSystemGetDriverVersion())
            return self._initialised

    def _query(self, func: Callable[..., Any], *args: Any, default: Any = NA) -> Any:
        """Call one NVML function; ``default`` if NVML is unusable or the call fails.

        Args:
            func: a ``pynvml`` function.
            *args: its arguments (usually a device handle).
            default: what an unavailable reading becomes.
        """
        if not self._init():
            return default
        try:
            return func(*args)
        except pynvml.NVMLError:
            return default

    def probe(self) -> tuple[bool, str]:
        if not self._init():
            return False, self._failure or "no NVIDIA GPU"
        count = self._query(pynvml.nvmlDeviceGetCount, default=0)
        if not count:
            return False, "no NVIDIA GPU: the NVIDIA driver reports no devices"
        driver = f" (driver {self._driver})" if self._driver else ""
        return True, f"{count} NVIDIA GPU{'s' if count != 1 else ''}{driver}"

    def gauges(self) -> tuple[GpuInfo, ...]:
        if not self._init():
            return ()
        count = self._query(pynvml.nvmlDeviceGetCount, default=0)
        out = []
        for index in range(count):
            handle = self._query(pynvml.nvmlDeviceGetHandleByIndex, index)
            if is_na(handle):
                out.append(GpuInfo(index, NA, NA, NA, NA, NA, NA, NA, NA, NA))
                continue
            name = self._query(pynvml.nvmlDeviceGetName, handle)
            uuid = self._query(pynvml.nvmlDeviceGetUUID, handle)
            pci = self._query(pynvml.nvmlDeviceGetPciInfo, handle)
            bus_id = NA if is_na(pci) else normalize_bus_id(_text(pci.busId)) or _text(pci.busId)
            util = self._query(pynvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._query(pynvml.nvmlDeviceGetMemoryInfo, handle)
            out.append(
                GpuInfo(
                    index=index,
                    name=NA if is_na(name) else _text(name),
                    uuid=NA if is_na(uuid) else _text(uuid),
                    pci_bus_id=bus_id,
                    utilization=NA if is_na(util) else int(util.gpu),
                    memory_used=NA if is_na(memory) else int(memory.used),
                    memory_total=NA if is_na(memory) else int(memory.total),
                    temperature=self._query(
                        pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU
                    ),
                    power_draw=self._query(pynvml.nvmlDeviceGetPowerUsage, handle),
                    power_limit=self._query(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle),
                )
            )
        return tuple(out)

    def processes(self, index: int) -> tuple[GpuProcessInfo, ...] | NaType:
        if not self._init():
            # Never reach nvitop without a working NVML: it raises (and logs a FATAL banner)
            # where podium wants a quiet "not available".
            return NA
        try:
            # Imported here: nvitop.api costs ~0.1 s to import, and only process tables need it.
            from nvitop.api import Device, GpuProcess

            _quiet_nvitop()

            found = Device(index).processes()
            rows = []
            with GpuProcess.failsafe():  # AccessDenied / gone -> nvitop's fallbacks, not raises
                for pid, proc in sorted(found.items()):
                    rows.append(
                        GpuProcessInfo(
                            pid=int(pid),
                            user=_from_nvitop(proc.username()),
                            command=_command(proc.command()),
                            gpu_memory=_from_nvitop(proc.gpu_memory()),
                            kind=_text(proc.type) if _from_nvitop(proc.type) is not NA else "C",
                        )
                    )
            return tuple(rows)
        except Exception as err:  # nvitop raises NVMLError or psutil errors; a table is optional
            log.debug("process table of GPU %d unavailable: %s", index, err)
            return NA


def _quiet_nvitop() -> None:
    """Keep nvitop's warnings (an older driver lacks a function) off the terminal.

    Without a handler of its own, a warning goes to Python's last-resort handler, straight onto
    stderr, through the middle of the dashboard. A NullHandler stops that; the records still
    propagate to whatever logging podium configured (the run's log).
    """
    logger = logging.getLogger("nvitop")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _from_nvitop(value: Any) -> Any:
    """nvitop's own NA (and its NotApplicable) becomes ours."""
    if isinstance(value, str) and value in ("N/A", "Not Applicable"):
        return NA
    return value


def _command(value: Any) -> str | NaType:
    text = _from_nvitop(value)
    if text is NA or text in ("No Permissions", "No Such Process", ""):
        return NA
    return _text(text)


_FAKE_DEVICE_KEYS = frozenset(GpuInfo._fields) - {"index"}
_FAKE_PROCESS_KEYS = frozenset(GpuProcessInfo._fields)


class FakeNvmlProvider:
    """A FAKE NVML built from plain data, with the same methods as ``NvmlProvider``.

    For machines without a GPU: tests, demos and the dashboard under ``PODIUM_FAKE_NVML``. Each
    device is a dict with any of ``GpuInfo``'s fields (``processes`` as a list of dicts with
    ``GpuProcessInfo``'s fields); missing or null readings are NA, a missing UUID or bus id gets a
    deterministic fake one. ``state`` set to a string plays a machine without a usable driver.

    A fake loaded from a file re-reads it when it changes, so a test can move the gauges of a
    running dashboard by rewriting the file.
    """

    def __init__(
        self,
        devices: Sequence[Mapping[str, Any]],
        *,
        state: str | None = None,
        source: str = "",
    ) -> None:
        self.name = f"fake NVML ({source})" if source else "fake NVML"
        self._lock = threading.Lock()
        self._devices, self._state = self._parse(devices, state, source or "fake NVML")
        self._path: Path | None = None
        self._mtime = 0

    @classmethod
    def from_file(cls, path: str | Path) -> FakeNvmlProvider:
        """Load ``{"devices": [...], "state": null}`` (or a bare list of devices) from JSON."""
        path = Path(path)
        devices, state = cls._read(path)
        fake = cls(devices, state=state, source=str(path))
        fake._path = path
        fake._mtime = path.stat().st_mtime_ns
        return fake

    @staticmethod
    def _read(path: Path) -> tuple[list[Any], str | None]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise GpuError(f"{FAKE_ENV}={path}: cannot read the fake NVML file ({err})") from None
        if isinstance(data, list):
            return data, None
        if not isinstance(data, dict) or not isinstance(data.get("devices", []), list):
            raise GpuError(f"{path}: a fake NVML file is a list of devices or {{'devices': [...]}}")
        return data.get("devices", []), data.get("state")

    @staticmethod
    def _parse(
        devices: Sequence[Mapping[str, Any]], state: str | None, source: str
    ) -> tuple[tuple[GpuInfo, ...], str | None]:
        out = []
        for index, raw in enumerate(devices):
            unknown = set(raw) - _FAKE_DEVICE_KEYS
            if unknown:
                raise GpuError(f"{source}: device {index}: unknown keys {sorted(unknown)}")
            fields: dict[str, Any] = {k: NA if v is None else v for k, v in raw.items()}
            fields.setdefault("name", "Fake GPU")
            fields.setdefault("uuid", f"GPU-00000000-0000-0000-0000-{index:012d}")
            fields.setdefault("pci_bus_id", f"00000000:{index + 1:02X}:00.0")
            if not is_na(fields["pci_bus_id"]):
                bus = str(fields["pci_bus_id"])
                fields["pci_bus_id"] = normalize_bus_id(bus) or bus
            procs = []
            for p in raw.get("processes", ()) or ():
                unknown = set(p) - _FAKE_PROCESS_KEYS
                if unknown or "pid" not in p:
                    raise GpuError(
                        f"{source}: device {index}: a process needs a pid and only "
                        f"{sorted(_FAKE_PROCESS_KEYS)}"
                    )
                procs.append(
                    GpuProcessInfo(
                        pid=int(p["pid"]),
                        user=NA if p.get("user") is None else str(p["user"]),
                        command=NA if p.get("command") is None else str(p["command"]),
                        gpu_memory=NA if p.get("gpu_memory") is None else int(p["gpu_memory"]),
                        kind=str(p.get("kind", "C")),
                    )
                )
            # "processes": null plays a table the driver would not give.
            has_table = "processes" not in raw or raw["processes"] is not None
            fields["processes"] = tuple(procs) if has_table else NA
            for key in GpuInfo._fields:
                fields.setdefault(key, NA)
            out.append(GpuInfo(index=index, **{k: v for k, v in fields.items() if k != "index"}))
        return tuple(out), state

    def _current(self) -> tuple[tuple[GpuInfo, ...], str | None]:
        with self._lock:
            if self._path is not None:
                # A file caught half-written (or briefly gone) keeps the last good readings; its
                # mtime is not recorded, so the next poll tries again.
                with contextlib.suppress(OSError, GpuError):
                    mtime = self._path.stat().st_mtime_ns
                    if mtime != self._mtime:
                        devices, state = self._read(self._path)
                        self._devices, self._state = self._parse(devices, state, str(self._path))
                        self._mtime = mtime
            return self._devices, self._state

    def update(self, index: int, **fields: Any) -> None:
        """Change readings of device ``index`` (``processes`` as GpuProcessInfo tuples)."""
        with self._lock:
            devices = list(self._devices)
            devices[index] = devices[index]._replace(**fields)
            self._devices = tuple(devices)

    def probe(self) -> tuple[bool, str]:
        devices, state = self._current()
        if state:
            return False, state
        if not devices:
            return False, "no NVIDIA GPU: the fake NVML has no devices"
        return True, f"{len(devices)} fake GPU{'s' if len(devices) != 1 else ''} ({self.name})"

    def gauges(self) -> tuple[GpuInfo, ...]:
        devices, state = self._current()
        return () if state else tuple(d._replace(processes=NA) for d in devices)

    def processes(self, index: int) -> tuple[GpuProcessInfo, ...] | NaType:
        devices, state = self._current()
        if state or not 0 <= index < len(devices):
            return NA
        return devices[index].processes


_real: NvmlProvider | None = None
_real_lock = threading.Lock()


def provider(environ: Mapping[str, str] | None = None) -> GpuProvider:
    """The provider this process should use: the fake named by ``PODIUM_FAKE_NVML``, else NVML.

    The real provider is one per process (NVML itself is process-wide).
    """
    global _real
    path = (os.environ if environ is None else environ).get(FAKE_ENV)
    if path:
        return FakeNvmlProvider.from_file(path)
    with _real_lock:
        if _real is None:
            _real = NvmlProvider()
        return _real


def read_snapshot(
    source: GpuProvider | None = None,
    *,
    processes: bool = True,
    previous: GpuSnapshot | None = None,
) -> GpuSnapshot:
    """One snapshot of every GPU.

    Args:
        source: the provider; ``provider()`` when omitted.
        processes: read the process tables too (expensive); otherwise they are carried over from
            ``previous`` (matched by UUID) or left NA.
        previous: the last snapshot, whose process tables are reused when ``processes`` is False.
    """
    source = source or provider()
    now = time.time()
    available, state = source.probe()
    if not available:
        return GpuSnapshot(taken_at=now, available=False, state=state, source=source.name)
    gpus = source.gauges()
    if processes:
        gpus = tuple(g._replace(processes=source.processes(g.index)) for g in gpus)
        processes_at: float | NaType = time.time()
    elif previous is not None and previous.available:
        old = {g.uuid: g.processes for g in previous.gpus}
        gpus = tuple(g._replace(processes=old.get(g.uuid, NA)) for g in gpus)
        processes_at = previous.processes_at
    else:
        processes_at = NA
    return GpuSnapshot(
        taken_at=now,
        available=True,
        state=state,
        source=source.name,
        gpus=gpus,
        processes_at=processes_at,
    )


# ----------------------------------------------------------------------------------------------
# The monitor

Subscriber = Callable[[GpuSnapshot], None]


class GpuMonitor:
    """Polls a provider in a daemon thread and posts each ``GpuSnapshot`` to its subscribers.

    Gauges are read every ``poll_seconds``, process tables every ``process_poll_seconds`` (they
    take a driver-wide lock in NVML) or soon after ``refresh_processes()``. Subscribers are
    called in the monitor's thread, so they must only hand the snapshot on (``App.post_message``
    is right; rendering is not); an exception in one is logged and does not stop the others.
    """

    def __init__(
        self,
        source: GpuProvider | None = None,
        *,
        poll_seconds: float = 1.0,
        process_poll_seconds: float = 5.0,
    ) -> None:
        # "Never faster than the config allows": the intervals come from the GPU config, whose
        # lab-wide layer is a floor; MIN_POLL_SECONDS is the floor of the floor.
        if not poll_seconds >= MIN_POLL_SECONDS:
            raise ValueError(f"poll_seconds: must be >= {MIN_POLL_SECONDS} (got {poll_seconds})")
        self.source = source or provider()
        self.poll_seconds = float(poll_seconds)
        self.process_poll_seconds = max(float(process_poll_seconds), self.poll_seconds)
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._latest: GpuSnapshot | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._processes_wanted = False
        self._thread: threading.Thread | None = None

    @classmethod
    def for_config(cls, config: Any, source: GpuProvider | None = None) -> GpuMonitor:
        """A monitor with the intervals of an ``podium.engine.gpus.config.GpuConfig``."""
        settings = config.settings
        return cls(
            source,
            poll_seconds=settings.poll_seconds,
            process_poll_seconds=settings.process_poll_seconds,
        )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(snapshot)`` after every poll; returns the function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    @property
    def latest(self) -> GpuSnapshot | None:
        """The newest snapshot, or None before the first poll."""
        return self._latest

    def refresh_processes(self) -> None:
        """Read the process tables at the next tick instead of waiting for their interval."""
        self._processes_wanted = True
        self._wake.set()

    def start(self) -> GpuMonitor:
        if self._stop.is_set():
            raise RuntimeError("a stopped GpuMonitor cannot restart; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="podium-gpu-monitor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:  # timeout in seconds
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # a subscriber may stop the monitor from its own thread

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        next_processes = 0.0  # monotonic seconds
        last_poll = -math.inf  # monotonic seconds
        while not self._stop.is_set():
            now = time.monotonic()
            # An on-demand refresh still waits out one gauge interval since the last poll.
            if now - last_poll < self.poll_seconds:
                self._stop.wait(self.poll_seconds - (now - last_poll))
                continue
            want = now >= next_processes or self._processes_wanted
            self._processes_wanted = False
            try:
                snap = read_snapshot(self.source, processes=want, previous=self._latest)
            except Exception:  # a monitor must outlive any one bad poll
                log.exception("GPU poll failed")
                snap = None
            last_poll = time.monotonic()
            if want:
                next_processes = last_poll + self.process_poll_seconds
            if snap is not None:
                self._publish(snap)
            self._wake.clear()
            self._wake.wait(self.poll_seconds)

    def _publish(self, snap: GpuSnapshot) -> None:
        self._latest = snap
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(snap)
            except Exception:
                log.exception("GPU snapshot subscriber %r failed", callback)


if __name__ == "__main__":
    print(json.dumps(read_snapshot().to_json(), indent=2))
