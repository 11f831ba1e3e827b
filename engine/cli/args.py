"""Argument types shared by the subcommands: a bad value is one line naming the rule (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def whole_number(text: str) -> int:
    """An integer that fits in 64 bits (a seed beyond that overflows torch's generator)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must fit in 64 bits (-2**63 .. 2**63-1), got {value}")
    return value


def float_where(
    ok: Callable[[float], bool], rule: str, what: str = "a number"
) -> Callable[[str], float]:
    """A float type that must pass ``ok``; ``rule`` says the range ("must be in (0, 1]")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return parse


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of ``train`` that shape a new run (``podium queue`` takes them too);
    ``run_options_argv`` writes them back as argv."""
    p.add_argument(
        "--max-steps",
        type=positive_int,
        metavar="N",
        help="end after N optimizer steps (schedule unchanged)",
    )
    p.add_argument(
        "--max-epochs",
        type=positive_int,
        metavar="N",
        help="end after N epochs (schedule unchanged)",
    )
    p.add_argument("--seed", type=whole_number, metavar="N", help="same as --set train.seed=N")
    p.add_argument("--name", metavar="NAME", help="run id (default: profile name and start time)")
    p.add_argument(
        "--share-group",
        metavar="GROUP",
        help="let GROUP read the run (default: the lab's [runs] share_group, else only you)",
    )
    add_overrides_option(p, "override a profile key, e.g. train.lr=3e-4")


def add_overrides_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.overrides`` (what ``parse_overrides``
    reads): one declaration for every command that takes profile overrides."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )


def run_options_argv(args: argparse.Namespace) -> list[str]:
    """The options of ``train`` that shape a run (limits, seed, ``--set``, sharing group) as
    argv again: for a child ``podium train`` that must start the run the user asked for."""
    argv: list[str] = []
    for flag, value in (
        ("--max-steps", args.max_steps),
        ("--max-epochs", args.max_epochs),
        ("--seed", args.seed),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for item in args.overrides:
        argv += ["--set", item]
    if args.share_group:
        argv += ["--share-group", args.share_group]
    return argv
