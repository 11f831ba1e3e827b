"""Runs with no terminal: ``podium train PROFILE --detach``.

The parent validates the profile, then starts a child podium in a new session (no controlling
terminal, so no SIGHUP when the login ends) and waits only until the child has built its data and
model: errors up to that point reach the user as the usual one-line message and exit code. From
then on the child points its file descriptors 1 and 2 (C-level writes too) at the run's log, which
closes the pipe the parent was reading, and the parent prints how to reach the run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from podium.engine.errors import RunError
from podium.engine.runs import RunDir

CHILD_FLAG = "--detached-child"


def free_run_id(root: Path, profile_name: str) -> str:
    """A run id that does not exist yet (the child refuses it if another process takes it first)."""
    base = f"{profile_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        candidate = base if n == 1 else f"{base}-{n}"
        if not (root / candidate).exists():
            return candidate
    raise RunError(f"{root}: could not find a free run id for {base}")


def spawn_detached(argv: list[str], run_id: str, root: Path) -> int:
    """Start ``podium <argv>`` as a detached child and report where it runs."""
    child_argv = [sys.executable, "-m", "podium", *argv, CHILD_FLAG]
    proc = subprocess.Popen(
        child_argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stderr is not None
    # EOF comes when the child re-points fd 2 at its log (ready) or when it exits (failed).
    early = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    try:
        code = proc.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        code = None
    if code is not None:
        sys.stderr.write(early or f"podium: error: the detached run exited with code {code}\n")
        return code if code else 1
    run = RunDir(root / run_id)
    podium, where = podium_command(), f"{shlex.quote(run_id)} --runs-dir {shlex.quote(str(root))}"
    print(f"podium: run {run_id} is training in the background (pid {proc.pid}, no terminal)")
    print(f"  attach:  {podium} attach {where}")
    print(f"  status:  {podium} control {where} status")
    print(f"  stop:    {podium} control {where} stop")
    print(f"  log:     {run.log_path}")
    return 0


def podium_command(environ: dict[str, str] | None = None) -> str:
    """How a fresh shell runs this very podium, for the commands printed after a detach.

    ``podium`` alone only where the PATH a new login has finds this installation's script: a
    podium reached as ``.venv/bin/podium`` (``make demo``) or through an activated venv (which a
    new shell has not activated) gets its full path, else ``python -m podium``.
    """
    env = os.environ if environ is None else environ
    script = Path(sys.executable).parent / "podium"
    if script.is_file():
        path = env.get("PATH", "")
        venv = env.get("VIRTUAL_ENV")
        if venv:  # `activate` put the venv first; a new shell will not have it
            bin_dir = str(Path(venv) / "bin")
            path = os.pathsep.join(d for d in path.split(os.pathsep) if d != bin_dir)
        found = shutil.which("podium", path=path)
        if found is not None and Path(found).resolve() == script.resolve():
            return "podium"
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m podium"


def repoint_std_fds(log_path: Path) -> None:
    """Point fds 0, 1 and 2 away from the (absent) terminal: stdin at /dev/null, output at the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
