"""``podium queue``: wait for free GPUs, then train (``podium.engine.queue``).

* ``podium queue PROFILE [train options]`` checks the profile as ``podium train`` does (a bad one
  is one line, exit 2, and nothing is queued) and adds it to this user's queue;
* ``podium queue [--json]`` lists the queue: position, id, profile, GPUs asked for, and what
  each entry waits for or which run it started;
* ``podium queue cancel ID`` cancels a queued entry.

Each of them starts the user's waiter when entries wait and none is alive.

``podium.engine.cli.main`` wires it: ``add_parser(sub)`` in ``build_parser`` and ``run(args)`` as the handler.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from podium.engine.cli.args import add_run_options, run_options_argv
from podium.engine.errors import PodiumError, ProfileError
from podium.engine.queue.store import Entry, Queue, QueueError, forwarded_env

RECENT = 5
"""Ended entries (started, failed, cancelled) the list still shows, newest last."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``queue`` command to ``podium``'s sub-parsers."""
    p = subparsers.add_parser(
        "queue",
        help="queue a run until the GPUs it asks for are free; list or cancel queued runs",
        description="podium queue PROFILE [train options] | podium queue | podium queue cancel ID",
    )
    p.add_argument("profile", nargs="?", metavar="PROFILE", help="a profile .toml file, or cancel")
    p.add_argument("entry", nargs="?", metavar="ID", help="with cancel: the entry to cancel")
    p.add_argument("--json", action="store_true", help="list the queue as JSON")
    p.add_argument("--waiter", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--gpus",
        metavar="SPEC",
        help="auto (one GPU, default), a count (2) or GPU indices with a comma (0, or 2,3)",
    )
    p.add_argument("--share-gpu", action="store_true", help="share the GPUs with sharing runs")
    add_run_options(p)
    p.add_argument("--runs-dir", metavar="DIR", help="runs root (default: $PODIUM_RUNS or ./runs)")
    return p


def run(args: argparse.Namespace) -> int:
    queue = Queue()
    if args.waiter:
        from podium.engine.queue.waiter import Waiter

        return Waiter(queue).run()
    if args.profile == "cancel":
        return _cancel(queue, args.entry)
    if args.entry is not None:
        raise PodiumError(f"queue {args.profile} {args.entry}: one profile at a time")
    if args.profile is None:
        return _list(queue, as_json=args.json)
    return _add(queue, args)


def _add(queue: Queue, args: argparse.Namespace) -> int:
    entry = check_request(args)
    queue.add(entry)
    from podium.engine.queue.waiter import ensure_waiter

    ensure_waiter(queue)
    ahead = [e for e in queue.waiting() if e.id < entry.id]
    print(
        f"podium: queued entry {entry.id} ({entry.profile_name}, --gpus {entry.gpus}); "
        f"{len(ahead)} ahead of it"
    )
    print("  list:    podium queue")
    print(f"  cancel:  podium queue cancel {entry.id}")
    return 0


def check_request(args: argparse.Namespace) -> Entry:
    """What ``podium train`` would refuse, asked now (the profile, the name, the runs root, the
    GPUs the run could ever get), as an entry ready to queue.

    Raises:
        PodiumError: one line naming what is wrong (exit 2).
    """
    from podium.engine.config import load_profile, parse_overrides
    from podium.engine.gpus.select import parse_spec
    from podium.engine.log_sinks import check_log_config
    from podium.engine.run_access import resolve_access
    from podium.engine.runs import check_run_id, check_writable_root, runs_root

    profile = load_profile(args.profile, parse_overrides(args.seed, args.overrides))
    root = check_writable_root(runs_root(args.runs_dir)).resolve()
    resolve_access(args.share_group)
    check_log_config(profile.log, profile.source)
    if args.name is not None:
        check_run_id(args.name)
        if (root / args.name).exists():
            raise PodiumError(f"--name {args.name!r}: a run with that id already exists in {root}")
        if any(e.name == args.name and e.runs_dir == str(root) for e in Queue().waiting()):
            raise PodiumError(f"--name {args.name!r}: a queued run already has that id")
    spec = args.gpus or ("cpu" if profile.train.device == "cpu" else "auto")
    parsed = parse_spec(spec)
    if parsed.kind == "cpu":
        raise PodiumError(
            f"--gpus {spec}: a CPU run waits for no GPU; start it with podium train --detach "
            "(or queue it with --gpus N)"
        )
    _check_gpus_exist(profile, parsed, share=args.share_gpu)
    options = run_options_argv(args)
    return Entry(
        id=0,
        profile=str(Path(args.profile).resolve()),
        profile_name=profile.name,
        gpus=parsed.text,
        runs_dir=str(root),
        cwd=os.getcwd(),
        options=options,
        name=args.name,
        share_gpu=args.share_gpu,
        env=forwarded_env(),
    )


