"""``podium gpus [--json] [--gpus SPEC [--share-gpu]]``: every GPU, and who may use it.

One row per GPU with its state (RESERVED / LEASED / BLOCKED / BUSY / FREE, see ``podium.engine.gpus.select``),
why, and its gauges, followed by its compute processes. ``--gpus SPEC`` also shows what
``podium train --gpus SPEC`` would choose, as a dry run that takes no lease, and exits 2 where
training would be refused (a reserved GPU, a leased one, too few free). Without an NVIDIA driver
it prints the one-line state and exits 0: a CPU machine is not an error.

``podium.engine.cli.main`` wires it: ``add_parser(sub)`` in ``build_parser`` and ``run(args)`` as the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from podium.engine.errors import PodiumError
from podium.engine.gpus.config import load_gpu_config
from podium.engine.gpus.nvml import GpuSnapshot, NaType, is_na, plain, read_snapshot
from podium.engine.gpus.select import GpuStatus, Selection, classify, probe_leases, select_gpus

GIB = 1 << 30


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``gpus`` command to ``podium``'s sub-parsers."""
    p = subparsers.add_parser(
        "gpus",
        help="show every GPU: reserved, leased, busy or free, and who is on it",
        description="Show every NVIDIA GPU of this machine: state, gauges and processes.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument(
        "--gpus",
        metavar="SPEC",
        help="also show what `podium train --gpus SPEC` would use (a dry run; takes no lease)",
    )
    p.add_argument("--share-gpu", action="store_true", help="with --gpus: as a sharing run would")
    return p


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); 0, or 2 when ``--gpus`` would be refused or config is bad."""
    try:
        return _run(args)
    except PodiumError as exc:
        sys.stderr.write(f"podium: error: {exc}\n")
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    config = load_gpu_config()
    for warning in config.warnings:
        sys.stderr.write(f"podium: warning: {warning}\n")
    snapshot = read_snapshot(processes=True)
    statuses = ()
    if snapshot.available:
        statuses = classify(
            snapshot,
            reserved=config.reserved,
            leases=probe_leases(snapshot, config.settings.lease_dir, config.settings.lease_admins),
            busy_memory_fraction=config.settings.busy_memory_fraction,
        )
    selection: Selection | None = None
    error: PodiumError | None = None
    if getattr(args, "gpus", None):
        try:
            selection = select_gpus(
                args.gpus,
                snapshot=snapshot,
                reserved=config.reserved,
                leases={s.gpu.uuid: s.lease for s in statuses if not is_na(s.gpu.uuid)},
                busy_memory_fraction=config.settings.busy_memory_fraction,
                share=bool(getattr(args, "share_gpu", False)),
            )
        except PodiumError as exc:
            error = exc
    if getattr(args, "json", False):
        print(json.dumps(_json(snapshot, statuses, selection), indent=2))
    else:
        _print(snapshot, statuses, selection)
    if error is not None:
        raise error
    return 0


def _json(
    snapshot: GpuSnapshot, statuses: tuple[GpuStatus, ...], selection: Selection | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": snapshot.state,
        "available": snapshot.available,
        "source": snapshot.source,
        "taken_at": snapshot.taken_at,
        "gpus": [
            {
                **plain(s.gpu),
                "status": s.state,
                "detail": s.detail,
                "reservation": None
                if s.reservation is None
                else {
                    "name": s.reservation.name,
                    "source": s.reservation.source,
                    "lab_wide": s.reservation.lab_wide,
                },
                "lease": None
                if s.lease is None
                else {
                    "shared": s.lease.shared,
                    "holders": [vars(h) for h in s.lease.holders],
                    "problem": s.lease.problem,
                },
                "users": list(s.users),
            }
            for s in statuses
        ],
    }
    if selection is not None:
        out["selection"] = {
            "gpus": list(selection.uuids),
            "indices": [g.index for g in selection.gpus],
            "skipped": [
                {"index": k.gpu.index, "uuid": plain(k.gpu.uuid), "reason": k.reason}
                for k in selection.skipped
            ],
            "warnings": list(selection.warnings),
            "note": selection.note,
        }
    return out


def _pct(value: int | NaType) -> str:
    return "N/A" if is_na(value) else f"{value}%"


def _memory(used: int | NaType, total: int | NaType) -> str:  # bytes in, GiB out
    if is_na(used) or is_na(total):
        return "N/A"
    return f"{used / GIB:.1f}/{total / GIB:.1f} GiB"


def _power(draw: int | NaType, limit: int | NaType) -> str:  # milliwatts in, watts out
    if is_na(draw):
        return "N/A"
    return f"{draw / 1000:.0f} W" if is_na(limit) else f"{draw / 1000:.0f}/{limit / 1000:.0f} W"


def _temp(value: int | NaType) -> str:  # degrees Celsius
    return "N/A" if is_na(value) else f"{value}C"


def _print(
    snapshot: GpuSnapshot, statuses: tuple[GpuStatus, ...], selection: Selection | None
) -> None:
    print(snapshot.state)
    if statuses:
        header = ("GPU", "STATE", "UTIL", "MEMORY", "TEMP", "POWER", "NAME", "WHY")
        rows = [
            (
                str(s.gpu.index),
                s.state,
                _pct(s.gpu.utilization),
                _memory(s.gpu.memory_used, s.gpu.memory_total),
                _temp(s.gpu.temperature),
                _power(s.gpu.power_draw, s.gpu.power_limit),
                str(s.gpu.name),
                s.detail,
            )
            for s in statuses
        ]
        # Every column but the last (WHY, free text) is padded to its widest cell.
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]

        def line(cells: tuple[str, ...]) -> str:
            padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True)]
            return "  ".join([*padded, cells[-1]]).rstrip()

        print(line(header))
        for status, row in zip(statuses, rows, strict=True):
            print(line(row))
            procs = status.gpu.processes
            if is_na(procs):
                print("     processes: N/A")
                continue
            for p in procs:
                mem = "N/A" if is_na(p.gpu_memory) else f"{p.gpu_memory / GIB:.1f} GiB"
                print(f"     pid {p.pid:<8} {p.user!s:<12} {mem:>9}  {p.kind:<3} {p.command}")
    if selection is not None:
        for line in selection.describe():
            print(line)
