"""Writes ``thesaurus.json`` (the 216 nodes), deterministically: the same file on every run.

    python -m podium.engine.families.emotion_pipeline.make_thesaurus [OUT.json]

A dev script, kept beside the data it makes: the affect of each base emotion is placed by hand
on the valence/arousal/dominance axes (Russell's circumplex, Mehrabian's PAD), sub-emotions move
it by a fixed offset drawn from seed 16, and nuances scale it by intensity. The musical
attributes then follow by rule: mode from valence (brighter modes for pleasant nodes), tempo and
density from arousal, dynamics from intensity and arousal, articulation and groove from arousal,
valence and the base emotion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from podium.engine.families.emotion_pipeline.thesaurus import (
    BASES,
    DYNAMICS,
    MAX_DENSITY,
    NUANCES,
)

SUBS = {
    "joy": ("elation", "contentment", "pride", "amusement", "love", "hope"),
    "sadness": ("grief", "loneliness", "melancholy", "disappointment", "regret", "despair"),
    "anger": ("rage", "frustration", "irritation", "resentment", "indignation", "contempt"),
    "fear": ("terror", "anxiety", "dread", "nervousness", "insecurity", "panic"),
    "surprise": ("amazement", "confusion", "awe", "shock", "curiosity", "wonder"),
    "disgust": ("revulsion", "aversion", "disdain", "loathing", "distaste", "boredom"),
}
BASE_AFFECT = {  # valence, arousal, dominance
    "joy": (0.8, 0.6, 0.5),
    "sadness": (-0.7, 0.2, -0.5),
    "anger": (-0.6, 0.85, 0.6),
    "fear": (-0.7, 0.75, -0.7),
    "surprise": (0.3, 0.8, -0.1),
    "disgust": (-0.6, 0.45, 0.3),
}


def _mode(v: float, a: float) -> str:
    if v >= 0.45:
        return "lydian" if a >= 0.7 else "major"
    if v >= 0.1:
        return "mixolydian"
    if v >= -0.2:
        return "dorian"
    return "minor" if v >= -0.5 else "phrygian"


def _groove(base: str, v: float, a: float) -> str:
    if a < 0.3:
        return "halftime"
    if base == "anger" or a >= 0.85:
        return "driving"
    if base == "fear":
        return "syncopated"
    if base == "disgust":
        return "shuffle"
    return "swing" if v > 0.3 and a < 0.65 else "straight"


def _articulation(v: float, a: float) -> str:
    if a < 0.35:
        return "legato"
    if a < 0.55:
        return "tenuto"
    return "staccato" if v > 0 else "marcato"


def nodes() -> list[dict[str, Any]]:
    rng = np.random.Generator(np.random.PCG64(16))
    out: list[dict[str, Any]] = []
    marks = tuple(DYNAMICS)
    for base in BASES:
        bv, ba, bd = BASE_AFFECT[base]
        for s, sub in enumerate(SUBS[base]):
            dv, da, dd = rng.uniform(-0.15, 0.15, size=3)
            for k, nuance in enumerate(NUANCES):
                i = (k + 1) / len(NUANCES)
                v = float(np.clip((bv + dv) * (0.4 + 0.6 * i), -1, 1))
                a = float(np.clip(ba + da + (i - 0.5) * 0.4, 0, 1))
                d = float(np.clip((bd + dd) * (0.5 + 0.5 * i), -1, 1))
                centre = 60 + 110 * a
                loud = min(len(marks) - 1, int((0.6 * i + 0.4 * a) * len(marks)))
                related = [f"{base}.{sub}.{NUANCES[j]}" for j in (k - 1, k + 1) if 0 <= j < 6]
                related += [f"{base}.{SUBS[base][(s + j) % 6]}.{nuance}" for j in (-1, 1)]
                out.append(
                    {
                        "id": f"{base}.{sub}.{nuance}",
                        "base": base,
                        "sub": sub,
                        "nuance": nuance,
                        "valence": round(v, 3),
                        "arousal": round(a, 3),
                        "dominance": round(d, 3),
                        "intensity": round(i, 3),
                        "mode": _mode(v, a),
                        "tempo_range": [int(centre - 8), int(centre + 8)],
                        "dynamics": marks[loud],
                        "articulation": _articulation(v, a),
                        "note_density": float(
                            np.clip(round((0.5 + 3.5 * a) * 4) / 4, 0.5, MAX_DENSITY)
                        ),
                        "groove": _groove(base, v, a),
                        "related": related,
                    }
                )
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("thesaurus.json")
    out.write_text(json.dumps({"nodes": nodes()}, indent=1) + "\n", encoding="utf-8")
    print(f"{out}: {len(nodes())} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
