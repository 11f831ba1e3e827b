"""``podium`` command line: headless commands over runs.

The console script lives in ``podium.tui.cli`` (so it can open the dashboard) and hands everything that
needs no terminal UI to ``main`` here. Every user mistake exits with code 2 and one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from podium.engine.cli.args import add_run_options, positive_int, run_options_argv
from podium.engine.errors import PodiumError

DashboardHook = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2), like every other podium error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _placement_flags(p: argparse.ArgumentParser) -> None:
    """Where a run trains: not profile keys, so a run can be resumed elsewhere."""
    p.add_argument(
        "--gpus",
        metavar="SPEC",
        help="auto (default), cpu, a count (2), indices with a comma (0, or 2,3), UUIDs or PCI bus ids",
    )
    p.add_argument(
        "--share-gpu",
        action="store_true",
        help="share the chosen GPUs with other podium runs that also share",
    )
    p.add_argument(
        "--cpu-ranks",
        type=positive_int,
        metavar="N",
        help="on the CPU: N data-parallel processes (gloo); default $PODIUM_CPU_RANKS or 1",
    )


RUN_HELP = "run id under the runs root, or a run directory"
CONTROL_ACTIONS = ("status", "pause", "resume", "stop", "save", "set-lr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="podium", description="Train symbolic-music models from the terminal.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def runs_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--runs-dir", metavar="DIR", help="runs root (default: $PODIUM_RUNS or ./runs)"
        )

    p = sub.add_parser("train", help="start a run of a profile")
    p.add_argument("profile", metavar="PROFILE", help="a profile .toml file")
    p.add_argument("--headless", action="store_true", help="no dashboard: print progress lines")
    p.add_argument(
        "--detach",
        action="store_true",
        help="train in the background with no terminal; prints the run id",
    )
    p.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)
    _placement_flags(p)
    add_run_options(p)
    runs_dir(p)

    p = sub.add_parser(
        "resume", help="continue a stopped or interrupted run from its newest checkpoint"
    )
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--headless", action="store_true", help="no dashboard: print progress lines")
    p.add_argument(
        "--detach",
        action="store_true",
        help="continue in the background with no terminal; prints how to attach",
    )
    p.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--max-steps",
        type=positive_int,
        metavar="N",
        help="end at optimizer step N (counted from the run's start; the schedule is unchanged)",
    )
    p.add_argument(
        "--max-epochs",
        type=positive_int,
        metavar="N",
        help="end at epoch N (counted from the run's start; the schedule is unchanged)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="NAME",
        help="branch a NEW run from this checkpoint of RUN (RUN itself is left as it is)",
    )
    p.add_argument("--name", metavar="NAME", help="run id of the new run, with --checkpoint")
    p.add_argument(
        "--allow-new-history",
        action="store_true",
        help="continue even though the metrics store is missing, empty or damaged "
        "(a damaged one is kept aside); the curves then start at the checkpoint",
    )
    _placement_flags(p)
    runs_dir(p)

    p = sub.add_parser("doctor", help="check a run's files: run.json, metrics store, checkpoints")
    p.add_argument("run", metavar="RUN", help="run id or directory")
    p.add_argument("--json", action="store_true", help="one JSON object of every check's result")
    runs_dir(p)

    p = sub.add_parser("attach", help="open the dashboard on a run training in another process")
    p.add_argument(
        "run", nargs="?", metavar="RUN", help="a live run's id or directory (default: your newest)"
    )
    runs_dir(p)

    p = sub.add_parser("runs", help="list runs and their state")
    p.add_argument("--json", action="store_true", help="a JSON list of runs instead of the table")
    runs_dir(p)

    p = sub.add_parser("checkpoints", help="list a run's checkpoints")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--json", action="store_true", help="a JSON list (with each file's path) instead"
    )
    runs_dir(p)

    p = sub.add_parser("metrics", help="print a run's metric series and matrices")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument(
        "--json",
        action="store_true",
        help='one JSON object on one line: {"series": {name: [[step, value], ...]}, "matrices": '
        '{name: {"step", "rows", "cols", "values"}}} (the latest of each matrix); '
        "--indent N spreads it over lines, --series and --max-points make it smaller",
    )
    fmt.add_argument("--csv", action="store_true", help="long-form CSV: series,step,value")
    fmt.add_argument(
        "--history",
        metavar="FILE",
        type=Path,
        help="write a JSON history, one entry per validation (per epoch by default): epoch, "
        "step, train_loss (mean since the last), val_loss, <head>_accuracy..., learning_rate",
    )
    p.add_argument(
        "--series",
        action="append",
        metavar="NAME",
        help="only these series (repeatable; matrices are not filtered)",
    )
    p.add_argument(
        "--max-points",
        type=positive_int,
        metavar="N",
        help="downsample each series (keeps minima and maxima)",
    )
    p.add_argument(
        "--indent",
        type=positive_int,
        metavar="N",
        help="with --json: indent nested values by N spaces, one value a line",
    )
    runs_dir(p)

    p = sub.add_parser("control", help="send a command to a live run over its control socket")
    p.add_argument("run", metavar="RUN", help="a live run's id or directory")
    p.add_argument(
        "action",
        choices=CONTROL_ACTIONS,
        metavar="ACTION",
        help="status (JSON), pause, resume, stop (saves), save (a checkpoint now) or set-lr LR",
    )
    p.add_argument("value", nargs="?", metavar="LR", help="the new learning rate, for set-lr")
    runs_dir(p)
    from podium.engine.cli import bench as bench_cli
    from podium.engine.cli import export as export_cli
    from podium.engine.cli import generate as generate_cli
    from podium.engine.cli import gpus as gpus_cli
    from podium.engine.cli import importer, prepare
    from podium.engine.cli import predict as predict_cli
    from podium.engine.cli import queue as queue_cli

    gpus_cli.add_parser(sub)
    generate_cli.add_parser(sub)
    export_cli.add_parser(sub)
    prepare.add_parser(sub)
    importer.add_parser(sub)
    predict_cli.add_parser(sub)
    bench_cli.add_parser(sub)
    queue_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, dashboard: DashboardHook | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    conditioning: dict[str, str] = {}
    if argv[:1] == ["bench"]:  # the suite (bench/run.py of the checkout) parses its own flags
        from podium.engine.cli import bench as bench_cli

        try:
            return bench_cli.run(argv[1:])
        except PodiumError as exc:
            sys.stderr.write(f"podium: error: {exc}\n")
            return exc.exit_code
    if argv[:1] == ["generate"]:  # its conditioning flags are the run's family's
        from podium.engine.cli import generate as generate_cli

        try:
            argv, conditioning = generate_cli.conditioning_flags(argv)
        except PodiumError as exc:
            sys.stderr.write(f"podium: error: {exc}\n")
            return exc.exit_code
    args = parser.parse_args(argv)
    args.conditioning = conditioning
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command in ("train", "resume"):
            return _under_launcher(args, dashboard)
        handler = _HANDLERS[args.command]
        return handler(args, dashboard)
    except PodiumError as exc:
        sys.stderr.write(f"podium: error: {exc}\n")
        return exc.exit_code
    except BrokenPipeError:
        raise  # the reader left: the entry point ends quietly (exit 141), not an error
    except OSError as exc:  # the file system said no (a read-only -o, someone else's run dir)
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"podium: error: {where}{exc.strerror or exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("podium: interrupted\n")
        return 130


# ----------------------------------------------------------------------------------------------
# Commands


def _under_launcher(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    """``train``/``resume``, also as one rank of a world torchrun or srun started.

    Every rank runs the same command line; rank 0 runs it as podium always does (headless) and
    the others follow rank 0's job (``podium.engine.launcher``). Without a launcher's
    environment this is just the command."""
    from podium.engine.launcher import detect_world

    handler = _HANDLERS[args.command]
    args.launched = None
    world = detect_world()
    if world is None:
        return handler(args, dashboard)
    if args.detach:
        raise PodiumError(
            f"--detach: {world.label} started this process and owns it; run the launcher "
            "itself in the background (nohup, sbatch) and attach with podium attach RUN"
        )
    # The OpenMP wait policy must be in the environment before torch loads (for the rendezvous).
    with contextlib.suppress(PodiumError, OSError):
        if args.command == "train":
            from podium.engine.config import load_profile, parse_overrides

            _wait_policy(load_profile(args.profile, parse_overrides(args.seed, args.overrides)))
        else:
            from podium.engine.runs import resolve_run, runs_root

            _wait_policy(resolve_run(args.run, runs_root(args.runs_dir)).profile_path)
    from podium.engine.launcher import join_world
    from podium.engine.rank_worker import follow

    launched = join_world(world)
    if not world.is_lead:
        return follow(launched)
    if not args.headless:
        print(
            f"podium: started by {world.label} ({world.world_size} ranks): training headless; "
            "podium attach RUN opens the dashboard on it"
        )
    args.headless = True
    args.launched = launched
    try:
        return handler(args, dashboard)
    except BaseException as exc:
        launched.abort(
            f"{type(exc).__name__}: {exc}" if not isinstance(exc, PodiumError) else str(exc)
        )
        raise


def _train(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from podium.engine.config import load_profile, parse_overrides
    from podium.engine.runs import check_writable_root, runs_root

    profile = load_profile(args.profile, parse_overrides(args.seed, args.overrides))
    _wait_policy(profile)  # before the session's modules import torch
    from podium.engine.session import new_session

    root = check_writable_root(runs_root(args.runs_dir))
    _check_share_group(args)
    if not args.detached_child:  # its parent checked
        _check_before_start(args, profile, root)
    if args.detach and not args.detached_child:
        return _spawn_detached(args, profile.name, root)
    if not args.headless and not args.detached_child and dashboard is not None:
        return dashboard(args)
    if not args.headless and not args.detached_child:
        print(
            "podium: no dashboard in this entry point; training headless (Ctrl-C stops and saves)"
        )
    session = new_session(
        profile,
        root=root,
        name=args.name,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        console=None if args.detached_child else sys.stdout,
        gpus=args.gpus,
        share_gpu=args.share_gpu,
        cpu_ranks=args.cpu_ranks,
        share_group=args.share_group,
        launched=getattr(args, "launched", None),
    )
    if args.detached_child:
        from podium.engine.detach import repoint_std_fds

        repoint_std_fds(session.run.log_path)  # tells the waiting parent that the run is up
    return _run_headless(session)


def _spawn_detached(args: argparse.Namespace, profile_name: str, root: Path) -> int:
    from podium.engine.detach import free_run_id, spawn_detached
    from podium.engine.runs import check_run_id

    name = check_run_id(args.name) if args.name is not None else free_run_id(root, profile_name)
    argv = ["train", args.profile, "--headless", "--name", name, "--runs-dir", str(root)]
    argv += run_options_argv(args)
    if args.gpus is not None:
        argv += ["--gpus", args.gpus]
    if args.share_gpu:
        argv.append("--share-gpu")
    if args.cpu_ranks is not None:
        argv += ["--cpu-ranks", str(args.cpu_ranks)]
    return spawn_detached(argv, name, root)


def _check_share_group(args: argparse.Namespace) -> None:
    """``--share-group`` (or the lab's setting) names a group the user is in: checked before a
    dashboard or a detached child starts, so the refusal is the usual one line."""
    from podium.engine.run_access import resolve_access

    resolve_access(args.share_group)


def _resume(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from podium.engine.runs import resolve_run, runs_root

    root = runs_root(args.runs_dir)
    run = resolve_run(args.run, root)
    _wait_policy(run.profile_path)  # before the session's modules import torch
    from podium.engine.session import resume_session

    if args.name is not None and args.checkpoint is None:
        raise PodiumError("--name is for a new run: use it with --checkpoint NAME")
    if args.detach and args.checkpoint is not None:
        raise PodiumError("--detach continues RUN in place: it does not take --checkpoint")
    if not args.detached_child:  # its parent checked
        from podium.engine.config import load_profile
        from podium.engine.session import check_branchable, check_resumable

        if args.checkpoint is not None:
            check_branchable(run, args.checkpoint)
        else:
            check_resumable(run, max_steps=args.max_steps, max_epochs=args.max_epochs)
        _check_before_start(args, load_profile(run.profile_path), root)
    if args.checkpoint is None and not args.headless and not args.detached_child:
        _check_resume_history(run, args)  # before a dashboard or a detached child starts
    if args.detach and not args.detached_child:
        return _spawn_detached_resume(args, run, root)
    if not args.headless and not args.detached_child and dashboard is not None:
        return dashboard(args)
    if args.checkpoint is not None:
        from podium.engine.session import branch_session

        session = branch_session(
            run,
            args.checkpoint,
            root=root,
            name=args.name,
            max_steps=args.max_steps,
            max_epochs=args.max_epochs,
            console=sys.stdout,
            gpus=args.gpus,
            share_gpu=args.share_gpu,
            cpu_ranks=args.cpu_ranks,
            allow_new_history=args.allow_new_history,
            launched=getattr(args, "launched", None),
        )
        print(
            f"podium: new run {session.run.id} from run {run.id}, checkpoint {args.checkpoint} (step {session.resumed_from.step})"
        )
        return _run_headless(session)
    session = resume_session(
        run,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        console=None if args.detached_child else sys.stdout,
        gpus=args.gpus,
        share_gpu=args.share_gpu,
        cpu_ranks=args.cpu_ranks,
        allow_new_history=args.allow_new_history,
        launched=getattr(args, "launched", None),
    )
    info = session.resumed_from
    assert info is not None
    print(f"podium: resuming {run.id} from checkpoint {info.name} (step {info.step})")
    if args.detached_child:
        from podium.engine.detach import repoint_std_fds

        sys.stdout.flush()
        repoint_std_fds(session.run.log_path)
    return _run_headless(session)


def _check_resume_history(run: Any, args: argparse.Namespace) -> None:
    """Refuse continuing over a lost or damaged metrics history (or, with
    ``--allow-new-history``, start a new one) here, in one line, before a dashboard or a
    detached child takes over; ``resume_session`` checks again under the lock it then holds."""
    from podium.engine.checkpoints import list_checkpoints
    from podium.engine.resume_history import check_history

    complete = list_checkpoints(run.checkpoint_dir)
    if not complete or run.is_live():
        return  # the resume itself says what is wrong
    newest = complete[-1]
    run.acquire()
    try:
        note = check_history(
            run, newest.step, checkpoint=newest.name, allow_new_history=args.allow_new_history
        )
    finally:
        run.release()
    if note:
        sys.stderr.write(note + "\n")


def _spawn_detached_resume(args: argparse.Namespace, run: Any, root: Path) -> int:
    from podium.engine.detach import spawn_detached

    argv = ["resume", str(run.path), "--headless", "--runs-dir", str(root)]
    for flag, value in (("--max-steps", args.max_steps), ("--max-epochs", args.max_epochs)):
        if value is not None:
            argv += [flag, str(value)]
    if args.gpus is not None:
        argv += ["--gpus", args.gpus]
    if args.share_gpu:
        argv.append("--share-gpu")
    if args.cpu_ranks is not None:
        argv += ["--cpu-ranks", str(args.cpu_ranks)]
    return spawn_detached(argv, run.id, root)


def _wait_policy(profile: Any) -> None:
    """The profile's OpenMP wait policy, set before anything imports torch (which reads it).
    ``profile``: a Profile, or the path of a run's saved one (a damaged one is left for the
    checks that follow to report)."""
    from podium.engine.cpu_share import apply_wait_policy

    if isinstance(profile, Path):
        from podium.engine.config import load_profile

        try:
            profile = load_profile(profile)
        except PodiumError:
            return
    apply_wait_policy(profile.train.cpu_wait)


def _check_before_start(args: argparse.Namespace, profile: Any, root: Path) -> None:
    """What would refuse the run once it starts, asked before any mode does (the dashboard's UI
    included), so every mode reports a mistake the same way: one line, exit 2."""
    from podium.engine.runs import check_run_id
    from podium.engine.session import check_placement

    name = getattr(args, "name", None)
    if name is not None:
        check_run_id(name)
        if (root / name).exists():
            raise PodiumError(f"--name {name!r}: a run with that id already exists in {root}")
    launched = getattr(args, "launched", None)
    check_placement(
        profile,
        gpus=args.gpus,
        share_gpu=args.share_gpu,
        cpu_ranks=args.cpu_ranks,
        launcher=launched.world if launched is not None else None,
    )


def _attach(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    if dashboard is None:
        raise PodiumError("attach opens the dashboard: run it from the `podium` command")
    return dashboard(args)


def _run_headless(session: Any) -> int:
    """Train in the main thread; the first SIGINT/SIGTERM stops cleanly (saving), a second aborts."""
    trainer = session.trainer
    asked: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if asked:
            raise KeyboardInterrupt
        asked.append(name)
        trainer.stop(f"{name} received")
        sys.stderr.write(f"podium: {name}: stopping after this step and saving (again to abort)\n")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = session.run_training()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"podium: run {session.run.id} {result.status} at step {result.step}: {result.reason}")
    print(f"podium: run directory {session.run.path}")
    return 0 if result.status != "failed" else 1


def _runs(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from podium.engine.runs import list_runs, runs_root

    root = runs_root(args.runs_dir)
    rows = [_run_row(run) for run in list_runs(root)]
    for r in rows:
        if r["state"] == "damaged":
            sys.stderr.write(f"podium: warning: run {r['id']}: {r['reason']}\n")
    if args.json:
        print(json.dumps(rows, indent=1, default=_json_default))
        return 0
    if not rows:
        print(f"no runs under {root}")
        return 0
    header = ("RUN", "PROFILE", "STATE", "STEP", "BEST VAL", "STARTED")
    table = [
        (
            r["id"],
            r["profile"],
            r["state"],
            "" if r["step"] is None else str(r["step"]),
            "" if r["best_val"] is None else f"{r['best_val']:.4f}",
            ""
            if r["created"] is None
            else time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
        )
        for r in rows
    ]
    _print_table(header, table)
    return 0


def _run_row(run: Any) -> dict[str, Any]:
    """A run's line; a damaged run.json or store gives state "damaged" and the reason."""
    from podium.engine.errors import RunError
    from podium.engine.store import RunStore

    try:
        info = run.info()
    except RunError as exc:
        return {
            **dict.fromkeys(("profile", "family", "step", "best_val", "created", "host", "user")),
            "id": run.id,
            "profile": "?",
            "state": "damaged",
            "reason": str(exc),
            "path": str(run.path),
        }
    state, reason = run.status()
    step = best = None
    if run.db_path.exists():
        try:
            store = RunStore.open(run.db_path, readonly=True)
            try:
                step, best = store.progress()
            finally:
                store.close()
        except RunError as exc:
            state, reason = "damaged", str(exc)
    return {
        "id": info.id,
        "profile": info.profile,
        "family": info.family,
        "state": state,
        "reason": reason,
        "step": step,
        "best_val": best,
        "created": info.created,
        "host": info.host,
        "user": info.user,
        "path": str(run.path),
        "world": _world_of(run),
    }


