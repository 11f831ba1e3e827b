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
