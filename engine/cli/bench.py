"""``podium bench [--quick] [--json OUT] [--only SUITE...] [--compare A.json B.json]``: the
benchmark suite of a podium checkout.

The suite is ``bench/run.py`` at the top of the repository, next to ``engine/``: benchmarks are
not part of the installed package (they need miditok, transformers, the demo profiles and the
other scripts of ``bench/``), so this command finds the checkout the package was installed from
(``make`` installs it editable) and runs the suite there with this interpreter, every argument
handed on. Where there is no checkout, it says so in one line (exit 2).

``podium.engine.cli.main`` wires it: ``add_parser(sub)`` for the help listing, ``run(argv)``
before argparse (the suite parses its own flags).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podium.engine.errors import PodiumError

BENCH_DIR_ENV = "PODIUM_BENCH_DIR"
"""A bench/ folder to use instead of the checkout's (a suite kept elsewhere, or none: tests)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to ``podium``'s sub-parsers (for ``podium --help``; ``run`` parses)."""
    return subparsers.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark suite of a checkout (bench/run.py): one table of ratios",
    )


def suite_path(environ: dict[str, str] | None = None) -> Path:
    """``bench/run.py`` of the checkout this package lives in (or of ``$PODIUM_BENCH_DIR``)."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(BENCH_DIR_ENV):
        candidates = [Path(environ[BENCH_DIR_ENV])]
    else:
        import podium.engine

        # engine/ is podium.engine in a checkout: bench/ sits beside it. Then the working
        # directory, for a checkout next to a non-editable install.
        candidates = [Path(podium.engine.__file__).resolve().parents[1] / "bench"]
        candidates.append(Path.cwd() / "bench")
    for folder in candidates:
        if (folder / "run.py").is_file():
            return folder / "run.py"
    looked = ", ".join(str(c / "run.py") for c in dict.fromkeys(candidates))
    raise PodiumError(
        f"bench: no benchmark suite here (looked for {looked}); the suite ships with a "
        "checkout of podium, not with the installed package: run it from a checkout"
    )


def run(argv: Sequence[str]) -> int:
    """Run the suite with ``argv``; its exit status (2 for its own bad input, one line)."""
    script = suite_path()
    try:
        # The caller's working directory: --json and --compare paths are theirs.
        return subprocess.run([sys.executable, str(script), *argv]).returncode
    except KeyboardInterrupt:
        return 130
