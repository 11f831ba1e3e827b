"""``podium predict RUN INPUT``: what a run's model recognises in a file, window by window.

    podium predict RUN AUDIO.wav [--checkpoint best] [--json]

``podium generate``'s counterpart for a recogniser (a family with a ``predictor``: the chords
family prints the chord of every window with its top 3). Reads a checkpoint file, so it works
on a live run too. ``podium.engine.cli.main`` wires it: ``add_parser(sub)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from podium.engine.errors import PodiumError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` command to ``podium``'s sub-parsers."""
    p = subparsers.add_parser(
        "predict",
        help="recognise what is in a file with a run's model (chords of a WAV, per window)",
        description="Print what a run's model recognises in INPUT, window by window, with the "
        "best few answers and their probabilities.",
    )
    p.add_argument("run", metavar="RUN", help="a run's id (or a unique prefix) or directory")
    p.add_argument("input", metavar="INPUT", type=Path, help="the file to recognise (a WAV)")
    p.add_argument(
        "--checkpoint",
        metavar="NAME",
        default="",
        help="which checkpoint (best, latest, step-N...; default: best, else latest)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--runs-dir", metavar="DIR", help="runs root (default: $PODIUM_RUNS or ./runs)")
    return p


def _checkpoint(run_path: Path, wanted: str) -> tuple[str, dict[str, Any]]:
    from podium.engine.checkpoints import load_state

    folder = run_path / "checkpoints"
    have = sorted(p.stem for p in folder.glob("*.json"))
    for name in [wanted] if wanted else ["best", "latest"]:
        if name in have and (folder / f"{name}.pt").exists():
            return name, load_state(folder / f"{name}.pt")
    raise PodiumError(
        f"run {run_path.name} has no checkpoint {wanted or 'best or latest'!r}"
        + (f" (have: {', '.join(have)})" if have else " (none saved yet)")
    )


def run(args: argparse.Namespace) -> int:
    """Print the predictions; PodiumError (exit 2) for a bad run, checkpoint or input."""
    from podium.engine.config import load_profile
    from podium.engine.runs import resolve_run, runs_root

    run_ = resolve_run(args.run, runs_root(args.runs_dir))
    profile = load_profile(run_.path / "profile.toml")
    family = profile.family_spec
    if family.predictor is None:
        raise PodiumError(f"family {family.name} has no predictor (try podium generate)")
    if not args.input.is_file():
        raise PodiumError(f"{args.input}: no such file")
    name, state = _checkpoint(run_.path, args.checkpoint)
    info = dict(state.get("data_info") or {})
    model = family.build_model(profile.model, info)
    model.load_state_dict(state["model"])
    model.eval()
    predictions = family.predictor(model, profile, info, args.input)
    step = (state.get("saved") or {}).get("step")
    if args.json:
        out = {"run": run_.id, "checkpoint": name, "step": step}
        print(json.dumps(out | {"windows": [asdict(p) for p in predictions]}))
        return 0
    print(f"run {run_.id} · checkpoint {name} (step {step}) · {len(predictions)} windows")
    width = max(len(p.label) for p in predictions)
    for p in predictions:
        top = " · ".join(f"{label} {prob:.2f}" for label, prob in p.top)
        print(f"{p.start:7.2f}-{p.end:<7.2f} {p.label.ljust(width)}   {top}")
    return 0
