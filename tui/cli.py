"""The ``podium`` console script.

``podium`` with no arguments opens the dashboard's home screen; ``podium train PROFILE`` and
``podium resume RUN`` without ``--headless`` open it on that run (through the ``dashboard`` hook
of ``podium.engine.cli.main.main``). Everything else, and every ``--headless`` path, is ``podium.engine.cli.main``'s.

The dashboard needs a terminal: with stdout not a tty it refuses in one line (exit 2) and
suggests ``--headless``.

After the app exits, ``run_dashboard`` finishes what the way it exited asks for (``app.leave``):
a plain quit has stopped the runs already; a hang-up keeps training here with the output in the
run's log; a detach hands each run to a background process and prints how to attach.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from podium.engine.cli import main as engine_cli
from podium.engine.errors import PodiumError


def _has_terminal() -> bool:
    return sys.stdout.isatty() and sys.stdin.isatty()


def _refuse(command: str) -> int:
    hint = {
        "home": "use `podium runs` to list runs",
        "attach": "use `podium control RUN status` without a terminal",
        "train": "add --headless to train without it",
        "resume": "add --headless to resume without it",
    }[command]
    sys.stderr.write(
        f"podium: error: the dashboard needs a terminal (stdout is not a tty); {hint}\n"
    )
    return 2


def run_dashboard(root: Path, request=None, *, attach=None) -> int:
    """Run the app until it exits, then do what its way of leaving asks (module docstring)."""
    from podium.tui.app import PodiumApp, terminal_hung_up
    from podium.tui.live import stop_all

    app = PodiumApp(root=root, request=request)
    app.attach_to = attach
    # Until the app has its own handler (on mount) a hang-up must not kill the process.
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: app.hang_up())
    code: object = None
    error: BaseException | None = None
    try:
        code = app.run()
    except BaseException as exc:  # after a hang-up the driver's last writes may fail: train on
        error = exc
    if app.leave is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the loop's handler went with the loop
    for viewer in app.attached:
        viewer.close()
    if app.leave is None and app.training and terminal_hung_up():
        app.leave = "hangup"  # the input thread died of EIO before the timer noticed
    if app.leave == "hangup":
        return _train_on_after_hangup(app)
    if error is None and app.leave == "detach":
        return _hand_over(app, root)
    signal.signal(signal.SIGHUP, previous)
    # Normally the quit dialog has stopped them; this covers the app dying some other way.
    stop_all(app.training, "the dashboard closed")
    if error is not None:
        raise error
    if app.return_code not in (None, 0):
        return app.return_code
    return code if isinstance(code, int) else app.exit_code()


def _train_on_after_hangup(app) -> int:
    """The terminal is gone: train on in this process, writing only to the runs' logs."""
    from podium.engine.detach import repoint_std_fds
    from podium.tui.live import stop_all

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    runs = app.training
    for live in runs:
        live.release_viewer()  # nobody watches: `podium runs` says detached
    logs = [live.run_dir.log_path for live in runs if live.run_dir is not None]
    if logs:
        repoint_std_fds(logs[0])
    else:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    print(
        f"podium: {time.strftime('%H:%M:%S')} the dashboard's terminal hung up; "
        f"training continues in pid {os.getpid()} (podium attach brings the dashboard back)",
        flush=True,
    )

    def stop(signum: int, frame: object) -> None:
        stop_all(app.training, f"stopped by signal {signal.Signals(signum).name}", timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for live in runs:
        while not live.done.wait(0.5):
            pass
    return app.exit_code()


HANDOVER_REASON = "handed over to a background process (detach)"


def _hand_over(app, root: Path) -> int:
    """Detach: each run saves a checkpoint and a background process resumes it exactly."""
    from podium.engine.detach import podium_command, spawn_detached

    runs = app.training
    for live in runs:
        live.request_stop(HANDOVER_REASON)
    if runs:
        print(f"podium: saving a checkpoint of {', '.join(r.title for r in runs)} to hand over…")
    code = 0
    for live in runs:
        live.done.wait()
        result, run = live.result, live.run_dir
        if run is None or result is None or result.reason != HANDOVER_REASON:
            state = result.status if result is not None else "failed"
            why = result.reason if result is not None else (live.error or "")
            print(f"podium: run {live.title} {state}: {why}")
            continue
        argv = ["resume", str(run.path), "--headless", "--runs-dir", str(run.path.parent)]
        req = live.request
        if req.max_steps is not None:
            argv += ["--max-steps", str(req.max_steps)]
        if req.max_epochs is not None:
            argv += ["--max-epochs", str(req.max_epochs)]
        gpus = req.gpus if req.gpus is not None else ("cpu" if live.model.device == "cpu" else None)
        if gpus is not None:
            argv += ["--gpus", gpus]
        if req.share_gpu:
            argv.append("--share-gpu")
        if req.cpu_ranks is not None:
            argv += ["--cpu-ranks", str(req.cpu_ranks)]
        code = spawn_detached(argv, run.id, run.path.parent) or code
    for viewer in app.attached:
        if viewer.training:
            print(
                f"podium: run {viewer.title} trains on; "
                f"attach: {podium_command()} attach {viewer.title}"
            )
    return code


def dashboard(args: argparse.Namespace) -> int:
    """``podium.engine.cli.main``'s hook: open the dashboard on a new or resumed run."""
    from podium.engine.runs import resolve_run, runs_root

    root = runs_root(args.runs_dir)
    target = _attach_target(args.run, root) if args.command == "attach" else None
    if not _has_terminal():  # after the checks: a mistake is told as itself
        return _refuse(args.command)
    if target is not None:  # no torch on this path: attaching must be quick
        return run_dashboard(root, attach=target)
    from podium.engine.config import parse_overrides
    from podium.tui.live import BranchRequest, ResumeRequest, StartRequest

    common = {
        "max_steps": args.max_steps,
        "max_epochs": args.max_epochs,
        "gpus": getattr(args, "gpus", None),
        "share_gpu": bool(getattr(args, "share_gpu", False)),
        "cpu_ranks": getattr(args, "cpu_ranks", None),
    }
    name = getattr(args, "name", None)  # checked, like everything checkable, before this hook
    if args.command == "train":
        request = StartRequest(
            profile_path=Path(args.profile),
            overrides=tuple(parse_overrides(args.seed, args.overrides)),
            root=root,
            name=name,
            share_group=getattr(args, "share_group", None),
            **common,
        )
    elif getattr(args, "checkpoint", None) is not None:
        parent = resolve_run(args.run, root)
        request = BranchRequest(
            parent_path=parent.path, checkpoint=args.checkpoint, root=root, name=name, **common
        )
    else:
        run = resolve_run(args.run, root)
        request = ResumeRequest(run_path=run.path, **common)
    return run_dashboard(root, request)


def _attach_target(arg: str | None, root: Path):
    """The run to attach to: ``arg``, else this user's newest live run under ``root``."""
    from podium.engine.runs import list_runs, resolve_run

    if arg is not None:
        run = resolve_run(arg, root)
        state, reason = run.status()
        if state not in ("live", "detached"):
            hint = "; `podium resume` continues it" if state in ("stopped", "interrupted") else ""
            raise PodiumError(
                f"run {run.id} is not live ({state}{': ' + reason if reason else ''}){hint}"
            )
        return run
    user = os.environ.get("USER") or ""

    def owner(run) -> str:
        try:
            return run.info().user
        except PodiumError:
            return ""

    live = [r for r in list_runs(root) if r.status()[0] in ("live", "detached")]
    mine = [r for r in live if not user or owner(r) == user] or live
    if not mine:
        raise PodiumError(f"no live run under {root} to attach to (podium runs lists them)")
    return mine[-1]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: every command, with a reader that stops early (``| head``) ending it
    quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError, at the write or at
    the final flush. Caught here, once for every command: stdout is pointed at /dev/null so the
    interpreter's own last flush cannot fail again (as the ``signal`` module's docs advise), and
    the exit status is the shell's for a pipe closed under a writer (128 + SIGPIPE).
    """
    try:
        try:
            code = _main(argv)
        finally:  # buffered output meets the closed pipe here, also after --help's SystemExit
            sys.stdout.flush()
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return PIPE_CLOSED
    return code


PIPE_CLOSED = 128 + signal.SIGPIPE
"""Exit status after the reader of stdout went away: what a shell reports for a SIGPIPE death."""


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        if not _has_terminal():
            return _refuse("home")
        from podium.engine.runs import runs_root

        return run_dashboard(runs_root(os.environ.get("PODIUM_RUNS")))
    return engine_cli.main(args, dashboard=dashboard)


if __name__ == "__main__":
    sys.exit(main())
