"""``podium import emopia CHECKPOINT --dictionary dictionary.pkl``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser("import", help="import a released checkpoint")


def run(args: argparse.Namespace) -> int:
    return 2
