"""Reserved GPUs and GPU settings, read from three layers.

1. lab-wide ``/etc/podium/config.toml`` (a fixed path; see below for ``PODIUM_SYSTEM_CONFIG``),
2. the user's ``$XDG_CONFIG_HOME/podium/config.toml`` (default ``~/.config/podium/config.toml``),
3. the environment: ``PODIUM_RESERVED_GPUS=0,GPU-…,3B:00.0``.

::

    [gpus]
    reserved = ["0", "GPU-5a4b…", "00000000:3B:00.0"]   # index (NVML/PCI order), UUID or bus id
    lease_dir = "/tmp/podium-leases"
    busy_memory_fraction = 0.1
    poll_seconds = 1.0
    process_poll_seconds = 5.0
    admin = "labadmin"      # besides root, who may own the lease directory
    final = ["busy_memory_fraction", "poll_seconds"]   # users may not change these at all

Reserved GPUs serve production and must never be touched, so the layers only ever make podium
more careful: the user layers and the environment can add reservations but never remove one (a
user key that tries, such as ``unreserve``, is ignored with a warning); they can poll more slowly
but not faster; they can lower ``busy_memory_fraction`` but not raise it; and they cannot move
the lease directory, because a run leasing in a private directory would be invisible to
everybody else's. These rules hold against podium's defaults too when the lab file does not set
a value (a server is multi-user unless the lab says how), and a setting the lab lists in
``final`` cannot be changed by a user at all. ``admin`` and ``final`` are read from lab files only.

``PODIUM_SYSTEM_CONFIG`` names another lab file, for tests. Where the fixed lab file exists it is
always read, and the other file is layered on it like a user file that may also add ``final``
settings: it can add reservations and tighten settings, never shrink the lab's list, so
``PODIUM_SYSTEM_CONFIG=/dev/null`` changes nothing. Only where no fixed lab file exists (CI, a
laptop) does it stand in for it.

Every reservation remembers where it was written (``/etc/podium/config.toml:3`` or
``env PODIUM_RESERVED_GPUS``), so a refusal can say who to ask. A bad file is one
``GpuConfigError`` line naming file, line and key. Other tables in the same file belong to other
parts of podium and are left alone.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from podium.engine.errors import PodiumError
from podium.engine.gpus.leases import DEFAULT_LEASE_DIR
from podium.engine.gpus.nvml import GpuInfo, is_na, normalize_bus_id, normalize_uuid

SYSTEM_CONFIG = "/etc/podium/config.toml"
SYSTEM_CONFIG_ENV = "PODIUM_SYSTEM_CONFIG"
RESERVED_ENV = "PODIUM_RESERVED_GPUS"

_UNRESERVE_KEYS = ("unreserve", "unreserved", "allow", "allowed")
"""User-layer keys that read like an attempt to shrink the lab's list: warned about, ignored."""
_LAB_ONLY = ("admin", "final")
"""Keys only a lab layer may set: who may own the lease directory, and what users may not touch."""


class GpuConfigError(PodiumError):
    """A GPU configuration file or ``PODIUM_RESERVED_GPUS`` is invalid."""


@dataclass(frozen=True, kw_only=True)
class GpuSettings:
    """The ``[gpus]`` table without the reservations."""

    lease_dir: str = DEFAULT_LEASE_DIR
    """Directory of per-GPU lease files, shared by every user of the server (sticky, mode 1777)."""
    busy_memory_fraction: float = 0.1
    """A GPU with more than this fraction of its memory in use counts as busy for ``--gpus auto``."""
    poll_seconds: float = 1.0
    """Seconds between gauge reads (utilisation, memory, temperature, power)."""
    process_poll_seconds: float = 5.0
    """Seconds between process-table reads, which take a driver-wide lock in NVML."""
    admin: int | None = None
    """Uid (``admin = "name"`` or a number in TOML) that may own the lease directory besides root."""

    @property
    def lease_admins(self) -> tuple[int, ...]:
        """The owners a lease directory may have besides root (``leases.acquire(admins=…)``)."""
        return () if self.admin is None else (self.admin,)

    def __post_init__(self) -> None:
        if not self.lease_dir or not os.path.isabs(os.path.expanduser(self.lease_dir)):
            raise ValueError(
                f"lease_dir: must be an absolute path (got {self.lease_dir!r}); "
                f"the default is {DEFAULT_LEASE_DIR!r}"
            )
        if not 0.0 <= self.busy_memory_fraction <= 1.0:
            raise ValueError(
                f"busy_memory_fraction: must be between 0 and 1 (got {self.busy_memory_fraction})"
            )
        if not 0.1 <= self.poll_seconds <= 3600:
            raise ValueError(
                f"poll_seconds: must be between 0.1 and 3600 seconds (got {self.poll_seconds})"
            )
        if not 0.5 <= self.process_poll_seconds <= 3600:
            raise ValueError(
                "process_poll_seconds: must be between 0.5 and 3600 seconds "
                f"(got {self.process_poll_seconds})"
            )