def _world_of(run: Any) -> dict[str, Any] | None:
    """The newest session's world from the run's ``world.json`` (None for a one-process run)."""
    from podium.engine.launcher import read_worlds

    worlds = read_worlds(run.path)
    if not worlds:
        return None
    w = worlds[-1]
    return {
        "launcher": w.get("launcher"),
        "ranks": w.get("world_size"),
        "nodes": w.get("nodes"),
        "hosts": w.get("hosts"),
    }


def _checkpoints(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from dataclasses import asdict

    from podium.engine.checkpoints import list_checkpoints
    from podium.engine.runs import resolve_run, runs_root
    from podium.engine.units import size

    run = resolve_run(args.run, runs_root(args.runs_dir))
    infos = list_checkpoints(run.checkpoint_dir)
    if args.json:
        out = [{**asdict(i), "path": str(run.checkpoint_dir / f"{i.name}.pt")} for i in infos]
        print(json.dumps(out, indent=1, default=_json_default))
        return 0
    if not infos:
        print(f"run {run.id} has no checkpoints")
        return 0
    header = ("NAME", "KIND", "STEP", "EPOCH", "VAL LOSS", "SIZE", "SAVED")
    table = [
        (
            i.name,
            i.kind + (" (keep)" if i.keep else ""),
            str(i.step),
            f"{i.epoch:.2f}",
            "" if i.val_loss is None else f"{i.val_loss:.4f}",
            size(i.size),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.wall)),
        )
        for i in infos
    ]
    _print_table(header, table)
    return 0


