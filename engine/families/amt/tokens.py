"""MIDI <-> AMT event tokens: TIME_ON / NOTE / DURATION triplets on a grid of time ticks.

A piece is ``START, SEMANTIC_k, (TIME_ON+ NOTE DURATION)*, END``. Each note is one or more
TIME_ON tokens (their values add up to the ticks since the previous note's onset; a gap longer
than the largest TIME_ON step takes several), its NOTE (the MIDI pitch) and its DURATION (ticks,
1 .. the largest step, longer notes are cut to it). Notes of every non-drum instrument are read as
one piano part, ordered by onset then pitch; velocity is not kept (the report's events have none).

The layout of the ids depends only on (``vocab_size``, ``resolution``, ``max_semantic``), the
``AMTVocab``; ``encode_midi`` and ``decode_tokens`` are pure functions of it, so a generic
``prepare`` can call them as a tokeniser.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pretty_midi

from podium.engine.families.amt.config import NOTE_TOKENS, SPECIALS, DataConfig

PAD, UNK, START, END = range(len(SPECIALS))
DECODE_VELOCITY = 80
"""The velocity decoded notes get (events carry none)."""


@dataclass(frozen=True)
class AMTVocab:
    """Where each kind of token sits in the ids ``0 .. vocab_size - 1``."""

    vocab_size: int = 512
    resolution: int = 100
    """Ticks per second."""
    max_semantic: int = 8

    @property
    def semantic_base(self) -> int:
        return len(SPECIALS)

    @property
    def note_base(self) -> int:
        return self.semantic_base + self.max_semantic

    @property
    def time_base(self) -> int:
        return self.note_base + NOTE_TOKENS

    @property
    def n_time(self) -> int:
        """TIME_ON values 0 .. n_time - 1 (ticks)."""
        return (self.vocab_size - self.time_base) // 2

    @property
    def duration_base(self) -> int:
        return self.time_base + self.n_time

    @property
    def n_duration(self) -> int:
        """DURATION values 1 .. n_duration (ticks)."""
        return self.vocab_size - self.duration_base

    def semantic(self, k: int) -> int:
        """The id of SEMANTIC_TOKEN_k."""
        if not 0 <= k < self.max_semantic:
            raise ValueError(f"semantic token {k} out of range 0..{self.max_semantic - 1}")
        return self.semantic_base + k

    def kind(self, token: int) -> str:
        """ "special", "semantic", "note", "time" or "duration"."""
        if token < self.semantic_base:
            return "special"
        if token < self.note_base:
            return "semantic"
        if token < self.time_base:
            return "note"
        if token < self.duration_base:
            return "time"
        return "duration"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> AMTVocab:
        data = dict(data or {})
        return cls(
            **{k: int(data[k]) for k in ("vocab_size", "resolution", "max_semantic") if k in data}
        )


def vocab_of(cfg: DataConfig) -> AMTVocab:
    """The vocabulary a profile's ``[data]`` table sets."""
    return AMTVocab(
        vocab_size=cfg.vocab_size, resolution=cfg.resolution, max_semantic=cfg.max_semantic
    )


def encode_midi(
    midi: pretty_midi.PrettyMIDI, vocab: AMTVocab, *, semantic: int | None = None
) -> np.ndarray:
    """The piece as int64 token ids: START, SEMANTIC_k (when ``semantic`` is given), the note
    triplets, END. Onsets and durations are rounded to the tick grid."""
    notes = [
        (round(n.start * vocab.resolution), n.pitch, round(n.end * vocab.resolution))
        for inst in midi.instruments
        if not inst.is_drum
        for n in inst.notes
    ]
    notes.sort()
    out = [START]
    if semantic is not None:
        out.append(vocab.semantic(semantic))
    step = vocab.n_time - 1  # the largest TIME_ON value
    now = 0
    for onset, pitch, offset in notes:
        gap = onset - now
        while gap > step:
            out.append(vocab.time_base + step)
            gap -= step
        out.append(vocab.time_base + gap)
        out.append(vocab.note_base + pitch)
        duration = min(max(offset - onset, 1), vocab.n_duration)
        out.append(vocab.duration_base + duration - 1)
        now = onset
    out.append(END)
    return np.asarray(out, dtype=np.int64)


def decode_tokens(tokens: np.ndarray | list[int], vocab: AMTVocab) -> pretty_midi.PrettyMIDI:
    """Token ids back to one piano part. Tolerant of any sequence: specials and semantic tokens
    are skipped, a NOTE without a DURATION after it lasts one tick, a stray DURATION is
    ignored, and decoding stops at END."""
    midi = pretty_midi.PrettyMIDI(resolution=480)
    piano = pretty_midi.Instrument(program=0, name="piano")
    now = 0
    pending: int | None = None  # a NOTE waiting for its DURATION

    def flush(duration: int) -> None:
        start = now / vocab.resolution
        piano.notes.append(
            pretty_midi.Note(
                velocity=DECODE_VELOCITY,
                pitch=pending,
                start=start,
                end=start + duration / vocab.resolution,
            )
        )

    for t in np.asarray(tokens, dtype=np.int64).tolist():
        if t == END:
            break
        kind = vocab.kind(t)
        if kind == "time":
            if pending is not None:
                flush(1)
                pending = None
            now += t - vocab.time_base
        elif kind == "note":
            if pending is not None:
                flush(1)
            pending = t - vocab.note_base
        elif kind == "duration" and pending is not None:
            flush(t - vocab.duration_base + 1)
            pending = None
    if pending is not None:
        flush(1)
    midi.instruments.append(piano)
    return midi


def onset_seconds(tokens: np.ndarray, vocab: AMTVocab) -> float:
    """The time of the last onset the tokens reach (the sum of their TIME_ON values), in s."""
    t = np.asarray(tokens, dtype=np.int64)
    time = t[(t >= vocab.time_base) & (t < vocab.duration_base)] - vocab.time_base
    return float(time.sum()) / vocab.resolution
