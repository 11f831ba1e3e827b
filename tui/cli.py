"""The ``podium`` console script.

``podium`` with no arguments opens the dashboard's home screen; ``podium train PROFILE`` and
``podium resume RUN`` without ``--headless`` open it on that run (through the ``dashboard`` hook
of ``engine.cli.main``). Everything else, and every ``--headless`` path, is ``engine.cli``'s.

The dashboard needs a terminal: with stdout not a tty it refuses in one line (exit 2) and
suggests ``--headless``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import cli as engine_cli
from engine.errors import PodiumError


def _has_terminal() -> bool:
    return sys.stdout.isatty() and sys.stdin.isatty()


def _refuse(command: str) -> int:
    hint = {
        "home": "use `podium runs` to list runs",
        "train": "add --headless to train without it",
        "resume": "add --headless to resume without it",
    }[command]
    sys.stderr.write(
        f"podium: error: the dashboard needs a terminal (stdout is not a tty); {hint}\n"
    )
    return 2


def run_dashboard(root: Path, request=None) -> int:
    """Run the app until it exits; runs still training are stopped (with a checkpoint) first."""
    from tui.app import PodiumApp
    from tui.live import stop_all

    app = PodiumApp(root=root, request=request)
    try:
        code = app.run()
    finally:
        # Normally the quit dialog has stopped them; this covers the app dying some other way.
        stop_all(app.training, "the dashboard closed")
    if app.return_code not in (None, 0):
        return app.return_code
    return code if isinstance(code, int) else app.exit_code()


def dashboard(args: argparse.Namespace) -> int:
    """``engine.cli``'s hook: open the dashboard on a new or resumed run."""
    from engine.runs import check_run_id, resolve_run, runs_root
    from engine.session import check_resumable, parse_overrides
    from tui.live import BranchRequest, ResumeRequest, StartRequest

    if not _has_terminal():
        return _refuse(args.command)
    root = runs_root(args.runs_dir)
    common = {
        "max_steps": args.max_steps,
        "max_epochs": args.max_epochs,
        "gpus": getattr(args, "gpus", None),
        "share_gpu": bool(getattr(args, "share_gpu", False)),
    }
    name = getattr(args, "name", None)
    if name is not None:
        check_run_id(name)
        if (root / name).exists():
            raise PodiumError(f"--name {name!r}: a run with that id already exists in {root}")
    if args.command == "train":
        request = StartRequest(
            profile_path=Path(args.profile),
            overrides=tuple(parse_overrides(args.seed, args.overrides)),
            root=root,
            name=name,
            **common,
        )
    elif getattr(args, "checkpoint", None) is not None:
        parent = resolve_run(args.run, root)
        request = BranchRequest(
            parent_path=parent.path, checkpoint=args.checkpoint, root=root, name=name, **common
        )
    else:
        run = resolve_run(args.run, root)
        check_resumable(run)
        request = ResumeRequest(run_path=run.path, **common)
    return run_dashboard(root, request)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        if not _has_terminal():
            return _refuse("home")
        from engine.runs import runs_root

        return run_dashboard(runs_root(os.environ.get("PODIUM_RUNS")))
    return engine_cli.main(args, dashboard=dashboard)


if __name__ == "__main__":
    sys.exit(main())
