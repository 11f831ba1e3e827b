"""``podium export RUN --onnx OUTDIR``: a run's model for another runtime, written and checked.

    podium export RUN [--checkpoint latest] --onnx OUTDIR

The run's family's exporter writes the files (for the emotion pipeline: one ONNX file per
network) and checks each; the report is printed as a table and saved as ``export_report.json``
beside the files. A failed check exits 1 naming the file and the check.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from podium.engine.errors import PodiumError

REPORT = "export_report.json"


class ExportFailed(PodiumError):
    """An exported file failed a check: not a user mistake (exit 1), the model needs work."""

    exit_code = 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a run's model (ONNX) and check the files with onnxruntime"
    )
    p.add_argument("run", metavar="RUN", help="run id under the runs root, or a run directory")
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="NAME",
        help="which checkpoint: latest (default), best, or a name from podium checkpoints RUN",
    )
    p.add_argument("--onnx", required=True, metavar="OUTDIR", help="folder for the ONNX files")
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
    from podium.engine.checkpoints import write_json_atomic
    from podium.engine.generate import _checkpoint_state, checkpoint_step, run_profile
    from podium.engine.runs import resolve_run, runs_root

    run_dir = resolve_run(args.run, runs_root(args.runs_dir))
    profile = run_profile(run_dir.path)
    family = profile.family_spec
    if family.exporter is None:
        raise PodiumError(f"family {family.name} has no exporter")
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
    return 0
