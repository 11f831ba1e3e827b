"""The fixed compound-word (CP) dictionary shared by every dataset and checkpoint.

The dictionary is not learned from data: every token field has a closed, hand-written list of
names, so a checkpoint trained on the demo corpus and one trained on EMOPIA agree on what index 37
of the pitch head means, and the model's parameter count is known before any data exists. The
sizes follow EMOPIA (Hung et al. 2021), which puts the full-size CP transformer at ~39M parameters.

Index 0 of every field is ``CONTI`` ("not applicable / continue", EMOPIA's CONTI or 0). It is a real
class that the model predicts: a Note token's tempo is CONTI, a Metrical token's pitch is CONTI.
The ``type`` field is the exception: its index 0 is ``EOS``.

Field by field (index: name):

* ``tempo`` (56): 0 CONTI, then ``Tempo_32`` .. ``Tempo_248`` in steps of 4 bpm (55 bins).
* ``chord`` (135): 0 CONTI, 1 ``N.C.`` (nothing sounds), 2..133 ``<root>:<quality>`` for the 12
  roots (sharps) x 11 qualities ``M m o + sus2 sus4 7 M7 m7 o7 /o7``, 134 ``Other`` (notes sound but
  name no chord: a single pitch class, or no template fits).
* ``bar_beat`` (18): 0 CONTI, 1 ``Bar``, 2..17 ``Beat_0`` .. ``Beat_15`` (16th positions in 4/4).
* ``type`` (4): 0 ``EOS``, 1 ``Emotion``, 2 ``Metrical``, 3 ``Note``.
* ``pitch`` (87): 0 CONTI, then ``Pitch_22`` .. ``Pitch_107`` (MIDI numbers).
* ``duration`` (18): 0 CONTI, then ``Duration_1`` .. ``Duration_16`` and ``Duration_32``, in 16th
  notes. 32 (two 4/4 bars) catches held final chords; 17..24 sixteenths round to 16, longer to 32.
* ``velocity`` (25): 0 CONTI, then ``Velocity_12`` .. ``Velocity_127`` in steps of 5 (24 bins).
* ``emotion`` (5): 0 CONTI, then ``Q1`` .. ``Q4`` (Russell's quadrants, as EMOPIA labels them).
* ``key`` (25): 0 CONTI, then ``C:maj`` .. ``B:maj``, ``C:min`` .. ``B:min`` (sharps only).

Use::

    from podium.engine.families.cp import vocab as cp_vocab
    cp_vocab.vocab_sizes()["pitch"]          # 87
    cp_vocab.index("key", "F#:min")          # 19
    cp_vocab.save(prepared_dir / "dictionary.json")
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.engine.data.music import EMOTIONS, KEYS, PITCH_CLASSES

FIELDS = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion", "key")
"""The CP token's fields, in the order of the last axis of a token array."""

VOCAB_VERSION = 1
"""Bumped whenever a name list changes, so prepared data made with an older dictionary is redone."""

CONTI = "CONTI"

# -- numeric bins ----------------------------------------------------------------------------

TEMPO_BINS = tuple(range(32, 249, 4))
"""Tempo bins in bpm (55 of them); token index = bin position + 1."""
PITCH_MIN, PITCH_MAX = 22, 107
"""Inclusive MIDI pitch range of the pitch field; notes outside are folded in by octaves."""
DURATION_BINS = (*range(1, 17), 32)
"""Note duration bins in 16th notes (17 of them)."""
VELOCITY_BINS = tuple(range(12, 128, 5))
"""MIDI velocity bins (24 of them, 12 .. 127)."""

# -- names -----------------------------------------------------------------------------------

CHORD_QUALITIES = ("M", "m", "o", "+", "sus2", "sus4", "7", "M7", "m7", "o7", "/o7")
"""Chord qualities: major, minor, diminished, augmented, suspended 2nd/4th, dominant 7th, major
7th, minor 7th, diminished 7th, half-diminished 7th."""
CHORD_INTERVALS: dict[str, tuple[int, ...]] = {
    "M": (0, 4, 7),
    "m": (0, 3, 7),
    "o": (0, 3, 6),
    "+": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7": (0, 4, 7, 10),
    "M7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "o7": (0, 3, 6, 9),
    "/o7": (0, 3, 6, 10),
}
"""Semitones above the root of each quality, used for chord templates."""
NO_CHORD = "N.C."
OTHER_CHORD = "Other"