@dataclass(frozen=True)
class Reservation:
    """One reserved GPU as configured, with where it was configured."""

    name: str
    """As written: ``"0"``, ``"GPU-5a4b…"`` or ``"3b:00.0"``."""
    kind: Literal["index", "uuid", "pci"]
    key: str
    """Normalised for matching: the index as text, the lower-case UUID, or the NVML bus id."""
    source: str
    """``/etc/podium/config.toml:3``, ``~/.config/podium/config.toml:2`` or ``env PODIUM_RESERVED_GPUS``."""
    lab_wide: bool
    """Configured by the lab (system layer) rather than by this user."""

    def matches(self, gpu: GpuInfo) -> bool:
        if self.kind == "index":
            return str(gpu.index) == self.key
        if self.kind == "uuid":
            return not is_na(gpu.uuid) and normalize_uuid(str(gpu.uuid)) == self.key
        return not is_na(gpu.pci_bus_id) and normalize_bus_id(str(gpu.pci_bus_id)) == self.key

    def describe(self) -> str:
        who = "lab-wide" if self.lab_wide else "by you"
        return f"reserved {who} as {self.name!r} ({self.source})"


@dataclass(frozen=True)
class GpuConfig:
    """The merged layers."""

    settings: GpuSettings = dataclasses.field(default_factory=GpuSettings)
    reserved: tuple[Reservation, ...] = ()
    warnings: tuple[str, ...] = ()
    """Ignored user keys and values, one line each, for the CLI to print on stderr."""
    files: tuple[str, ...] = ()
    """The configuration files that existed and were read, lab-wide first."""
    final: frozenset[str] = frozenset()
    """Settings the lab made final: user layers cannot change them."""

    def reservation_for(self, gpu: GpuInfo) -> Reservation | None:
        """The first reservation (lab-wide ones first) that names ``gpu``, or None."""
        return next((r for r in self.reserved if r.matches(gpu)), None)


def parse_gpu_name(text: str) -> tuple[Literal["index", "uuid", "pci"], str] | None:
    """(kind, normalised key) of a GPU named by index, UUID or PCI bus id; None if it is none."""
    text = text.strip()
    if re.fullmatch(r"\d{1,3}", text):
        return "index", str(int(text))
    if (uuid := normalize_uuid(text)) is not None:
        return "uuid", uuid
    if (bus := normalize_bus_id(text)) is not None:
        return "pci", bus
    return None


