"""Which GPUs a run may use, and making only those visible to CUDA.

The order that keeps reserved GPUs untouched, by construction::

    placement = claim_gpus(args.gpus, run_id=run.id, share=args.share_gpu)   # NVML only
    apply_visibility(placement.uuids)             # before anything initialises CUDA
    ... train (torch sees only the chosen GPUs, as cuda:0, cuda:1, ...) ...
    placement.release()                           # or let the process end

``classify`` gives each GPU one state, in this order of precedence:

* RESERVED: named by a reservation (lab-wide or the user's); never chosen, even on request;
* LEASED: another podium run holds its lease (``podium.engine.gpus.leases``); chosen only on request, and
  only when both runs share (``--share-gpu``);
* BLOCKED: its lease file (or the lease directory) is unusable, e.g. another user's 0600 file, a
  FIFO or a symlink: nobody holds a lease, but podium cannot take one; never chosen, and the
  detail names the file's owner and who to ask;
* BUSY: a compute process that is not this process runs there, or more than
  ``busy_memory_fraction`` of its memory is in use (containers hide foreign pids, not memory);
  never chosen by ``auto``, used with a warning when named;
* FREE.

``--gpus`` takes ``auto`` (one free GPU, the one with most free memory; the CPU on a machine
without NVIDIA GPUs), a count ``N``, indices ``2,3`` (a single index needs its comma: ``0,``,
because ``2`` alone is a count), UUIDs or PCI bus ids, and ``cpu`` or ``none``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from podium.engine.errors import PodiumError
from podium.engine.gpus.config import GpuConfig, Reservation, load_gpu_config, parse_gpu_name
from podium.engine.gpus.leases import Lease, LeaseBusy, LeaseInfo, acquire, busy_message, holders
from podium.engine.gpus.nvml import GpuInfo, GpuProvider, GpuSnapshot, is_na, read_snapshot

GpuState = Literal["RESERVED", "LEASED", "BLOCKED", "BUSY", "FREE"]


class GpuSelectionError(PodiumError):
    """``--gpus`` cannot be satisfied; the message says which GPU, why, and what to do."""


class ReservedGpuError(GpuSelectionError):
    """A reserved GPU was asked for by name."""


class LeasedGpuError(GpuSelectionError):
    """A GPU leased by another run was asked for by name."""


class CudaAlreadyInitialized(GpuSelectionError):
    """CUDA started before podium chose the GPUs, so it may see reserved ones."""


class GpuStatus(NamedTuple):
    """One GPU as the dashboard panel and ``podium gpus`` show it."""

    gpu: GpuInfo
    state: GpuState
    detail: str
    """Why: the reservation and its source, the lease holders, or the busy users and memory."""
    reservation: Reservation | None
    lease: LeaseInfo | None
    users: tuple[str, ...]
    """Owners of the compute processes that are not this process ("N/A" where hidden)."""


class Skip(NamedTuple):
    """A GPU that ``auto`` or a count passed over, and why."""

    gpu: GpuInfo
    reason: str


@dataclass(frozen=True)
class GpuSpec:
    """A parsed ``--gpus`` value."""

    text: str
    kind: Literal["auto", "count", "list", "cpu"]
    count: int = 0
    """How many GPUs, for ``auto`` (1) and counts."""
    names: tuple[str, ...] = ()
    """The GPUs named, for lists: indices, UUIDs or PCI bus ids as written."""


@dataclass(frozen=True)
class Selection:
    """The GPUs chosen for a run, and what was passed over."""

    spec: GpuSpec
    gpus: tuple[GpuInfo, ...]
    """Chosen, in the order they become cuda:0, cuda:1, ..."""
    skipped: tuple[Skip, ...] = ()
    warnings: tuple[str, ...] = ()
    note: str = ""
    """Why the run is on the CPU, when it is."""

    @property
    def uuids(self) -> tuple[str, ...]:
        return tuple(str(g.uuid) for g in self.gpus)

    @property
    def cpu(self) -> bool:
        return not self.gpus

    def describe(self) -> list[str]:
        """Lines for the terminal: what was chosen, what was skipped and why, warnings."""
        if self.cpu:
            lines = [f"devices: CPU only ({self.note or 'as asked'})"]
        else:
            chosen = ", ".join(f"GPU {g.index} ({g.uuid})" for g in self.gpus)
            lines = [f"devices: {chosen}"]
        lines += [f"  skipped GPU {s.gpu.index}: {s.reason}" for s in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines


SPEC_HELP = (
    "expected auto, cpu, a count (2), GPU indices with a comma (0, or 2,3), UUIDs (GPU-…) "
    "or PCI bus ids"
)


def parse_spec(text: str) -> GpuSpec:
    """Parse ``--gpus``.

    Raises:
        GpuSelectionError: the value is none of the accepted forms.
    """
    value = text.strip()
    low = value.lower()
    if low in ("", "auto"):
        return GpuSpec(text=value or "auto", kind="auto", count=1)
    if low in ("cpu", "none"):
        return GpuSpec(text=value, kind="cpu")
    if value.isdigit():
        if int(value) == 0:
            raise GpuSelectionError(
                f"--gpus {value}: a count must be at least 1; write --gpus 0, for GPU 0 "
                "(a trailing comma makes a list of indices) or --gpus cpu for no GPU"
            )
        return GpuSpec(text=value, kind="count", count=int(value))
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    bad = [n for n in names if parse_gpu_name(n) is None]
    if not names or bad:
        raise GpuSelectionError(
            f"--gpus {value}: {bad[0]!r} is not a GPU; {SPEC_HELP}"
            if bad
            else f"--gpus {value}: {SPEC_HELP}"
        )
    return GpuSpec(text=value, kind="list", count=len(names), names=names)


def _label(gpu: GpuInfo) -> str:
    return f"GPU {gpu.index}" if is_na(gpu.uuid) else f"GPU {gpu.index} ({gpu.uuid})"


def classify(
    snapshot: GpuSnapshot,
    *,
    reserved: Sequence[Reservation],
    leases: Mapping[str, LeaseInfo | None],
    busy_memory_fraction: float,
    own_pid: int | None = None,
) -> tuple[GpuStatus, ...]:
    """The state of every GPU in ``snapshot``.

    Args:
        reserved: the configured reservations (``GpuConfig.reserved``).
        leases: each GPU's probed lease by UUID (``probe_leases``); a missing UUID counts as free.
        busy_memory_fraction: memory use above this fraction makes a GPU busy.
        own_pid: processes with this pid are not foreign (default: this process).
    """
    own = os.getpid() if own_pid is None else own_pid
    out = []
    for gpu in snapshot.gpus:
        reservation = next((r for r in reserved if r.matches(gpu)), None)
        lease = None if is_na(gpu.uuid) else leases.get(str(gpu.uuid))
        procs = () if is_na(gpu.processes) else gpu.processes
        foreign = [p for p in procs if p.is_compute and p.pid != own]
        users = tuple(dict.fromkeys(str(p.user) for p in foreign))
        if reservation is not None:
            state: GpuState = "RESERVED"
            detail = reservation.describe()
        elif lease is not None and lease.problem is not None:
            state, detail = "BLOCKED", lease.problem  # no lease, but none can be taken either
        elif lease is not None:
            state, detail = "LEASED", lease.describe()
        else:
            reasons = []
            if foreign:
                n, who = len(foreign), ", ".join(users)
                plural = "es" if n != 1 else ""
                reasons.append(
                    f"{n} compute process{plural} (user{'s' if len(users) != 1 else ''} {who})"
                )
            fraction = gpu.memory_fraction
            if not is_na(fraction) and fraction > busy_memory_fraction:
                reasons.append(f"{fraction:.0%} of memory in use (over {busy_memory_fraction:.0%})")
            state = "BUSY" if reasons else "FREE"
            detail = "; ".join(reasons)
        out.append(GpuStatus(gpu, state, detail, reservation, lease, users))
    return tuple(out)


def _reason(status: GpuStatus) -> str:
    if status.state == "RESERVED":
        return status.detail
    if status.state == "LEASED":
        return f"leased by {status.detail}"
    if status.state == "BLOCKED":
        return f"cannot be leased: {status.detail}"
    return f"busy, {status.detail}"


def _find(snapshot: GpuSnapshot, name: str) -> GpuInfo | None:
    parsed = parse_gpu_name(name)
    if parsed is None:
        return None
    probe = Reservation(name=name, kind=parsed[0], key=parsed[1], source="", lab_wide=False)
    return next((g for g in snapshot.gpus if probe.matches(g)), None)


def select_gpus(
    spec: str | GpuSpec,
    *,
    snapshot: GpuSnapshot,
    reserved: Sequence[Reservation],
    leases: Mapping[str, LeaseInfo | None],
    busy_memory_fraction: float,
    share: bool = False,
    own_pid: int | None = None,
) -> Selection:
    """Choose GPUs for ``spec``. Pure: reads nothing, locks nothing (``claim_gpus`` does).

    Raises:
        ReservedGpuError: a named GPU is reserved (the message names the reservation's source).
        LeasedGpuError: a named GPU is leased by another run in a conflicting mode.
        GpuSelectionError: bad spec, unknown GPU, no NVML for named GPUs, or too few free GPUs
            (the message says why each one was passed over).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "cpu":
        return Selection(spec=spec, gpus=(), note=f"--gpus {spec.text}")
    if not snapshot.available:
        if spec.kind == "auto":
            return Selection(spec=spec, gpus=(), note=snapshot.state)
        raise GpuSelectionError(f"--gpus {spec.text}: {snapshot.state}; use --gpus cpu")
    statuses = classify(
        snapshot,
        reserved=reserved,
        leases=leases,
        busy_memory_fraction=busy_memory_fraction,
        own_pid=own_pid,
    )
    by_index = {s.gpu.index: s for s in statuses}

    if spec.kind == "list":
        chosen: list[GpuInfo] = []
        warnings = []
        for name in spec.names:
            gpu = _find(snapshot, name)
            if gpu is None:
                have = ", ".join(str(g.index) for g in snapshot.gpus)
                raise GpuSelectionError(
                    f"--gpus {spec.text}: no GPU {name} on this machine (GPUs {have})"
                )
            status = by_index[gpu.index]
            if status.state == "RESERVED":
                raise ReservedGpuError(
                    f"--gpus {spec.text}: {_label(gpu)} is {status.detail}; podium never "
                    "uses a reserved GPU"
                )
            if status.lease is not None and status.lease.problem is not None:
                raise GpuSelectionError(
                    f"--gpus {spec.text}: {busy_message(status.lease, shared_request=share)}"
                )
            if status.lease is not None and not (share and status.lease.shared):
                raise LeasedGpuError(
                    f"--gpus {spec.text}: {busy_message(status.lease, shared_request=share)}"
                )
            if is_na(gpu.uuid):
                raise GpuSelectionError(
                    f"--gpus {spec.text}: GPU {gpu.index} reports no UUID, so podium can "
                    "neither lease it nor pin CUDA to it"
                )
            if status.state == "BUSY":
                warnings.append(f"{_label(gpu)} is busy ({status.detail}); using it as asked")
            if gpu not in chosen:
                chosen.append(gpu)
        return Selection(spec=spec, gpus=tuple(chosen), warnings=tuple(warnings))

    skipped = [Skip(s.gpu, _reason(s)) for s in statuses if s.state != "FREE"]
    skipped += [
        Skip(s.gpu, "reports no UUID") for s in statuses if s.state == "FREE" and is_na(s.gpu.uuid)
    ]
    free = [s.gpu for s in statuses if s.state == "FREE" and not is_na(s.gpu.uuid)]
    # Most free memory first; an unreadable amount sorts last; ties go to the lower index.
    free.sort(key=lambda g: (-(g.memory_free if not is_na(g.memory_free) else -1), g.index))
    if len(free) < spec.count:
        why = "; ".join(f"GPU {s.gpu.index} {s.reason}" for s in skipped) or "none is free"
        fix = "wait, or use --gpus cpu" if spec.kind == "auto" else "wait, or ask for fewer"
        raise GpuSelectionError(
            f"--gpus {spec.text}: {len(free)} of {len(snapshot.gpus)} GPUs free, "
            f"{spec.count} wanted: {why}; {fix}"
        )
    return Selection(spec=spec, gpus=tuple(free[: spec.count]), skipped=tuple(skipped))


def probe_leases(
    snapshot: GpuSnapshot, lease_dir: str | Path, admins: Collection[int] = ()
) -> dict[str, LeaseInfo | None]:
    """Each GPU's lease by UUID, probed without taking any (``admins``: ``gpus.admin``)."""
    return {
        str(g.uuid): holders(str(g.uuid), lease_dir=lease_dir, admins=admins)
        for g in snapshot.gpus
        if not is_na(g.uuid)
    }


def overview(snapshot: GpuSnapshot, config: GpuConfig) -> tuple[GpuStatus, ...]:
    """``classify`` with the config's reservations and freshly probed leases (for the panel)."""
    return classify(
        snapshot,
        reserved=config.reserved,
        leases=probe_leases(snapshot, config.settings.lease_dir, config.settings.lease_admins),
        busy_memory_fraction=config.settings.busy_memory_fraction,
    )


@dataclass
class Placement:
    """A selection whose GPUs this process now leases. Keep it for the life of the run."""

    selection: Selection
    leases: tuple[Lease, ...]

    @property
    def uuids(self) -> tuple[str, ...]:
        return self.selection.uuids

    def release(self) -> None:
        for lease in self.leases:
            lease.release()


def plan_gpus(
    spec: str,
    *,
    share: bool = False,
    config: GpuConfig | None = None,
    source: GpuProvider | None = None,
) -> Selection:
    """What ``claim_gpus`` would choose now, taking no lease: a dry run, so that a reserved or
    leased GPU is refused before a dashboard opens (the claim itself checks again)."""
    parsed = parse_spec(spec)
    if parsed.kind == "cpu":
        return Selection(spec=parsed, gpus=(), note=f"--gpus {parsed.text}")
    config = config or load_gpu_config()
    snapshot = read_snapshot(source, processes=True)
    leases = (
        probe_leases(snapshot, config.settings.lease_dir, config.settings.lease_admins)
        if snapshot.available
        else {}
    )
    return _select_with(config, parsed, snapshot, leases, share)


def _select_with(
    config: GpuConfig,
    parsed: GpuSpec,
    snapshot: GpuSnapshot,
    leases: Mapping[str, LeaseInfo | None],
    share: bool,
) -> Selection:
    """``select_gpus`` under ``config``'s reservations and busy threshold (the plan and the claim
    choose by the same rule)."""
    return select_gpus(
        parsed,
        snapshot=snapshot,
        reserved=config.reserved,
        leases=leases,
        busy_memory_fraction=config.settings.busy_memory_fraction,
        share=share,
    )


def claim_gpus(
    spec: str,
    *,
    run_id: str,
    share: bool = False,
    config: GpuConfig | None = None,
    source: GpuProvider | None = None,
    environ: Mapping[str, str] | None = None,
) -> Placement:
    """Select GPUs for ``spec`` and lease them for ``run_id``.

    Another run may lease a GPU between the probe and the lease; ``auto`` and counts then choose
    again without it (three times at most), a named GPU fails with the holder's name.

    Raises:
        GpuSelectionError (and subclasses), LeaseError: as ``select_gpus`` and ``acquire``.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "cpu":  # no NVML, no config, no lease: nothing can go wrong on the CPU
        return Placement(Selection(spec=parsed, gpus=(), note=f"--gpus {parsed.text}"), ())
    config = config or load_gpu_config(environ)
    snapshot = read_snapshot(source, processes=True)
    env = os.environ if environ is None else environ
    warnings = []
    if env.get("CUDA_VISIBLE_DEVICES"):
        warnings.append(
            f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} is replaced by podium's "
            "choice; use --gpus to pick GPUs"
        )
    lost: dict[str, LeaseInfo] = {}
    for _ in range(3):
        leases: dict[str, LeaseInfo | None] = {
            **probe_leases(snapshot, config.settings.lease_dir, config.settings.lease_admins),
            **lost,
        }
        selection = _select_with(config, parsed, snapshot, leases, share)
        held: list[Lease] = []
        try:
            for uuid in selection.uuids:
                held.append(
                    acquire(
                        uuid,
                        run_id,
                        share,
                        lease_dir=config.settings.lease_dir,
                        admins=config.settings.lease_admins,
                    )
                )
        except LeaseBusy as err:
            for lease in held:
                lease.release()
            if parsed.kind == "list":
                raise LeasedGpuError(f"--gpus {spec}: {err}") from None
            info = err.info or LeaseInfo(uuid=uuid, shared=False, holders=())
            lost[info.uuid] = info
            continue
        selection = Selection(
            spec=selection.spec,
            gpus=selection.gpus,
            skipped=selection.skipped,
            warnings=(*config.warnings, *warnings, *selection.warnings),
            note=selection.note,
        )
        return Placement(selection=selection, leases=tuple(held))
    raise GpuSelectionError(
        f"--gpus {spec}: other runs kept leasing the chosen GPUs while podium was choosing; "
        "try again"
    )


# ----------------------------------------------------------------------------------------------
# CUDA visibility


def cuda_initialized() -> bool:
    """Whether torch has initialised CUDA in this process. Never initialises it itself.

    Only torch is checked: without torch imported, torch cannot have initialised CUDA, and
    ``torch.cuda.is_initialized`` only reads a flag.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None) if torch is not None else None
    return bool(cuda is not None and cuda.is_initialized())


