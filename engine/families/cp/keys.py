"""Which emotion and key a request that leaves them blank gets: what the training data pairs.

Drawn uniformly from the 24 keys, a blank key asks for the other mode than the emotion half the
time (a Q1 piece in a minor key), and the sample follows the key token rather than the emotion:
an independent mode analysis of 64 samples found the asked valence in 69% of them, against 100%
when the key's mode agreed with the quadrant. So a blank value is drawn from the training
pieces' (emotion, key) pairs, counted when the data is prepared and kept in the data info every
checkpoint carries (``emotion_keys``). A checkpoint saved before that table existed draws a key
of the mode the quadrant's valence implies (major for Q1 and Q4, minor for Q2 and Q3), any tonic.

No torch here: drawing is a few numpy calls on the request's seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from podium.engine.families.cp import vocab as V

PAIRS = "emotion_keys"
"""The data info's table: emotion -> {key: training pieces}."""
POSITIVE = ("Q1", "Q4")
"""Quadrants of positive valence: major mode expected."""
_DRAW_STREAM = 0x6B6579
"""Seeds the draw apart from the token stream (PCG64([seed, this])): a drawn key samples the
same piece as the same key asked for."""


def pair_table(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """``{emotion: {key: count}}`` of (emotion, key) pairs, sorted, for the data info."""
    counts = Counter((e, k) for e, k in pairs if e in V.EMOTIONS and k in V.KEYS)
    table: dict[str, dict[str, int]] = {}
    for (emotion, key), n in sorted(counts.items()):
        table.setdefault(emotion, {})[key] = n
    return table


def read_table(data_info: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """The data info's pair table, keeping only known emotions, keys and positive counts
    ({} when the checkpoint has none)."""
    raw = (data_info or {}).get(PAIRS)
    if not isinstance(raw, Mapping):
        return {}
    table: dict[str, dict[str, int]] = {}
    for emotion, keys in raw.items():
        if emotion not in V.EMOTIONS or not isinstance(keys, Mapping):
            continue
        good = {k: int(n) for k, n in keys.items() if k in V.KEYS and isinstance(n, int) and n > 0}
        if good:
            table[emotion] = good
    return table


def mode_keys(emotion: str) -> tuple[str, ...]:
    """The twelve keys of the mode the quadrant's valence implies."""
    mode = "maj" if emotion in POSITIVE else "min"
    return tuple(f"{tonic}:{mode}" for tonic in V.PITCH_CLASSES)


def draw_conditioning(
    conditioning: Mapping[str, str], data_info: Mapping[str, Any] | None, seed: int
) -> dict[str, str]:
    """Checked conditioning (``check_conditioning``'s) with the blank emotion and key drawn.

    A blank emotion is drawn by how many training pieces have each (with the asked key, when
    one is asked; uniformly when the table says nothing), then a blank key from the keys the
    training pieces of that emotion are in, by count; without a table, a key of the emotion's
    mode. The same seed draws the same values.
    """
    emotion = str(conditioning.get("emotion", "") or "")
    key = str(conditioning.get("key", "") or "")
    if emotion and key:
        return {"emotion": emotion, "key": key}
    gen = np.random.Generator(np.random.PCG64([int(seed), _DRAW_STREAM]))
    table = read_table(data_info)
    if not emotion:
        weights = [
            (table.get(e, {}).get(key, 0) if key else sum(table.get(e, {}).values()))
            for e in V.EMOTIONS
        ]
        emotion = _pick(gen, V.EMOTIONS, weights)
    if not key:
        pairs = table.get(emotion, {})
        key = _pick(gen, tuple(pairs), list(pairs.values())) if pairs else ""
        key = key or _pick(gen, mode_keys(emotion), [1] * 12)
    return {"emotion": emotion, "key": key}


def _pick(gen: np.random.Generator, names: tuple[str, ...], weights: list[int]) -> str:
    """One of ``names`` by ``weights`` (uniformly when they are all zero)."""
    w = np.asarray(weights, dtype=np.float64)
    if not len(names):
        return ""
    p = w / w.sum() if w.sum() > 0 else np.full(len(names), 1.0 / len(names))
    return names[int(gen.choice(len(names), p=p))]
