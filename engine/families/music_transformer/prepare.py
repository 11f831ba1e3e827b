"""The Music Transformer's tokeniser as ``podium prepare`` uses it (the family contract's
``Tokenizer``).

It wraps ``tokens.encode_midi`` and ends each piece with END, exactly what ``podium train`` stores
for a MIDI folder, so a prepared directory and the family's own cache give the same tokens. The
conditioning tokens are not part of them: which token a sentiment or genre becomes depends on
the profile's ``[data.conditioning]`` tables, so ``data`` adds them when it builds the datasets
from each piece's labels (carried in the prepared ``pieces-*.jsonl``), and a profile may change
its tables without preparing again. Tokens are stored as int16 (every event id is < 390).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pretty_midi

from podium.engine.families.music_transformer import tokens as T

TOKENIZER_VERSION = 1
"""Bumped when ``encode_midi``'s output changes, so prepared shards are redone."""
FAMILY_NAME = "music_transformer"


@dataclass(frozen=True)
class MTTokenizer:
    """Event ids (T,) int16 of one piece, END last."""

    min_tokens: int = 2
    """One event and END: a piece with notes always has more (a note-on and its note-off)."""
    max_tokens: int | None = None
    """No limit: training crops a piece of any length, and ``podium train`` on a MIDI folder
    keeps every length too."""
    keep_drums: bool = False
    """``encode_midi`` merges pitched instruments into one piano stream; drums have no place."""
    label_fields: tuple[str, ...] = ()
    """None: ``encode`` reads no label (sentiment and genre become tokens when the datasets are
    built, from the labels every prepared piece carries), so relabelling a corpus re-uses its
    shards instead of tokenising every file again."""

    def encode(self, midi: pretty_midi.PrettyMIDI, labels: Mapping[str, str]) -> np.ndarray:
        return np.append(T.encode_midi(midi), T.END).astype(np.int16)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": FAMILY_NAME,
            "tokenizer": TOKENIZER_VERSION,
            "vocab": T.N_EVENTS,
            "min_tokens": self.min_tokens,
            "max_tokens": self.max_tokens,
            "keep_drums": self.keep_drums,
        }

    def vocabulary(self) -> dict[str, Any]:
        """The event id ranges (first, last) and the grid; conditioning tokens follow the 390
        events in the profile's table order (``data.ConditionTokens``)."""
        return {
            "family": FAMILY_NAME,
            "events": {
                "note_on": [T.NOTE_ON, T.NOTE_OFF - 1],
                "note_off": [T.NOTE_OFF, T.TIME_SHIFT - 1],
                "time_shift": [T.TIME_SHIFT, T.VELOCITY - 1],
                "velocity": [T.VELOCITY, T.END - 1],
                "end": [T.END, T.END],
                "pad": [T.PAD, T.PAD],
            },
            "n_events": T.N_EVENTS,
            "step_seconds": T.STEP_S,
            "max_shift_steps": T.MAX_SHIFT,
            "velocity_bins": T.VELOCITY_BINS,
        }