def _check_gpus_exist(profile: Any, spec: Any, *, share: bool) -> None:
    """The run could start some day: its named GPUs exist and are not reserved, a count is no
    more than the GPUs that are not reserved, and the model fits in their whole memory."""
    from podium.engine.gpus.config import load_gpu_config
    from podium.engine.gpus.nvml import is_na, read_snapshot
    from podium.engine.gpus.select import select_gpus
    from podium.engine.limits import check_fits

    config = load_gpu_config()
    snapshot = read_snapshot(processes=False)
    if not snapshot.available:
        raise QueueError(f"--gpus {spec.text}: no GPU to wait for here ({snapshot.state})")
    if spec.kind == "list":  # leases ignored: a leased GPU is what one waits for
        chosen = select_gpus(
            spec,
            snapshot=snapshot,
            reserved=config.reserved,
            leases={},
            busy_memory_fraction=1.0,
            share=share,
        ).gpus
    else:
        usable = [
            g for g in snapshot.gpus if config.reservation_for(g) is None and not is_na(g.uuid)
        ]
        if len(usable) < spec.count:
            raise QueueError(
                f"--gpus {spec.text}: {spec.count} GPU(s) wanted but this machine has "
                f"{len(usable)} that are not reserved, so the run would wait forever"
            )
        chosen = usable[: spec.count]
    whole = [
        g._replace(memory_used=0 if not is_na(g.memory_total) else g.memory_used) for g in chosen
    ]
    check_fits(profile, whole, processes=len(whole))
    if len(whole) > 1 and profile.train.batch_size < len(whole):
        raise ProfileError(
            f"train.batch_size: {profile.train.batch_size} is the global batch and cannot be "
            f"split over {len(whole)} GPUs; set it to at least {len(whole)} or ask for fewer"
        )


def _cancel(queue: Queue, text: str | None) -> int:
    if text is None:
        raise QueueError("queue cancel: which entry? podium queue cancel ID (see podium queue)")
    try:
        entry_id = int(text)
    except ValueError:
        raise QueueError(
            f"queue cancel {text}: an entry id is a number (see podium queue)"
        ) from None
    entry = queue.cancel(entry_id)
    print(f"podium: cancelled queue entry {entry.id} ({entry.profile_name})")
    return 0


def _list(queue: Queue, *, as_json: bool) -> int:
    from podium.engine.queue.waiter import ensure_waiter

    started = ensure_waiter(queue)  # a dead waiter is noticed here and replaced
    entries = queue.entries()
    waiting = [e for e in entries if e.state in ("queued", "starting")]
    ended = [e for e in entries if e.state not in ("queued", "starting")][-RECENT:]
    pid = queue.waiter_pid()
    if as_json:
        out = {
            "waiter": pid,
            "entries": [{**e.to_dict(), "position": i} for i, e in enumerate(waiting, start=1)]
            + [{**e.to_dict(), "position": None} for e in ended],
        }
        print(json.dumps(out, indent=1))
        return 0
    if not waiting and not ended:
        print(f"the queue is empty ({queue.path})")
        return 0
    rows = [
        (str(i), str(e.id), e.profile_name, e.label, e.state, describe(e))
        for i, e in enumerate(waiting, start=1)
    ]
    rows += [("", str(e.id), e.profile_name, e.label, e.state, describe(e)) for e in ended]
    header = ("POS", "ID", "PROFILE", "GPUS", "STATE", "WAITS FOR / RUN")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if started:
        print(f"waiter: pid {started} (started now: none was alive)")
    elif waiting:
        print(f"waiter: pid {pid}" if pid else "waiter: starting")
    return 0


def describe(entry: Entry) -> str:
    """What an entry waits for, or what became of it, in a few words."""
    if entry.state == "queued":
        return entry.waiting or "waiting for the waiter's first look"
    if entry.state == "starting":
        return f"run {entry.run_id} starting (pid {entry.pid})"
    if entry.state == "started":
        when = time.strftime("%H:%M:%S", time.localtime(entry.updated))
        return f"run {entry.run_id} (since {when})"
    return entry.reason
