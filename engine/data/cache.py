"""Where podium keeps what it makes from data: demo corpora and prepared token files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir_for(configured: str = "") -> Path:
    """``configured`` (a profile's ``data.cache_dir``), ``$PODIUM_CACHE``,
    ``$XDG_CACHE_HOME/podium`` or ``~/.cache/podium``, in that order."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("PODIUM_CACHE"):
        return Path(os.environ["PODIUM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "podium"
    return Path.home() / ".cache" / "podium"
