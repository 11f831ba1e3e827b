"""The compound-word (CP) family's touches on the generic dashboard views: the label of its
conditioning check (the ``cond`` epoch hook, titled by the hook itself) in the numbers panel."""

from __future__ import annotations

GROUP_LABELS = {"cond": "condition"}
