"""podium's embedded demo corpus: short labelled piano pieces, generated, never downloaded.

The pieces are deliberately simple but musically coherent, so a tiny model can learn something a
listener can hear in a few minutes of CPU training. Each piece is labelled with an EMOPIA emotion
quadrant, and the quadrant shows in the music the way Russell's circumplex says it should:

* valence (Q1, Q4 positive; Q2, Q3 negative) -> mode (major / minor) and harmony (major or minor
  triads; Q2 leans on dominant sevenths, Q4 on major sevenths);
* arousal (Q1, Q2 high; Q3, Q4 low) -> tempo (120-160 vs 60-88 bpm), loudness and melodic
  density (8ths and 16ths vs quarters and halves).

Every piece has a melody (scale-degree walk, chord tones on beats, cadence on the tonic) and an
accompaniment in one of four styles (``STYLES``), plus a key, a sentiment, and a one-sentence
English description assembled from those labels. Notes sit on the 16th grid and velocities and
tempi on the CP dictionary's bins, so a demo piece round-trips through CP tokens exactly.

Use::

    labels = generate_demo_corpus(Path("demo"), n_pieces=400, seed=0)
    # demo/midi/demo_0000_Q1.mid ... and demo/labels.jsonl

Same seed, same bytes: each piece draws from its own ``random.Random`` seeded with a string of
(seed, index), which does not depend on ``PYTHONHASHSEED`` or on how many pieces came before.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pretty_midi

from podium.engine.data.cache import staging_dir
from podium.engine.data.music import EMOTIONS, PITCH_CLASSES

TEMPO_BINS = tuple(range(32, 249, 4))
"""The tempi the corpus writes (bpm): every 4 from 32, values the tokenisers represent exactly."""
VELOCITY_BINS = tuple(range(12, 128, 5))
"""The velocities the corpus writes: every 5 from 12."""

STYLES = ("alberti", "arpeggio", "chorale", "march")
"""Accompaniment styles (the ``genre`` label)."""

_STYLE_TEXT = {
    "alberti": ("an Alberti-bass accompaniment", "a classical Alberti bass"),
    "arpeggio": ("rolling arpeggios in the left hand", "flowing broken chords"),
    "chorale": ("hymn-like block chords", "a chorale texture"),
    "march": ("an oom-pah march bass", "a march-like left hand"),
}


@dataclass(frozen=True)
class _Quadrant:
    mode: str
    high_arousal: bool
    tempo: tuple[int, int]
    velocity: tuple[int, int]
    moods: tuple[str, ...]


_QUADRANTS = {
    "Q1": _Quadrant("maj", True, (120, 160), (87, 107), ("happy", "joyful", "bright", "excited")),
    "Q2": _Quadrant("min", True, (120, 160), (92, 112), ("tense", "agitated", "angry", "restless")),
    "Q3": _Quadrant("min", False, (60, 88), (37, 57), ("sad", "melancholic", "gloomy", "wistful")),
    "Q4": _Quadrant("maj", False, (60, 88), (42, 62), ("calm", "peaceful", "serene", "tender")),
}

_SCALES = {"maj": (0, 2, 4, 5, 7, 9, 11), "min": (0, 2, 3, 5, 7, 8, 10)}
# Four-bar progressions as 0-based scale degrees.
_PROGRESSIONS = {
    "maj": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 0, 4)),
    "min": ((0, 3, 4, 0), (0, 5, 2, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 6, 5, 4)),
}
# One bar of melody rhythm, in 16ths (each sums to 16).
_RHYTHMS_FAST = (
    (2, 2, 2, 2, 2, 2, 2, 2),
    (4, 2, 2, 2, 2, 4),
    (1, 1, 2, 2, 2, 4, 2, 2),
    (2, 2, 4, 2, 2, 4),
    (3, 1, 2, 2, 4, 4),
    (2, 1, 1, 2, 2, 4, 4),
)
_RHYTHMS_SLOW = ((4, 4, 4, 4), (8, 4, 4), (4, 4, 8), (8, 8), (6, 2, 8), (12, 4), (4, 8, 4))


@dataclass(frozen=True)
class PieceLabel:
    """One demo piece's labels: a line of ``labels.jsonl``."""

    id: str
    """Safe file stem, e.g. ``demo_0007_Q4``."""
    file: str
    """Path of the MIDI file relative to the corpus directory (``midi/<id>.mid``)."""
    emotion: str
    """Quadrant ``Q1`` .. ``Q4``."""
    key: str
    """Key like ``E:min`` (mode agrees with the quadrant's valence)."""
    sentiment: str
    """``positive`` (Q1, Q4) or ``negative`` (Q2, Q3)."""
    genre: str
    """Accompaniment style, one of ``STYLES``."""
    description: str
    """One English sentence assembled from the labels."""
    tempo: int
    """Tempo in bpm (a CP tempo bin)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Chord:
    root: int  # MIDI pitch of the root in the accompaniment register
    tones: tuple[int, ...]  # pitch classes, root first


def generate_demo_corpus(
    out_dir: Path, *, n_pieces: int, seed: int, bars: int = 8
) -> list[PieceLabel]:
    """Write ``n_pieces`` labelled pieces to ``out_dir/midi/`` and ``out_dir/labels.jsonl``.

    The corpus is built in a temporary sibling directory and renamed into place, so a crash never
    leaves a half corpus under ``out_dir``; an existing ``out_dir`` is replaced.

    Args:
        out_dir: corpus directory to create (its parent is created if needed).
        n_pieces: number of pieces (>= 1); quadrants cycle Q1, Q2, Q3, Q4 so they stay balanced.
        seed: corpus seed; the same seed gives byte-identical files.
        bars: bars per piece (>= 2; the last two are the cadence).
    """
    if n_pieces < 1:
        raise ValueError(f"n_pieces: must be >= 1, got {n_pieces}")
    if bars < 2:
        raise ValueError(f"bars: must be >= 2 (the last two bars are the cadence), got {bars}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out_dir)
    try:
        (tmp / "midi").mkdir()
        labels = []
        for i in range(n_pieces):
            rng = random.Random(f"podium-demo/{seed}/{i}")
            label, midi = _piece(rng, i, EMOTIONS[i % 4], bars)
            midi.write(str(tmp / label.file))
            labels.append(label)
        lines = "".join(json.dumps(lb.to_json(), sort_keys=True) + "\n" for lb in labels)
        (tmp / "labels.jsonl").write_text(lines, encoding="utf-8")
        if out_dir.exists():
            old = staging_dir(out_dir, "old")
            out_dir.rename(old / "corpus")
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return labels


# -- one piece -------------------------------------------------------------------------------


def _piece(
    rng: random.Random, i: int, emotion: str, bars: int
) -> tuple[PieceLabel, pretty_midi.PrettyMIDI]:
    q = _QUADRANTS[emotion]
    tonic = rng.randrange(12)
    key = f"{PITCH_CLASSES[tonic]}:{q.mode}"
    style = rng.choice(STYLES)
    tempo = rng.choice([t for t in TEMPO_BINS if q.tempo[0] <= t <= q.tempo[1]])
    loud = [v for v in VELOCITY_BINS if q.velocity[0] <= v <= q.velocity[1]]
    velocity = rng.choice(loud[:-1])  # leave one bin of headroom for accents
    chords = _harmony(rng, tonic, q, bars)
    melody = _melody(rng, tonic, q, chords, velocity)
    accomp = _accompaniment(rng, style, q, chords, velocity)

    pid = f"demo_{i:04d}_{emotion}"
    label = PieceLabel(
        id=pid,
        file=f"midi/{pid}.mid",
        emotion=emotion,
        key=key,
        sentiment="positive" if emotion in ("Q1", "Q4") else "negative",
        genre=style,
        description=_describe(rng, q, key, style, tempo),
        tempo=tempo,
    )
    return label, _to_midi(tempo, tonic, q.mode, melody, accomp)


def _harmony(rng: random.Random, tonic: int, q: _Quadrant, bars: int) -> list[_Chord]:
    """One chord per bar: a four-bar progression repeated, ending V - I."""
    scale = _SCALES[q.mode]
    prog = rng.choice(_PROGRESSIONS[q.mode])
    degrees = [prog[b % len(prog)] for b in range(bars)]
    degrees[-2:] = [4, 0]
    out = []
    for b, deg in enumerate(degrees):
        pcs = [(tonic + scale[(deg + k) % 7]) % 12 for k in (0, 2, 4)]
        if q.mode == "min" and deg == 4:
            pcs[1] = (pcs[1] + 1) % 12  # harmonic minor: major dominant with a leading tone
        if _wants_seventh(q, deg, rng, last=b == bars - 1):
            pcs.append((tonic + scale[(deg + 6) % 7]) % 12)  # V7 in both modes, M7 on I and IV
        root = 41 + (pcs[0] - 41) % 12  # F2 .. E3
        out.append(_Chord(root=root, tones=tuple(pcs)))
    return out


def _wants_seventh(q: _Quadrant, degree: int, rng: random.Random, *, last: bool) -> bool:
    """Colour: tense pieces (Q2) take dominant sevenths, calm ones (Q4) major sevenths on I/IV."""
    if last:
        return False
    if q.mode == "min" and q.high_arousal:
        return degree == 4
    if q.mode == "maj" and not q.high_arousal:
        return degree in (0, 3) and rng.random() < 0.5
    return False


def _melody(
    rng: random.Random, tonic: int, q: _Quadrant, chords: list[_Chord], velocity: int
) -> list[tuple[int, int, int, int]]:
    """(start, duration, pitch, velocity) in 16ths: a scale walk with chord tones on beats."""
    scale_pcs = {(tonic + s) % 12 for s in _SCALES[q.mode]}
    if q.mode == "min":
        scale_pcs.add((tonic + 11) % 12)  # the leading tone appears over V
    allowed = [p for p in range(64, 89) if p % 12 in scale_pcs]
    rhythms = _RHYTHMS_FAST if q.high_arousal else _RHYTHMS_SLOW
    accent = min(VELOCITY_BINS, key=lambda v: abs(v - (velocity + 5)))
    pitch = min((p for p in allowed if p % 12 == tonic), key=lambda p: abs(p - 74))
    notes = []
    for b, chord in enumerate(chords):
        bar_start = b * 16
        if b == len(chords) - 1:  # final bar: the tonic, held
            pitch = min((p for p in allowed if p % 12 == tonic), key=lambda p: abs(p - pitch))
            notes.append((bar_start, 16, pitch, velocity))
            break
        pos = 0
        for dur in rng.choice(rhythms):
            if pos % 4 == 0:  # on the beat: a chord tone near the last note
                near = [p for p in allowed if p % 12 in chord.tones and abs(p - pitch) <= 7]
                pitch = rng.choice(near or [p for p in allowed if p % 12 in chord.tones])
            else:  # off the beat: a step along the scale
                i = allowed.index(pitch) if pitch in allowed else len(allowed) // 2
                i = min(max(i + rng.choice((-1, 1)), 0), len(allowed) - 1)
                pitch = allowed[i]
            notes.append((bar_start + pos, dur, pitch, accent if pos == 0 else velocity))
            pos += dur
    return notes


def _accompaniment(
    rng: random.Random, style: str, q: _Quadrant, chords: list[_Chord], velocity: int
) -> list[tuple[int, int, int, int]]:
    """(start, duration, pitch, velocity) in 16ths, below the melody (MIDI 29 .. 63)."""
    soft = min(VELOCITY_BINS, key=lambda v: abs(v - (velocity - 15)))
    notes = []
    for b, chord in enumerate(chords):
        s = b * 16
        r = chord.root
        third = r + (chord.tones[1] - chord.tones[0]) % 12
        fifth = r + (chord.tones[2] - chord.tones[0]) % 12
        triad = [r, third, fifth] + [r + (t - chord.tones[0]) % 12 for t in chord.tones[3:]]
        if b == len(chords) - 1:  # final bar: one held chord over the bass
            notes += [(s, 16, p, soft) for p in [r - 12, *triad]]
            continue
        if style == "alberti":
            for k, p in enumerate([r, fifth, third, fifth] * 2):
                notes.append((s + 2 * k, 2, p, soft))
        elif style == "arpeggio":
            for k, p in enumerate([r - 12, fifth - 12, r, third, fifth, third, r, fifth - 12]):
                notes.append((s + 2 * k, 2, p, soft))
        elif style == "chorale":
            step = 4 if q.high_arousal else 8
            for pos in range(0, 16, step):
                notes += [(s + pos, step, p, soft) for p in [r - 12, *triad]]
        else:  # march: bass on 1 and 3, chord on 2 and 4
            length = 2 if q.high_arousal else 4
            for pos, bass in ((0, r - 12), (8, fifth - 12)):
                notes.append((s + pos, length, bass, soft))
                notes += [(s + pos + 4, length, p, soft) for p in triad]
    return notes


def _to_midi(
    tempo: int,
    tonic: int,
    mode: str,
    melody: list[tuple[int, int, int, int]],
    accomp: list[tuple[int, int, int, int]],
) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(tempo))
    sixteenth = 60.0 / tempo / 4
    for name, notes in (("Melody", melody), ("Accompaniment", accomp)):
        inst = pretty_midi.Instrument(program=0, name=name)
        for start, dur, pitch, vel in notes:
            inst.notes.append(
                pretty_midi.Note(
                    velocity=vel,
                    pitch=pitch,
                    start=start * sixteenth,
                    end=(start + dur) * sixteenth,
                )
            )
        pm.instruments.append(inst)
    pm.key_signature_changes.append(
        pretty_midi.KeySignature(tonic + (12 if mode == "min" else 0), 0.0)
    )
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    return pm


def _describe(rng: random.Random, q: _Quadrant, key: str, style: str, tempo: int) -> str:
    tonic, mode = key.split(":")
    key_text = f"{tonic} {'major' if mode == 'maj' else 'minor'}"
    pace = rng.choice(
        ("fast", "lively", "brisk") if q.high_arousal else ("slow", "unhurried", "gentle-paced")
    )
    loud = q.velocity[0] >= 80
    dyn = rng.choice(("loud", "forceful", "energetic") if loud else ("soft", "quiet", "delicate"))
    mood = rng.sample(q.moods, 2)
    texture = rng.choice(_STYLE_TEXT[style])
    article = "An" if pace[0] in "aeiou" else "A"
    return (
        f"{article} {pace}, {dyn} piano piece in {key_text}, {mood[0]} and {mood[1]}, "
        f"with {texture} (about {tempo} bpm)."
    )