def system_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The lab file to read besides the fixed one: ``PODIUM_SYSTEM_CONFIG``, else the fixed one."""
    env = os.environ if environ is None else environ
    return Path(env.get(SYSTEM_CONFIG_ENV) or SYSTEM_CONFIG)


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return Path(base) / "podium" / "config.toml"


def load_gpu_config(
    environ: Mapping[str, str] | None = None, *, lab_path: str | Path | None = None
) -> GpuConfig:
    """Merge the lab-wide file(s), the user file and ``PODIUM_RESERVED_GPUS``.

    Args:
        environ: the environment (default ``os.environ``).
        lab_path: the fixed lab file (default ``/etc/podium/config.toml``); tests pass another.
            It is a parameter, not a variable, so that no user can point podium elsewhere.

    Raises:
        GpuConfigError: a file cannot be read or parsed, a key is unknown, a value is out of
            range, or a GPU name is neither an index, a UUID nor a PCI bus id.
    """
    env = os.environ if environ is None else environ
    fixed = Path(SYSTEM_CONFIG if lab_path is None else lab_path)
    override = Path(env[SYSTEM_CONFIG_ENV]) if env.get(SYSTEM_CONFIG_ENV) else None
    layers: list[tuple[Path, str]] = [(fixed, "lab")]
    if override is not None and override != fixed:
        layers.append((override, "override"))
    layers.append((user_config_path(env), "user"))

    warnings: list[str] = []
    reserved: list[Reservation] = []
    files: list[str] = []
    final: set[str] = set()
    values: dict[str, Any] = {}
    where: dict[str, str] = {}  # field -> "file:line" that set it, for range errors
    lab_read = False

    for path, role in layers:
        layer = _read_layer(path)
        if layer is None:
            continue
        files.append(str(path))
        # The override stands in for the lab file only where there is none; else it can but add.
        full = role == "lab" or (role == "override" and not lab_read)
        lab_wide = role != "user"
        lab_read = lab_read or role == "lab"
        if "final" in layer.table and lab_wide:
            final |= _final_names(layer.table["final"], f"{path}:{layer.line('final')}")
        for key, value in layer.table.items():
            source = f"{path}:{layer.line(key)}"
            if key == "reserved":
                reserved += _reservations(value, layer, full)  # an additive override: "by you"
            elif key == "final" and lab_wide:
                continue
            elif key in _UNRESERVE_KEYS and not full:
                warnings.append(
                    f"{source}: gpus.{key}: ignored; the lab-wide reserved GPUs cannot be "
                    "released from a user configuration (ask the admin)"
                )
            elif key in _LAB_ONLY and not full:
                warnings.append(f"{source}: gpus.{key}: ignored; only the lab file sets it")
            elif key in _FIELDS:
                value = _check_type(key, value, source)
                if not full:
                    value = _user_value(key, value, values, final, source, warnings)
                    if value is None:
                        continue
                values[key] = value
                where[key] = source
            else:
                known = ", ".join(("reserved", "final", *_FIELDS))
                raise GpuConfigError(f"{source}: gpus.{key}: unknown key (known: {known})")

    for name in (env.get(RESERVED_ENV) or "").split(","):
        if name.strip():
            reserved.append(_reservation(name, f"env {RESERVED_ENV}", False, RESERVED_ENV))

    try:
        settings = GpuSettings(**values)
    except ValueError as err:
        field, _, message = str(err).partition(": ")
        raise GpuConfigError(f"{where.get(field, '?')}: gpus.{field}: {message}") from None
    return GpuConfig(
        settings=settings,
        reserved=tuple(reserved),
        warnings=tuple(warnings),
        files=tuple(files),
        final=frozenset(final),
    )


_FIELDS = tuple(f.name for f in dataclasses.fields(GpuSettings))
_DEFAULTS = GpuSettings()


def _final_names(value: Any, source: str) -> set[str]:
    names = ("reserved", *(f for f in _FIELDS if f != "admin"))
    if not isinstance(value, list) or not all(isinstance(v, str) and v in names for v in value):
        raise GpuConfigError(
            f"{source}: gpus.final: must be a list of setting names from {', '.join(names)} "
            f"(got {value!r})"
        )
    return set(value)


class _Layer(NamedTuple):
    path: Path
    text: str
    table: dict[str, Any]
    """The file's ``[gpus]`` table."""
    lines: dict[str, int]
    """Line of each key of the table ("" for the table itself)."""

    def line(self, key: str) -> int:
        return self.lines.get(key, self.lines.get("", 1))


