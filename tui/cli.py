"""The ``podium`` console script.

Commands that need no terminal UI are handled by ``engine.cli``; this module is where the
dashboard will be attached (``podium`` with no arguments, ``podium train PROFILE`` without
``--headless``). Until the dashboard exists, those train headless.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine import cli as engine_cli


def main(argv: Sequence[str] | None = None) -> int:
    return engine_cli.main(argv, dashboard=None)


if __name__ == "__main__":
    sys.exit(main())