TYPES = ("EOS", "Emotion", "Metrical", "Note")
"""Token types; their indices (EOS 0, Emotion 1, Metrical 2, Note 3) are part of the format."""
TYPE_EOS, TYPE_EMOTION, TYPE_METRICAL, TYPE_NOTE = range(4)

BAR = 1
"""bar_beat index of the Bar token; Beat_i is ``BEAT_OFFSET + i``."""
BEAT_OFFSET = 2
POSITIONS_PER_BAR = 16


def _names() -> dict[str, tuple[str, ...]]:
    chords = tuple(f"{root}:{q}" for root in PITCH_CLASSES for q in CHORD_QUALITIES)
    return {
        "tempo": (CONTI, *(f"Tempo_{t}" for t in TEMPO_BINS)),
        "chord": (CONTI, NO_CHORD, *chords, OTHER_CHORD),
        "bar_beat": (CONTI, "Bar", *(f"Beat_{i}" for i in range(POSITIONS_PER_BAR))),
        "type": TYPES,
        "pitch": (CONTI, *(f"Pitch_{p}" for p in range(PITCH_MIN, PITCH_MAX + 1))),
        "duration": (CONTI, *(f"Duration_{d}" for d in DURATION_BINS)),
        "velocity": (CONTI, *(f"Velocity_{v}" for v in VELOCITY_BINS)),
        "emotion": (CONTI, *EMOTIONS),
        "key": (CONTI, *KEYS),
    }


@dataclass(frozen=True)
class CPVocab:
    """A CP dictionary: the token names of each field, in FIELDS order.

    ``CPVocab.default()`` is the one podium uses; ``load`` reads a saved one back so that prepared
    data and checkpoints can be checked against it.
    """

    names: dict[str, tuple[str, ...]]
    """Field -> token names; a name's position is its index."""
    version: int = VOCAB_VERSION
    """Format version the names belong to."""

    def __post_init__(self) -> None:
        if tuple(self.names) != FIELDS:
            raise ValueError(
                f"names: fields must be exactly {FIELDS} in order, got {tuple(self.names)}"
            )
        lookup = {f: {n: i for i, n in enumerate(ns)} for f, ns in self.names.items()}
        for f, ns in self.names.items():
            if len(lookup[f]) != len(ns):
                raise ValueError(f"names: field {f!r} has duplicate token names")
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def default(cls) -> CPVocab:
        return cls(names=_names())

    def sizes(self) -> dict[str, int]:
        """Field -> number of classes, ordered like FIELDS."""
        return {f: len(self.names[f]) for f in FIELDS}

    def token_names(self, field: str) -> tuple[str, ...]:
        return self.names[field]

    def index(self, field: str, name: str) -> int:
        """Index of ``name`` in ``field``; KeyError names the field and the unknown token."""
        try:
            return self._lookup[field][name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"{field}: unknown token {name!r}") from None

    def name(self, field: str, idx: int) -> str:
        """Name of index ``idx`` in ``field``, or ``<field>?<idx>`` when out of range."""
        ns = self.names[field]
        return ns[idx] if 0 <= idx < len(ns) else f"{field}?{idx}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "podium-cp-dictionary",
            "version": self.version,
            "fields": list(FIELDS),
            "sizes": self.sizes(),
            "names": {f: list(self.names[f]) for f in FIELDS},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CPVocab:
        names = {f: tuple(str(n) for n in data["names"][f]) for f in data["fields"]}
        return cls(names=names, version=int(data.get("version", 0)))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


VOCAB = CPVocab.default()
"""podium's CP dictionary."""


# -- module-level API over VOCAB ----------------------------------------------------------------