def _metrics(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from podium.engine.runs import resolve_run, runs_root
    from podium.engine.store import RunStore

    if args.indent is not None and not args.json:
        raise PodiumError("--indent N is for --json (CSV has one row a line already)")
    run = resolve_run(args.run, runs_root(args.runs_dir))
    series: dict[str, list] = {}
    matrices: dict[str, dict[str, Any]] = {}
    if run.db_path.exists():
        store = RunStore.open(run.db_path, readonly=True)
        try:
            names = store.series_names()
            wanted = args.series or names
            missing = [n for n in wanted if n not in names]
            if missing:
                raise PodiumError(
                    f"--series {missing[0]!r}: run {run.id} has no such series (it has: {', '.join(names)})"
                )
            series = {n: store.query(n, max_points=args.max_points) for n in wanted}
            if args.history is not None:
                series = {n: store.query(n) for n in names}  # every point: means per epoch
            if args.json:
                for name in store.matrix_names():
                    latest = store.latest_matrix(name)
                    if latest is not None:
                        matrices[name] = {"step": int(latest[0]), **latest[1].to_dict()}
        finally:
            store.close()
    if args.history is not None:
        history = _history(series)
        _write_json_atomic(args.history, history)
        print(f"podium: wrote {len(history['epoch'])} epochs of history to {args.history}")
    elif args.json:
        out = {
            "series": {
                n: [[int(s), _finite_or_none(v)] for s, v in pts] for n, pts in series.items()
            },
            "matrices": matrices,
        }
        print(json.dumps(out, indent=args.indent))
    else:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("series", "step", "value"))
        for n, pts in series.items():
            for s, v in pts:
                writer.writerow((n, int(s), repr(v)))
    return 0


