"""Chord labels: 32 chord types x 12 roots, the bass note as its own label, and the usual
``root:type/bass`` notation (Harte et al. 2005, as MIREX and the Isophonics annotations write
it: ``C:maj7/3``, ``F#:min``, ``Bb:7/b7``; a bare root is a major triad).

No torch, no numpy: the profile, the CSV reader and the CLI all parse labels without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
"""The 12 roots (and bass classes), spelled as chord charts usually spell them."""

CHORD_TYPES: dict[str, tuple[int, ...]] = {
    # triads and dyads
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "5": (0, 7),
    # sixths and sevenths
    "maj6": (0, 4, 7, 9),
    "min6": (0, 3, 7, 9),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "minmaj7": (0, 3, 7, 11),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "aug7": (0, 4, 8, 10),
    "augmaj7": (0, 4, 8, 11),
    "7sus4": (0, 5, 7, 10),
    "7b5": (0, 4, 6, 10),
    # added tones and extensions (intervals above the octave kept: they shape the voicing)
    "add9": (0, 4, 7, 14),
    "madd9": (0, 3, 7, 14),
    "69": (0, 4, 7, 9, 14),
    "9": (0, 4, 7, 10, 14),
    "maj9": (0, 4, 7, 11, 14),
    "min9": (0, 3, 7, 10, 14),
    "7b9": (0, 4, 7, 10, 13),
    "7#9": (0, 4, 7, 10, 15),
    "11": (0, 4, 7, 10, 14, 17),
    "min11": (0, 3, 7, 10, 14, 17),
    "13": (0, 4, 7, 10, 14, 21),
    "maj13": (0, 4, 7, 11, 14, 21),
    "min13": (0, 3, 7, 10, 14, 21),
}
"""Each type's intervals above the root, in semitones; the order is the class index."""

TYPES = tuple(CHORD_TYPES)
assert len(TYPES) == 32

ALIASES = {
    "": "maj",
    "M": "maj",
    "m": "min",
    "-": "min",
    "o": "dim",
    "+": "aug",
    "sus": "sus4",
    "6": "maj6",
    "m6": "min6",
    "dom7": "7",
    "M7": "maj7",
    "m7": "min7",
    "mmaj7": "minmaj7",
    "o7": "dim7",
    "m7b5": "hdim7",
    "hdim": "hdim7",
    "ø": "hdim7",
    "+7": "aug7",
    "1": "5",
    "m9": "min9",
    "M9": "maj9",
    "m11": "min11",
    "m13": "min13",
    "M13": "maj13",
    "6/9": "69",
}
"""Other spellings of the same types (chord-chart and jazz shorthand) accepted when parsing."""

_DEGREES = {"1": 0, "2": 2, "3": 4, "4": 5, "5": 7, "6": 9, "7": 11, "9": 14, "11": 17, "13": 21}
_NOTE = re.compile(r"^([A-Ga-g])([#b]*)$")
_LETTER = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


class LabelError(ValueError):
    """A chord label that cannot be read; the message names it and says what is accepted."""


@dataclass(frozen=True)
class Chord:
    """A chord as the three heads see it: type index, root and bass pitch classes."""

    type: int
    root: int
    bass: int

    @property
    def type_name(self) -> str:
        return TYPES[self.type]

    @property
    def inverted(self) -> bool:
        return self.bass != self.root

    def label(self) -> str:
        """The chord in ``root:type/bass`` notation (``/bass`` only when inverted, as a degree
        when the bass is a chord tone, else as a note name)."""
        text = f"{NOTE_NAMES[self.root]}:{self.type_name}"
        if not self.inverted:
            return text
        return f"{text}/{bass_degree(self.type_name, (self.bass - self.root) % 12)}"


def pitch_class(note: str) -> int:
    """``C``, ``F#``, ``Bb``, ``Cb``... -> 0..11; LabelError otherwise."""
    m = _NOTE.match(note.strip())
    if m is None:
        raise LabelError(f"{note!r} is not a note name (A-G with # or b, e.g. F#, Bb)")
    accidentals = m.group(2)
    return (_LETTER[m.group(1).upper()] + accidentals.count("#") - accidentals.count("b")) % 12


def degree_semitones(degree: str) -> int:
    """A Harte bass degree (``3``, ``b3``, ``#5``, ``b7``, ``9``) -> semitones above the root."""
    m = re.fullmatch(r"([#b]*)(\d+)", degree.strip())
    if m is None or m.group(2) not in _DEGREES:
        raise LabelError(
            f"bass {degree!r} is not a degree (1-7, 9, 11, 13 with b or #, e.g. 3, b7, #5)"
        )
    return (_DEGREES[m.group(2)] + m.group(1).count("#") - m.group(1).count("b")) % 12


def bass_degree(type_name: str, semitones: int) -> str:
    """How a bass ``semitones`` above the root is written for this type: the chord tone's degree
    (``3``, ``b3``, ``5``, ``b7``...)."""
    names = {0: "1", 1: "b9", 2: "9", 3: "b3", 4: "3", 5: "4", 6: "b5", 7: "5", 8: "#5"}
    names |= {9: "6", 10: "b7", 11: "7"}
    if type_name in ("dim7",) and semitones == 9:
        return "bb7"
    if semitones == 8 and type_name not in ("aug", "aug7", "augmaj7"):
        return "b6"
    if semitones == 3 and type_name == "7#9":
        return "#9"
    return names[semitones % 12]


def parse_label(text: str) -> Chord:
    """A chord in ``root:type/bass`` notation (``C:maj7/3``, ``A:min``, ``G``, ``Bb:7/F``).

    Raises:
        LabelError: naming the part that is wrong (``N`` and ``X``, no chord and unknown, are
            not chords these heads have a class for).
    """
    raw = text.strip()
    if raw in ("N", "X", ""):
        raise LabelError(f"{raw or '(empty)'!r} is no chord (N: none, X: unknown); not a class")
    body, _, bass = raw.partition("/")
    root_text, _, type_text = body.partition(":")
    try:
        root = pitch_class(root_text)
    except LabelError as exc:
        raise LabelError(f"chord {raw!r}: root {exc}") from None
    type_text = type_text.strip()
    if "(" in type_text:  # Harte's explicit intervals, "maj(9)": not one of the 32 shorthands
        raise LabelError(
            f"chord {raw!r}: interval lists like {type_text!r} are not read; use a shorthand"
        )
    name = type_text if type_text in CHORD_TYPES else ALIASES.get(type_text)
    if name is None:
        raise LabelError(
            f"chord {raw!r}: unknown chord type {type_text!r} (known: {', '.join(TYPES)})"
        )
    type_index = TYPES.index(name)
    if not bass.strip():
        return Chord(type_index, root, root)
    try:
        if _NOTE.match(bass.strip()):
            bass_pc = pitch_class(bass)
        else:
            bass_pc = (root + degree_semitones(bass)) % 12
    except LabelError as exc:
        raise LabelError(f"chord {raw!r}: {exc}") from None
    return Chord(type_index, root, bass_pc)