def vocab_sizes() -> dict[str, int]:
    """Field -> number of classes, ordered like FIELDS (what a CP model's heads are sized by)."""
    return VOCAB.sizes()


def token_names(field: str) -> tuple[str, ...]:
    return VOCAB.token_names(field)


def index(field: str, name: str) -> int:
    return VOCAB.index(field, name)


def to_json() -> dict[str, Any]:
    return VOCAB.to_json()


def save(path: Path | str) -> None:
    """Write podium's dictionary as JSON (it is saved next to every prepared dataset)."""
    VOCAB.save(path)


def load(path: Path | str) -> CPVocab:
    """Read a dictionary written by ``save``; raises ValueError/KeyError/OSError if malformed."""
    return CPVocab.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# -- value <-> index helpers --------------------------------------------------------------------


def _nearest(bins: tuple[int, ...], value: float) -> int:
    """Position of the bin nearest to ``value`` in ascending ``bins`` (ties go to the lower bin)."""
    i = bisect.bisect_left(bins, value)
    if i == 0:
        return 0
    if i == len(bins):
        return len(bins) - 1
    return i if bins[i] - value < value - bins[i - 1] else i - 1


def tempo_index(bpm: float) -> int:
    """Token index of the tempo bin nearest ``bpm`` (clipped to 32..248)."""
    return 1 + _nearest(TEMPO_BINS, bpm)


def duration_index(sixteenths: float) -> int:
    """Token index of the duration bin nearest ``sixteenths`` (at least one 16th, at most 32)."""
    return 1 + _nearest(DURATION_BINS, max(1.0, sixteenths))


def velocity_index(velocity: float) -> int:
    return 1 + _nearest(VELOCITY_BINS, velocity)


def pitch_index(pitch: int) -> int:
    """Token index of ``pitch``, folded by octaves into 22..107 first."""
    while pitch < PITCH_MIN:
        pitch += 12
    while pitch > PITCH_MAX:
        pitch -= 12
    return 1 + pitch - PITCH_MIN


def chord_index(root: int, quality: str) -> int:
    """Token index of the chord ``root`` (pitch class) + ``quality``."""
    return 2 + (root % 12) * len(CHORD_QUALITIES) + CHORD_QUALITIES.index(quality)


def key_index(key: str) -> int:
    return VOCAB.index("key", key)


def emotion_index(emotion: str) -> int:
    return VOCAB.index("emotion", emotion)


_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E"}
_KEY_RE = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*[:_\- ]?\s*(.*?)\s*$")


def parse_key(text: str, mode_hint: str = "") -> str | None:
    """Normalise a key name to podium's form (``"F#:min"``), or None if it is not one.

    Accepts ``"C:maj"``, ``"C major"``, ``"a minor"``, ``"Bb"``, ``"bb"``, ``"F#m"``, ``"Eb:min"``.
    Mode words (``maj``/``major``/``M``, ``min``/``minor``/``m``) in ``text`` win, then words in
    ``mode_hint`` (a separate mode column); otherwise the letter's case decides, as in EMOPIA's
    ``key_mode_tempo.csv`` (upper case major, lower case minor). Flats become sharps.
    """
    m = _KEY_RE.match(text or "")
    if not m:
        return None
    letter, acc, rest = m.groups()
    acc = {"♯": "#", "♭": "b"}.get(acc, acc)
    mode = _mode_word(rest)
    if mode is None and rest:
        return None  # trailing text that is not a mode: not a key
    if mode is None:
        mode = _mode_word(mode_hint.strip())
    if mode is None:
        mode = "maj" if letter.isupper() else "min"
    name = letter.upper() + acc
    name = _FLATS.get(name, name)
    if name == "E#":
        name = "F"
    elif name == "B#":
        name = "C"
    return f"{name}:{mode}" if name in PITCH_CLASSES else None


def _mode_word(word: str) -> str | None:
    if word in ("M", "maj", "major", "Maj", "Major", "MAJ", "MAJOR", "ionian"):
        return "maj"
    if word in ("m", "min", "minor", "Min", "Minor", "MIN", "MINOR", "aeolian"):
        return "min"
    return None
