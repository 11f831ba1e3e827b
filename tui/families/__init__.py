"""A family's own dashboard touches, when it wants any: ``podium.tui.families.<name>`` is looked
up by the run's family name and is optional; every family gets the generic views.

Such a module may define ``GROUP_LABELS``: epoch-hook group -> its label in the training
numbers (``{"cond": "condition"}``). A group's plot is titled by the family's own
``EpochHook.title`` when the family imports (``get_family``), else generically ("<group> · every
few epochs"). A family given by a dotted module path (``mylab.families.gru``) has no such module.
"""

from __future__ import annotations

import functools
import importlib
import re
from types import ModuleType


@functools.cache
def view_module(family: str) -> ModuleType | None:
    """``podium.tui.families.<family>``, or None when there is none (or the name is dotted)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", family or ""):
        return None
    name = f"{__name__}.{family}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


@functools.cache
def hook_titles(family: str) -> dict[str, str]:
    """The family's epoch hooks' titles by group ({} when the family does not import)."""
    from podium.engine.families.registry import get_family

    if not family:
        return {}
    try:
        spec = get_family(family)
    except Exception:  # unknown or broken here: a view never fails for a title
        return {}
    return {h.group: h.title for h in spec.epoch_hooks}


def group_title(family: str, group: str) -> str:
    """The plot title of an epoch-hook group (without the key hint)."""
    return hook_titles(family).get(group) or f"{group} · every few epochs"


def group_label(family: str, group: str) -> str:
    """An epoch-hook group's label in the training numbers panel."""
    labels = getattr(view_module(family), "GROUP_LABELS", {})
    return labels.get(group) or group
