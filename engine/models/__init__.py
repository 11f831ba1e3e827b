"""Model families, registered by name (see ``registry.py``)."""

from __future__ import annotations

from engine.models import cp_family  # noqa: F401  (registers "cp")
from engine.models.registry import FAMILIES, Family, get_family, register

__all__ = ["FAMILIES", "Family", "get_family", "register"]