def _read_layer(path: Path) -> _Layer | None:
    """The ``[gpus]`` table of one file with its key lines; None if the file is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        # Refuse rather than run without the lab's reservations.
        reason = getattr(err, "strerror", None) or err
        raise GpuConfigError(f"{path}: cannot read the GPU configuration ({reason})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        m = re.search(r"\(at line (\d+), column \d+\)|\(at end of document\)", message)
        line = (m.group(1) or max(len(text.splitlines()), 1)) if m else 1
        reason = message[: m.start()].strip() if m else message
        raise GpuConfigError(f"{path}:{line}: TOML syntax error: {reason}") from None
    table = data.get("gpus", {})
    lines = _key_lines(text)
    if not isinstance(table, dict):
        raise GpuConfigError(f"{path}:{lines.get('', 1)}: gpus: must be a table ([gpus])")
    return _Layer(path, text, table, lines)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Line of each key of the gpus table ("" for the table itself), by scanning the text.

    tomllib keeps no positions; headers, ``key =`` lines and dotted ``gpus.key =`` are enough
    for a configuration file this small.
    """
    lines: dict[str, int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            table = tuple(p.strip().strip("\"'") for p in m.group(1).split("."))
            if table == ("gpus",):
                lines.setdefault("", number)
        elif m := _KEY.match(line):
            keys = (*table, *(p.strip().strip("\"'") for p in m.group(1).split(".")))
            if len(keys) == 2 and keys[0] == "gpus":
                lines.setdefault(keys[1], number)
                lines.setdefault("", number)
            elif keys == ("gpus",):
                lines.setdefault("", number)
    return lines


def _value_lines(text: str, start: int) -> list[tuple[str, int]]:
    """(literal, line) of each string or integer in the array that begins on line ``start``."""
    found: list[tuple[str, int]] = []
    depth = 0
    for number, line in enumerate(text.splitlines()[start - 1 :], start=start):
        body = line.split("=", 1)[1] if number == start and "=" in line else line
        for m in re.finditer(r"\"([^\"]*)\"|'([^']*)'|(#.*$)|([\[\]])|(\d+)", body):
            if m.group(3):
                break
            if m.group(4):
                depth += 1 if m.group(4) == "[" else -1
            else:
                found.append((m.group(1) or m.group(2) or m.group(5) or "", number))
        if depth <= 0:
            break
    return found


def _reservations(value: Any, layer: _Layer, lab_wide: bool) -> list[Reservation]:
    path, key_line = layer.path, layer.line("reserved")
    source = f"{path}:{key_line}"
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        raise GpuConfigError(
            f"{source}: gpus.reserved: must be a list of GPU names, e.g. "
            '["0", "GPU-5a4b…", "00000000:3B:00.0"]'
        )
    literals = _value_lines(layer.text, key_line)
    lines = [n for _, n in literals] if len(literals) == len(value) else [key_line] * len(value)
    return [
        _reservation(str(v), f"{path}:{line}", lab_wide, f"{path}:{line}: gpus.reserved")
        for v, line in zip(value, lines, strict=True)
    ]


def _reservation(name: str, source: str, lab_wide: bool, where: str) -> Reservation:
    parsed = parse_gpu_name(name)
    if parsed is None:
        raise GpuConfigError(
            f"{where}: {name.strip()!r} is not a GPU index (0), UUID (GPU-…) "
            "or PCI bus id (00000000:3B:00.0)"
        )
    kind, key = parsed
    return Reservation(name=name.strip(), kind=kind, key=key, source=source, lab_wide=lab_wide)


def _check_type(key: str, value: Any, source: str) -> Any:
    if key == "admin":
        return _admin_uid(value, source)
    if key == "lease_dir":
        if not isinstance(value, str):
            raise GpuConfigError(f"{source}: gpus.lease_dir: must be a string path")
        return os.path.expanduser(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GpuConfigError(f"{source}: gpus.{key}: must be a number (got {value!r})")
    return float(value)


def _admin_uid(value: Any, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        if value.strip().isdigit():
            return int(value)
        try:
            return pwd.getpwnam(value.strip()).pw_uid
        except KeyError:
            raise GpuConfigError(f"{source}: gpus.admin: no user {value.strip()!r} here") from None
    raise GpuConfigError(f"{source}: gpus.admin: must be a user name or uid (got {value!r})")


def _user_value(
    key: str,
    value: Any,
    values: Mapping[str, Any],
    final: set[str],
    source: str,
    warnings: list[str],
) -> Any:
    """The user's value where it is at least as careful as the lab's; else None and a warning.

    "The lab's" is the lab file's value or, where it sets none, podium's default: a server is
    shared unless its lab file says otherwise, so the defaults are the floor.
    """
    lab = values.get(key, getattr(_DEFAULTS, key))
    if value == lab:
        return value
    if key in final:
        rule = "the lab file made it final"
    elif key == "lease_dir":
        rule = f"the lease directory is lab-wide ({lab}), so that every user's leases meet"
    elif key == "busy_memory_fraction" and value > lab:
        rule = f"it may only be lowered below the lab's {lab}"
    elif key in ("poll_seconds", "process_poll_seconds") and value < lab:
        rule = f"the lab allows polling no faster than every {lab} s"
    else:
        return value
    warnings.append(f"{source}: gpus.{key}: ignored; {rule}")
    return None
