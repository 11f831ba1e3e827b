"""The validation split of a family's own data: by a hash of each piece's id."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def split_val_ids(ids: Sequence[str], val_fraction: float) -> list[str]:
    """The validation piece ids (in ``ids``' order): those whose sha1 falls below
    ``val_fraction``.

    A hash rather than order or an RNG keeps a piece on the same side when pieces are added or
    the list is re-ordered. With >= 2 pieces both sides are non-empty: the lowest hash goes to
    validation, the highest to training, if the fraction alone left a side empty.
    """
    h = {pid: int(hashlib.sha1(pid.encode()).hexdigest()[:13], 16) / 16**13 for pid in ids}
    val = [pid for pid in ids if h[pid] < val_fraction]
    if len(ids) >= 2:
        if not val:
            val = [min(ids, key=lambda p: (h[p], p))]
        if len(val) == len(ids):
            top = max(ids, key=lambda p: (h[p], p))
            val = [p for p in val if p != top]
    return val
