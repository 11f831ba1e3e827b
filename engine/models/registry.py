"""Model families by name.

A family bundles what differs between model zoos: its model config, its data config, the names of
its output heads, and how to build its data and its model. Everything else (the loop, checkpoints,
the store, the dashboard) is shared, which is why a family's model must return a mapping of named
losses from ``forward(batch)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import ProfileError


def _no_check(model_cfg: Any, data_cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model_config: type
    """Dataclass of the profile's [model] table."""
    data_config: type
    """Dataclass of the profile's [data] table."""
    heads: tuple[str, ...]
    """Names of the losses ``forward`` returns, in display order."""
    build_data: Callable[..., Any]
    """``build_data(data_cfg, log=...) -> bundle`` with ``train``, ``val`` datasets."""
    build_model: Callable[..., Any]
    """``build_model(model_cfg, bundle) -> nn.Module``."""
    check: Callable[[Any, Any], None] = _no_check
    """Cross-section checks; raise ``ValueError("section.field: message")``."""


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ProfileError(
            f"unknown model family {name!r} (known: {', '.join(FAMILIES)})"
        ) from None
