"""``podium export RUN``: a run's model for another runtime, or its history for the lab's tools.

    podium export RUN [--checkpoint latest] --onnx OUTDIR
    podium export RUN --tensorboard DIR [--csv FILE|DIR|-] [--force]

``--onnx``: the run's family's exporter writes the files (for the emotion pipeline: one ONNX file
per network) and checks each; the report is printed as a table and saved as
``export_report.json`` beside the files. A failed check exits 1 naming the file and the check.

``--tensorboard`` and ``--csv`` write every stored scalar series of the run
(``engine/history_export.py``), so past runs join the live-mirrored ones. They combine with each
other and with ``--onnx``; every target is checked before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.engine.errors import PodiumError

if TYPE_CHECKING:
    from podium.engine.config import Profile
    from podium.engine.history_export import Written
    from podium.engine.runs import RunDir

REPORT = "export_report.json"


class ExportFailed(PodiumError):
    """An exported file failed a check: not a user mistake (exit 1), the model needs work."""

    exit_code = 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a run's model (ONNX, checked with onnxruntime) or its history "
        "(TensorBoard, CSV)",
        description="Write a run's model (--onnx) or its stored history (--tensorboard, --csv); "
        "give one or more of them. Existing outputs are refused unless --force.",
    )
    p.add_argument("run", metavar="RUN", help="run id under the runs root, or a run directory")
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="NAME",
        help="which checkpoint: latest (default), best, or a name from podium checkpoints RUN",
    )
    p.add_argument(
        "--onnx", metavar="OUTDIR", help="folder for the ONNX files (families with an exporter)"
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        type=Path,
        help="write every scalar series (losses per head, validation metrics, lr, grad norm, "
        "throughput, hook values) at its step and wall time as TensorBoard event files in "
        "DIR/<run id>/, so runs exported into one DIR show side by side",
    )
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="write every scalar series as one tidy long CSV with the columns "
        "run,series,step,epoch,wall,value (one row per point; epoch, wall empty where not "
        "stored): FILE, DIR/<run id>.csv for an existing folder DIR, or - for stdout",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --csv file or DIR/<run id> folder of TensorBoard event files "
        "(never a folder holding anything else)",
    )
    p.add_argument("--runs-dir", metavar="DIR", help="runs root (default: $PODIUM_RUNS or ./runs)")
    return p


def _table(report: Any) -> list[str]:
    columns = ["network", *dict.fromkeys(k for f in report.files for k in f.facts), "checks"]
    rows = [
        [
            f.name,
            *(str(f.facts.get(c, "")) for c in columns[1:-1]),
            "ok" if not f.failed else "FAILED " + ", ".join(f.failed),
        ]
        for f in report.files
    ]
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [columns, *rows]
    ]


def run(args: argparse.Namespace) -> int:
    from podium.engine import history_export as hx
    from podium.engine.runs import resolve_run, runs_root

    if args.onnx is None and args.tensorboard is None and args.csv is None:
        raise PodiumError("export: say what to write: --onnx OUTDIR, --tensorboard DIR, --csv FILE")
    if args.csv == "-" and args.onnx is not None:
        raise PodiumError("--csv -: stdout is the CSV; export --onnx in a command of its own")
    run_dir = resolve_run(args.run, runs_root(args.runs_dir))
    # Every target, the family's exporter and the run's history are checked before anything
    # is written (--onnx's checkpoint is read when its turn comes, after the history files).
    profile = _exportable_profile(run_dir) if args.onnx is not None else None
    board = csv_path = None
    if args.tensorboard is not None:
        board = hx.tensorboard_target(run_dir, args.tensorboard, force=args.force)
    if args.csv is not None:
        csv_path = hx.csv_target(run_dir, args.csv, force=args.force)
    if board is not None or args.csv is not None:
        say = sys.stderr if args.csv == "-" else sys.stdout
        with hx.open_history(run_dir) as reader:
            if board is not None:
                done = hx.write_tensorboard(reader, board)
                print(f"podium: wrote {_counts(done)} to {done.path} (TensorBoard)", file=say)
            if args.csv is not None:
                done = hx.write_csv(reader, run_dir.id, csv_path)
                print(f"podium: wrote {_counts(done)} to {done.path or 'stdout'}", file=say)
    if profile is not None:
        _export_onnx(args, run_dir, profile)
    return 0


def _counts(done: Written) -> str:
    return f"{done.points} points of {done.series} series"


def _exportable_profile(run_dir: RunDir) -> Profile:
    from podium.engine.generate import run_profile

    profile = run_profile(run_dir.path)
    if profile.family_spec.exporter is None:
        raise PodiumError(f"family {profile.family_spec.name} has no exporter")
    return profile


def _export_onnx(args: argparse.Namespace, run_dir: RunDir, profile: Profile) -> None:
    from podium.engine.checkpoints import write_json_atomic
    from podium.engine.generate import _checkpoint_state, checkpoint_step

    family = profile.family_spec
    state = _checkpoint_state(run_dir.path, args.checkpoint)  # generate's lookup and message
    info = dict(state.get("data_info") or {})
    model = family.build_model(profile.model, info)
    model.load_state_dict(state["model"])
    outdir = Path(args.onnx)
    report = family.exporter(model.eval(), profile, info, outdir)
    for line in _table(report):
        print(line)
    path = outdir / REPORT
    write_json_atomic(
        path,
        {
            "run": run_dir.id,
            "checkpoint": args.checkpoint,
            "step": checkpoint_step(state),
            "family": family.name,
            "checks": list(report.checks),
            "ok": report.ok,
            "files": [
                {"name": f.name, "path": f.path, **f.facts, "failed": dict(f.failed)}
                for f in report.files
            ],
        },
    )
    print(f"podium: report {path}")
    failures = [f"{f.name} failed {c} ({why})" for f in report.files for c, why in f.failed.items()]
    if failures:
        raise ExportFailed("export: " + "; ".join(failures))
