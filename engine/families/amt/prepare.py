"""The ``amt`` family's tokeniser as ``podium prepare`` uses it (the family contract's
``Tokenizer``).

It wraps ``tokens.encode_midi`` without the semantic token: a piece's SEMANTIC_k is its text's
k-means cluster, and the clustering is fitted over the whole corpus, so no single file can know
it. ``podium prepare`` stores each piece's events (``START, (TIME_ON+ NOTE DURATION)*, END``) and
its labels, the text among them; ``data.build_datasets`` fits the clustering over the prepared
pieces' texts, as it does for a MIDI folder, and puts SEMANTIC_k after START. A piece without the
text is refused ("unsupported"), as the MIDI-folder path skips a file without a label row. Tokens
are stored as int32, like the family's own cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pretty_midi

from podium.engine.data.prepare.labels import ALIASES
from podium.engine.errors import DataError
from podium.engine.families.amt.config import SPECIALS, DataConfig
from podium.engine.families.amt.tokens import AMTVocab, encode_midi, vocab_of

TOKENIZER_VERSION = 1
"""Bumped when ``encode_midi``'s output changes, so prepared shards are redone."""
SETTINGS = ("family", "tokenizer", "vocab", "text_field")
"""The fingerprint entries a prepared directory must match to be read by a profile (its length
limits may differ: they only decide which pieces were kept)."""


@dataclass(frozen=True)
class AMTTokenizer:
    """AMT events (T,) int32 of one piece, its semantic token left for the build to add."""

    vocab: AMTVocab = field(default_factory=AMTVocab)
    """The id layout (vocabulary size, ticks per second, semantic slots) the events use."""
    text_field: str = "description"
    """The label holding the piece's text description (``data.text_column``)."""
    min_tokens: int = 5
    """START, one note's TIME_ON, NOTE and DURATION, END: fewer is no music."""
    max_tokens: int | None = 1_500_000
    """Half a million notes: far beyond any real piece; more means a broken file."""
    keep_drums: bool = False
    """Events are one piano part; drum tracks are not read (``encode_midi`` skips them too)."""

    @property
    def label_fields(self) -> tuple[str, ...]:
        return (self.text_field,)

    def encode(self, midi: pretty_midi.PrettyMIDI, labels: Mapping[str, str]) -> np.ndarray:
        if not str(labels.get(self.text_field, "")).strip():
            raise DataError(
                f"no {self.text_field!r} label (the text its semantic token is fitted on; add "
                "it to the labels file)"
            )
        return encode_midi(midi, self.vocab).astype(np.int32)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": "amt",
            "tokenizer": TOKENIZER_VERSION,
            "vocab": self.vocab.to_dict(),
            "text_field": self.text_field,
            "min_tokens": self.min_tokens,
            "max_tokens": self.max_tokens,
            "keep_drums": self.keep_drums,
        }

    def vocabulary(self) -> dict[str, Any]:
        v = self.vocab
        return {
            **v.to_dict(),
            "specials": list(SPECIALS),
            "semantic_base": v.semantic_base,
            "note_base": v.note_base,
            "time_base": v.time_base,
            "n_time": v.n_time,
            "duration_base": v.duration_base,
            "n_duration": v.n_duration,
        }


def tokenizer_of(cfg: DataConfig) -> AMTTokenizer:
    """The tokeniser of a profile's ``[data]`` table (its vocabulary and text column)."""
    return AMTTokenizer(vocab=vocab_of(cfg), text_field=text_label(cfg), keep_drums=cfg.keep_drums)


def text_label(cfg: DataConfig) -> str:
    """The name ``podium prepare``'s labels reader gives ``data.text_column`` (it lower-cases
    column names and maps a few aliases)."""
    name = cfg.text_column.strip().lower()
    return ALIASES.get(name, name)
