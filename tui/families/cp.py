"""The compound-word (CP) family's touches on the generic dashboard views: how its conditioning
check (the ``cond`` epoch hook: ``cond/valence``, ``cond/arousal``, ``cond/both``) is titled."""

from __future__ import annotations

GROUP_TITLES = {"cond": "conditioning check · fraction of samples matching"}
GROUP_LABELS = {"cond": "condition"}