def apply_visibility(
    uuids: Sequence[str], *, environ: MutableMapping[str, str] | None = None
) -> None:
    """Make only ``uuids`` visible to CUDA (none at all for an empty sequence).

    Sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so any index CUDA prints matches nvidia-smi's) and
    ``CUDA_VISIBLE_DEVICES`` to the UUIDs, which CUDA reads once, when it initialises: reserved
    GPUs then get no context and no allocation, ever. Call it before anything may initialise
    CUDA; it touches no CUDA API itself.

    Raises:
        CudaAlreadyInitialized: GPUs were asked for but CUDA already runs in this process, so the
            variables would be ignored and reserved GPUs could be visible.
    """
    env = os.environ if environ is None else environ
    if uuids and cuda_initialized():
        raise CudaAlreadyInitialized(
            "CUDA was initialised in this process before podium chose its GPUs (a library "
            "imported earlier did it), so CUDA_VISIBLE_DEVICES can no longer hide reserved "
            "GPUs; podium will not train on a GPU here: start podium in a fresh process "
            "or use --gpus cpu"
        )
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)


def check_visible_devices(uuids: Sequence[str]) -> None:
    """After CUDA has started: check that it sees exactly the chosen GPUs, by UUID.

    The safety net behind ``apply_visibility``: CUDA can be initialised behind torch's back
    (``torch.cuda.is_available()`` or another library calling the CUDA runtime), after which the
    variables are silently ignored. This call may initialise CUDA, so the trainer makes it when
    it first moves the model to the GPU.

    Raises:
        CudaAlreadyInitialized: CUDA sees other or more GPUs than podium chose.
    """
    import torch  # the trainer has it loaded already; importing here keeps this module light

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = {u.lower().removeprefix("gpu-") for u in uuids}
    seen = set()
    for i in range(count):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        seen.add(str(uuid).lower().removeprefix("gpu-") if uuid is not None else f"#{i}")
    if seen != wanted:
        raise CudaAlreadyInitialized(
            f"CUDA sees {count} GPU(s) but podium chose {len(uuids)}: CUDA was initialised "
            "before podium set CUDA_VISIBLE_DEVICES, so reserved GPUs may be visible; podium "
            "will not train on a GPU here: start podium in a fresh process or use --gpus cpu"
        )