def _history(series: Mapping[str, list[tuple[float, float]]]) -> dict[str, list]:
    """The guide's history format: a list per quantity, one entry per validation (the
    trainer validates once an epoch unless ``val_every_steps`` says otherwise): ``train_loss``
    the mean of the training steps since the previous validation, ``val_loss``, every
    ``val/<head>/accuracy`` as ``<head>_accuracy`` (``val/accuracy`` as ``accuracy``) and the
    ``learning_rate`` of the last step."""
    from podium.engine import series as sn

    accuracies = {}
    for n in series:
        metric = sn.metric_of(n)
        if sn.kind(n) == "metric" and (metric == "accuracy" or metric.endswith("/accuracy")):
            head = metric.removesuffix("accuracy").rstrip("/").replace("/", "_")
            accuracies[n] = f"{head}_accuracy" if head else "accuracy"
    out: dict[str, list] = {"epoch": [], "step": [], "train_loss": [], "val_loss": []}
    out |= {k: [] for k in accuracies.values()} | {"learning_rate": []}
    at = {n: dict(pts) for n, pts in series.items()}
    train, lr, previous = series.get(sn.TRAIN_LOSS, []), series.get(sn.LR, []), -1.0
    for i, (step, val_loss) in enumerate(series.get(sn.VAL_LOSS, []), start=1):
        losses = [v for s, v in train if previous < s <= step]
        rates = [v for s, v in lr if s <= step]
        out["epoch"].append(i)
        out["step"].append(int(step))
        out["train_loss"].append(_finite_or_none(sum(losses) / len(losses)) if losses else None)
        out["val_loss"].append(_finite_or_none(val_loss))
        for n, key in accuracies.items():
            value = at[n].get(step)
            out[key].append(None if value is None else _finite_or_none(value))
        out["learning_rate"].append(rates[-1] if rates else None)
        previous = step
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def _doctor(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    """Exit 0 when every check passed, 1 when one found a problem."""
    from dataclasses import asdict

    from podium.engine.doctor import diagnose
    from podium.engine.runs import resolve_run, runs_root

    run = resolve_run(args.run, runs_root(args.runs_dir))
    findings = diagnose(run)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        width = max(len(f.check) for f in findings)
        for f in findings:
            print(f"{'ok ' if f.ok else 'BAD'}  {f.check.ljust(width)}  {f.text}")
    return 0 if all(f.ok for f in findings) else 1


def _control(args: argparse.Namespace, dashboard: DashboardHook | None) -> int:
    from podium.engine.control import ControlClient
    from podium.engine.runs import resolve_run, runs_root

    kwargs: dict[str, Any] = {}
    if args.action == "set-lr":  # the arguments first: a usage mistake needs no live run
        if args.value is None:
            raise PodiumError(
                "set-lr needs the new learning rate: podium control RUN set-lr LR, e.g. 3e-4"
            )
        try:
            kwargs["lr"] = float(args.value)
        except ValueError:
            raise PodiumError(
                f"set-lr {args.value}: the learning rate must be a number, e.g. 3e-4"
            ) from None
    elif args.value is not None:
        raise PodiumError(f"{args.action} takes no value (got {args.value!r})")
    run = resolve_run(args.run, runs_root(args.runs_dir))
    if not run.is_live():
        raise PodiumError(f"run {run.id} is not live ({run.status()[0]}); nothing to control")
    with ControlClient.for_run(run.path) as client:
        result = client.request(args.action.replace("-", "_"), **kwargs)
    print(
        json.dumps(result, indent=1)
        if isinstance(result, (dict, list))
        else f"{args.action}: ok ({result})"
    )
    return 0


_HANDLERS: dict[str, Callable[[argparse.Namespace, DashboardHook | None], int]] = {
    "train": _train,
    "resume": _resume,
    "attach": _attach,
    "runs": _runs,
    "checkpoints": _checkpoints,
    "metrics": _metrics,
    "control": _control,
    "doctor": _doctor,
    "gpus": lambda args, dashboard: _gpus(args),
    "generate": lambda args, dashboard: _generate(args),
    "export": lambda args, dashboard: _export(args),
    "prepare": lambda args, dashboard: _cli_module("prepare").run(args),
    "import": lambda args, dashboard: _cli_module("importer").run(args),
    "predict": lambda args, dashboard: _predict(args),
    "queue": lambda args, dashboard: _cli_module("queue").run(args),
}


def _cli_module(name: str) -> Any:
    return importlib.import_module(f"podium.engine.cli.{name}")


def _gpus(args: argparse.Namespace) -> int:
    from podium.engine.cli import gpus as gpus_cli

    return gpus_cli.run(args)


def _predict(args: argparse.Namespace) -> int:
    from podium.engine.cli import predict as predict_cli

    return predict_cli.run(args)


def _generate(args: argparse.Namespace) -> int:
    # Sampling a big model uses more than one thread (cp's ``_sampling_threads``): passive
    # waits, as the run's profile says for training, set before torch loads.
    with contextlib.suppress(PodiumError, OSError):
        from podium.engine.runs import resolve_run, runs_root

        _wait_policy(resolve_run(args.run, runs_root(args.runs_dir)).profile_path)
    from podium.engine.cli import generate as generate_cli

    return generate_cli.run(args)


def _export(args: argparse.Namespace) -> int:
    from podium.engine.cli import export as export_cli

    return export_cli.run(args)
