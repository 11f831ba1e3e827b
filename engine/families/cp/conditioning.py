"""Does the model follow its conditioning? Sample each emotion quadrant, listen with numbers.

EMOPIA's quadrants are two binary axes: valence (Q1, Q4 positive; Q2, Q3 negative) and arousal
(Q1, Q2 high; Q3, Q4 low). A sample follows its valence when its estimated mode is major for a
positive quadrant and minor for a negative one, and its arousal when both its tempo and its note
density fall on the quadrant's side of the thresholds below. The loss can fall while the model
ignores the emotion token entirely; these fractions say whether it listens.

The trainer calls it every few epochs with the unwrapped model::

    metrics = conditioning_check(model, profile.section("generate"), samples_per_quadrant=4)
    # {"cond/valence": 0.75, "cond/arousal": 0.5, "cond/both": 0.375}

It is a pure function of the weights and the seed: all samples are drawn in one batch from
their own numpy generators (the global torch and numpy RNGs never move), the model's train/eval
mode is restored, and nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pretty_midi

from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.config import CHECK_GROUP
from podium.engine.families.cp.keys import POSITIVE
from podium.engine.families.cp.sampler import sample_batch
from podium.engine.families.cp.tokens import decode_tokens
from podium.engine.families.registry import SampleRequest
from podium.engine.music_stats import MusicStats, analyse
from podium.engine.series import hook_series

HIGH_AROUSAL = ("Q1", "Q2")
"""Quadrants of high arousal: fast and dense expected."""
TEMPO_SPLIT_BPM = 104.0
"""The demo corpus writes 120-160 bpm for high arousal and 60-88 for low: split in between."""
DENSITY_SPLIT = 5.0
"""Notes per second. The demo corpus measures 6.5-13.5 for high arousal and 2.5-4.1 for low
(8ths and 16ths against quarters and halves); split in between."""
METRICS = tuple(hook_series(CHECK_GROUP, name) for name in ("valence", "arousal", "both"))


def key_for(emotion: str, i: int) -> str:
    """The key prompt of sample ``i``: tonics spread round the circle of fifths, the mode the
    quadrant's valence implies (as in every training piece). A key of the other mode would ask
    for two things at once, and the score would measure which prompt token wins, not whether the
    model follows its emotion.
    """
    tonic = V.PITCH_CLASSES[(7 * i) % 12]
    return f"{tonic}:{'maj' if emotion in POSITIVE else 'min'}"


def judge(stats: MusicStats, emotion: str) -> tuple[bool, bool]:
    """(valence matches, arousal matches) of one analysed sample asked for ``emotion``.

    A sample without notes matches neither: its default key and tempo say nothing about the model.
    """
    if stats.notes == 0:
        return False, False
    valence = stats.mode == ("maj" if emotion in POSITIVE else "min")
    fast = stats.bpm >= TEMPO_SPLIT_BPM
    dense = stats.notes_per_s >= DENSITY_SPLIT
    high = emotion in HIGH_AROUSAL
    arousal = fast == high and dense == high
    return valence, arousal


def score(samples: Iterable[tuple[str, pretty_midi.PrettyMIDI | MusicStats]]) -> dict[str, float]:
    """Fractions of (emotion, piece) pairs matching valence, arousal and both (0.0 when empty)."""
    n = valence = arousal = both = 0
    for emotion, piece in samples:
        if emotion not in V.EMOTIONS:
            raise ValueError(f"emotion {emotion!r}: must be one of {', '.join(V.EMOTIONS)}")
        stats = piece if isinstance(piece, MusicStats) else analyse(piece)
        v, a = judge(stats, emotion)
        n += 1
        valence += v
        arousal += a
        both += v and a
    if n == 0:
        return dict.fromkeys(METRICS, 0.0)
    return dict(zip(METRICS, (valence / n, arousal / n, both / n), strict=True))


def conditioning_check(
    model: Any,
    gen_cfg: Any,
    *,
    samples_per_quadrant: int = 4,
    bars: int = 8,
    max_tokens: int = 256,
    seed: int = 0,
    device: Any = None,
) -> dict[str, float]:
    """Generate ``samples_per_quadrant`` short pieces per quadrant, analyse them, score them.

    Args:
        model: the bare CPTransformer (unwrap DDP/compile first); any mode, restored after.
        gen_cfg: the profile's GenerateConfig (temperatures and top-p per head).
        samples_per_quadrant: k; 4 quadrants x k samples run as one batch.
        bars: each sample stops after this many bars (the demo corpus's length: a piece's key
            shows in its cadence; the key finder gets the mode of 82% of the corpus's 4-bar
            openings right and of 100% of its whole 8-bar pieces)...
        max_tokens: ...or this many tokens, whichever comes first (also bounded by max_len).
        seed: sample i uses seed + i, so the same weights and seed give the same fractions.
            The key prompts are fixed (``key_for``): the mode agrees with the valence.
        device: where to run; default the model's.

    Returns:
        {"cond/valence": x, "cond/arousal": y, "cond/both": z}, each in [0, 1].

    Raises:
        GenerateError: the model produced NaN/inf logits, also after one retry.
    """
    if samples_per_quadrant < 1:
        raise ValueError(f"samples_per_quadrant: must be >= 1 (got {samples_per_quadrant})")
    quadrants = [q for q in V.EMOTIONS for _ in range(samples_per_quadrant)]
    requests = [
        SampleRequest(
            conditioning={"emotion": q, "key": key_for(q, i)},
            bars=bars,
            tokens=max_tokens,
            seed=seed + i,
        )
        for i, q in enumerate(quadrants)
    ]
    samples = sample_batch(model, gen_cfg, requests, device)
    return score((s.conditioning["emotion"], decode_tokens(s.tokens)) for s in samples)
