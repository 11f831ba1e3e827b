"""The row every benchmark hands the suite (``bench/run.py``): two figures measured side by side
in one run, their ratio, the target it is held to and the command that reproduces it.

A row is a plain dict so that it goes to JSON as it is and two reports from two commits can be
compared by ``name`` (``run.py --compare A.json B.json``). ``ratio`` is ``a / b``, or the
median of paired ratios where a benchmark measures both sides in rounds (``paired_ratios``);
each benchmark picks the order so the ratio reads as the claim it checks (``engine / bare <=
1.03``, ``recompute / cached >= 10``).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]
"""{name, a, b, a_is, b_is, ratio, unit, target, ok, command, note}; a, b, ratio None when skipped."""

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] / b[i]`` for figures measured in rounds, each ``a`` beside its ``b``: their
    median cancels drift between rounds, which the ratio of two medians keeps."""
    return [x / y for x, y in zip(a, b, strict=True)]


def meets(ratio: float, target: str) -> bool:
    """Whether ``ratio`` meets ``target``, written as ``">= 10"`` or ``"<= 1.03"``."""
    op, _, value = target.partition(" ")
    if op not in _OPS:
        raise ValueError(f"target {target!r}: must be '<op> <number>' with op one of {list(_OPS)}")
    return bool(_OPS[op](ratio, float(value)))


def row(
    name: str,
    a: float,
    b: float,
    *,
    a_is: str,
    b_is: str,
    unit: str,
    command: str,
    target: str | None = None,
    note: str = "",
    ratio: float | None = None,
    **extra: Any,
) -> Row:
    """A measured row: ``a`` and ``b`` in ``unit``, ratio ``a / b``, ``ok`` against ``target``.

    ``ratio``: measured otherwise than from ``a`` and ``b`` (the median of ``paired_ratios``)."""
    if ratio is None:
        ratio = a / b if b else float("inf")
    return {
        "name": name,
        "a": a,
        "b": b,
        "a_is": a_is,
        "b_is": b_is,
        "ratio": ratio,
        "unit": unit,
        "target": target,
        "ok": None if target is None else meets(ratio, target),
        "command": command,
        "note": note,
        **extra,
    }


def skipped(name: str, why: str, *, command: str) -> Row:
    """A row that could not be measured here (a backend not importable, no GPU): said, not hidden."""
    return {
        "name": name,
        "a": None,
        "b": None,
        "a_is": "",
        "b_is": "",
        "ratio": None,
        "unit": "",
        "target": None,
        "ok": None,
        "command": command,
        "note": why,
    }
