"""The CP family's tokeniser as ``podium prepare`` uses it (the family contract's ``Tokenizer``).

It wraps ``tokens.encode_midi``: the emotion comes from the labels (``Q1`` .. ``Q4``; the source
fills it from an EMOPIA file name), the key from the labels when given (EMOPIA's
``key_mode_tempo.csv``, a labels file) or else from the notes (Krumhansl-Schmuckler), which is
what ``podium train`` does with an unprepared folder, so both give the same tokens. Tokens are
stored as int16 (every CP index is < 256) and widened when a dataset is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pretty_midi

from podium.engine.data.midi_io import estimate_key, piano_notes
from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.tokens import encode_midi

TOKENIZER_VERSION = 1
"""Bumped when ``encode_midi``'s output changes, so prepared shards are redone."""


@dataclass(frozen=True)
class CPTokenizer:
    """Compound-word tokens (T, 9) int16 for one piece and its labels."""

    min_tokens: int = 4
    """Emotion, Bar, one Beat and EOS: fewer is no music."""
    max_tokens: int | None = 500_000
    """Far beyond any real piece (EMOPIA's longest has ~2k); more means a broken file."""
    keep_drums: bool = False
    """CP merges pitched instruments into one piano; drums have no place in it."""
    label_fields: tuple[str, ...] = ("emotion", "key", "key_mode")

    def encode(self, midi: pretty_midi.PrettyMIDI, labels: Mapping[str, str]) -> np.ndarray:
        emotion = str(labels.get("emotion", "")).strip().upper()
        if emotion not in V.EMOTIONS:
            raise DataError(
                f"emotion {labels.get('emotion')!r} is not Q1..Q4 (add it to the labels file, or "
                "start the file name with Q1_ .. Q4_)"
                if labels.get("emotion")
                else "no emotion label (add it to the labels file, or start the file name with "
                "Q1_ .. Q4_)"
            )
        key = None
        if labels.get("key"):
            key = V.parse_key(str(labels["key"]), mode_hint=str(labels.get("key_mode", "")))
            if key is None:
                raise DataError(f"key {labels['key']!r} is not a key like 'C:maj' or 'A:min'")
        if key is None:
            key = estimate_key(piano_notes(midi))
        return encode_midi(midi, emotion=emotion, key=key).astype(np.int16)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": "cp",
            "tokenizer": TOKENIZER_VERSION,
            "vocab": V.VOCAB_VERSION,
            "min_tokens": self.min_tokens,
            "max_tokens": self.max_tokens,
            "keep_drums": self.keep_drums,
        }

    def vocabulary(self) -> dict[str, Any]:
        return V.to_json()
