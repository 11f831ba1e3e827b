"""``podium prepare SOURCE DIR --profile PROFILE [--out OUT] [--workers N] [--labels FILE]``.

Tokenises a dataset once, with the profile's family's tokeniser, into a directory that
``podium train PROFILE --set data.path=OUT`` trains from. SOURCE is ``emopia`` (the EMOPIA 1.0
layout) or ``midi-folder`` (any tree of .mid/.midi). Re-running it on a grown folder tokenises
only the new files; Ctrl-C keeps what is done (exit 130) and the next run continues.

``podium.engine.cli.main`` wires it: ``add_parser(sub)`` in ``build_parser`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from podium.engine.cli.args import add_overrides_option, positive_int
from podium.engine.errors import PodiumError, ProfileError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``prepare`` command to ``podium``'s sub-parsers."""
    p = subparsers.add_parser(
        "prepare",
        help="tokenise a dataset once (parallel, incremental) for a profile to train from",
        description="Tokenise a MIDI dataset with a profile's family tokeniser into OUT: "
        "shards keyed by content hash, a train/val/test split by hash, report.json and summary.txt.",
    )
    p.add_argument(
        "source",
        choices=("emopia", "midi-folder"),
        metavar="SOURCE",
        help="emopia (EMOPIA 1.0 layout) or midi-folder (any tree of .mid/.midi)",
    )
    p.add_argument("dir", metavar="DIR", help="the dataset directory")
    p.add_argument(
        "--profile",
        required=True,
        metavar="PROFILE",
        help="the profile whose family tokenises and whose [data] gives the split",
    )
    p.add_argument(
        "--out",
        metavar="OUT",
        help="output directory (default: under the podium cache, named for DIR)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="worker processes (default: the cores this process may use)",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV or JSONL: file -> emotion, sentiment, genre, description, key",
    )
    add_overrides_option(p, "override a profile value, as for podium train")
    return p


def default_out(profile_name: str, src_dir: Path) -> Path:
    from podium.engine.data.cache import cache_dir_for

    digest = hashlib.sha1(str(src_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir_for("") / "prepared" / f"{profile_name}-{src_dir.name}-{digest}"


def run(args: argparse.Namespace) -> int:
    """Prepare; 0, 2 for bad input, 130 after Ctrl-C."""
    from podium.engine.config import load_profile
    from podium.engine.data.prepare import prepare
    from podium.engine.families.registry import get_family

    try:
        profile = load_profile(args.profile, args.overrides)
        family = get_family(profile.family)
        if family.prepare is None:
            raise ProfileError(
                f"{args.profile}: family {family.name!r} has no tokeniser to prepare data with"
            )
        src = Path(args.dir).expanduser()
        out = Path(args.out).expanduser() if args.out else default_out(profile.name, src)
        labels = Path(args.labels).expanduser() if args.labels else None
        report = prepare(
            args.source,
            src,
            out,
            family.prepare(profile.data),
            family=family.name,
            profile=profile.name,
            workers=args.workers,
            labels_file=labels,
        )
    except PodiumError as exc:
        sys.stderr.write(f"podium: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(
            "podium: prepare interrupted; finished files are kept, run it again to continue\n"
        )
        return 130
    sys.stdout.write(report.summary())
    print(f"podium: train from it: podium train {args.profile} --set data.path={report.out_dir}")
    return 0
