"""MIDI <-> compound-word (CP) tokens, EMOPIA style.

A piece becomes an int64 array of shape (T, 9): one row per compound token, columns in
``cp_vocab.FIELDS`` order (tempo, chord, bar_beat, type, pitch, duration, velocity, emotion, key).
The grid is 480 ticks per quarter note, quantised to 16th notes, in 4/4::

    Emotion   emotion=Q2 key=E:min           conditioning, always first
    Bar                                      every bar, empty ones too
    Beat_0    tempo=Tempo_140 chord=E:m      a 16th position with onsets, a tempo or chord change
    Note      Pitch_52 Duration_4 Velocity_87   one per onset, sorted by pitch
    Note      Pitch_64 Duration_2 Velocity_87
    Beat_2    ...
    EOS

Tempo and chord carry a value only where they change (``CONTI`` otherwise); the first Metrical
token of a piece (always ``Beat_0`` of the first bar) states both. Chords are estimated per half
bar (``Beat_0`` and ``Beat_8``) from the notes sounding in it, after quantisation, so decoding and re-encoding gives back the very
same tokens. Decoding is tolerant: whatever a model samples (a Note before any Bar, no tempo,
indices out of range) is skipped or defaulted, never raised.

Use::

    tokens = encode_midi("song.mid", emotion="Q1", key="C:maj")   # (T, 9) int64
    decode_tokens(tokens).write("again.mid")
    print("\\n".join(describe(tokens)))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi

from podium.engine.data.midi_io import TICKS_PER_BEAT, load_midi, piano_notes, tempo_changes
from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V

TICKS_PER_POSITION = TICKS_PER_BEAT // 4
"""120 ticks: one 16th note."""
TICKS_PER_BAR = TICKS_PER_BEAT * 4
CHORD_SPAN = 8
"""Chords are estimated per half bar: 8 sixteenths."""
MAX_DECODE_BARS = 2048
"""Decoding stops after this many bars: a runaway sample must not allocate a huge tempo map."""

F = {name: i for i, name in enumerate(V.FIELDS)}
"""Field name -> column of the token array."""
N_FIELDS = len(V.FIELDS)


def _row(**fields: int) -> np.ndarray:
    row = np.zeros(N_FIELDS, dtype=np.int64)
    for name, value in fields.items():
        row[F[name]] = value
    return row


def emotion_token(emotion: str, key: str) -> np.ndarray:
    """The conditioning token that starts every piece, (9,) int64: what a generation prompt is."""
    if emotion not in V.EMOTIONS:
        raise DataError(f"emotion {emotion!r} is not one of {', '.join(V.EMOTIONS)}")
    if key not in V.KEYS:
        raise DataError(f"key {key!r} is not a key like 'C:maj' or 'F#:min' (sharps only)")
    return _row(type=V.TYPE_EMOTION, emotion=V.emotion_index(emotion), key=V.key_index(key))


# -- chords ----------------------------------------------------------------------------------

_TEMPLATE_ROOTS = np.repeat(np.arange(12), len(V.CHORD_QUALITIES))  # (132,)
_TEMPLATES = np.zeros((12 * len(V.CHORD_QUALITIES), 12))  # (132, 12) 0/1 pitch-class sets
for _r in range(12):
    for _q, _quality in enumerate(V.CHORD_QUALITIES):
        for _iv in V.CHORD_INTERVALS[_quality]:
            _TEMPLATES[_r * len(V.CHORD_QUALITIES) + _q, (_r + _iv) % 12] = 1.0
_TEMPLATE_SIZE = _TEMPLATES.sum(axis=1)
# A small preference for the common qualities, so that a bare dyad reads as a triad, not as +/sus.
_QUALITY_PRIOR = {"o": -0.02, "+": -0.05, "sus2": -0.03, "sus4": -0.03}
_PRIOR = np.tile([_QUALITY_PRIOR.get(q, 0.0) for q in V.CHORD_QUALITIES], 12)
_OTHER = V.index("chord", V.OTHER_CHORD)
_NO_CHORD = V.index("chord", V.NO_CHORD)


def chord_of(weights: np.ndarray, bass_pc: int) -> int:
    """Chord token index for a pitch-class weight vector (12,), by template matching.

    Score = weight inside the template - weight outside - 0.15 x the share of template tones that
    do not sound + 0.1 when the root is the bass + a small prior against o, + and sus (weights are
    normalised to sum 1). Ties go to the first template
    (roots from C, qualities in ``CHORD_QUALITIES`` order), so the estimate is deterministic.
    ``N.C.`` when nothing sounds, ``Other`` for a single pitch class or when nothing fits.
    """
    total = float(weights.sum())
    if total <= 0:
        return _NO_CHORD
    if int((weights > 0).sum()) < 2:
        return _OTHER
    w = weights / total
    inside = _TEMPLATES @ w
    missing = (_TEMPLATES * (w <= 0)).sum(axis=1) / _TEMPLATE_SIZE
    score = 2 * inside - 1 - 0.15 * missing + 0.1 * np.equal(_TEMPLATE_ROOTS, bass_pc) + _PRIOR
    best = int(np.argmax(score))
    if score[best] <= 0:
        return _OTHER
    return 2 + best


# -- encoding --------------------------------------------------------------------------------


def encode_midi(midi: pretty_midi.PrettyMIDI | Path | str, *, emotion: str, key: str) -> np.ndarray:
    """A MIDI file (or parsed object) as CP tokens, (T, 9) int64.

    All non-drum instruments are merged as one piano. Onsets are rounded to the nearest 16th,
    durations to the nearest duration bin (at least a 16th), velocities and tempi to their bins,
    and pitches outside 22..107 are folded in by octaves. Of notes that land on the same pitch and
    16th, the longest is kept. A file without notes gives ``[Emotion, EOS]``.

    Raises:
        DataError: the file is unreadable, or ``emotion``/``key`` is not in the dictionary.
    """
    head = emotion_token(emotion, key)
    pm = load_midi(midi)
    # -- notes, quantised: {(position, pitch index): (duration index, velocity index)}
    quantised: dict[tuple[int, int], tuple[int, int]] = {}
    for n in piano_notes(pm):  # sorted by start, pitch, longest first
        pos = (n.start + TICKS_PER_POSITION // 2) // TICKS_PER_POSITION
        ident = (pos, V.pitch_index(n.pitch))
        if ident not in quantised:
            dur = V.duration_index((n.end - n.start) / TICKS_PER_POSITION)
            quantised[ident] = (dur, V.velocity_index(n.velocity))
    if not quantised:
        return np.stack([head, _row(type=V.TYPE_EOS)])
    n_bars = max(pos for pos, _ in quantised) // V.POSITIONS_PER_BAR + 1
    n_pos = n_bars * V.POSITIONS_PER_BAR

    # -- tempo per position where it changes (last change at a position wins)
    tempo_at: dict[int, int] = {}
    for tick, bpm in tempo_changes(pm):
        pos = (tick + TICKS_PER_POSITION // 2) // TICKS_PER_POSITION
        tempo_at[min(pos, n_pos)] = V.tempo_index(bpm)

    # -- chords per half bar, from the quantised notes
    chord_at = _half_bar_chords(quantised, n_pos)

    # -- Metrical positions: onsets, and where tempo or chord changes
    onsets: dict[int, list[tuple[int, int, int]]] = {}
    for (pos, pitch), (dur, vel) in sorted(quantised.items()):
        onsets.setdefault(pos, []).append((pitch, dur, vel))
    events: dict[int, tuple[int, int]] = {}  # position -> (tempo token, chord token), 0 = CONTI
    tempo_now, tempo_said, chord_said = V.tempo_index(120.0), 0, 0
    for pos in range(n_pos):
        tempo_now = tempo_at.get(pos, tempo_now)
        t_tok = tempo_now if tempo_now != tempo_said else 0
        span, at = divmod(pos, CHORD_SPAN)
        c_tok = chord_at[span] if at == 0 and chord_at[span] != chord_said else 0
        if pos in onsets or t_tok or c_tok:
            events[pos] = (t_tok, c_tok)
            tempo_said = t_tok or tempo_said
            chord_said = c_tok or chord_said

    rows = [head]
    for bar in range(n_bars):
        rows.append(_row(type=V.TYPE_METRICAL, bar_beat=V.BAR))
        for pos in range(bar * V.POSITIONS_PER_BAR, (bar + 1) * V.POSITIONS_PER_BAR):
            if pos not in events:
                continue
            t_tok, c_tok = events[pos]
            beat = V.BEAT_OFFSET + pos % V.POSITIONS_PER_BAR
            rows.append(_row(type=V.TYPE_METRICAL, bar_beat=beat, tempo=t_tok, chord=c_tok))
            for pitch, dur, vel in onsets.get(pos, ()):
                rows.append(_row(type=V.TYPE_NOTE, pitch=pitch, duration=dur, velocity=vel))
    rows.append(_row(type=V.TYPE_EOS))
    return np.stack(rows)


def _half_bar_chords(quantised: dict[tuple[int, int], tuple[int, int]], n_pos: int) -> list[int]:
    """Chord token per half bar from the sounding pitch classes, weighted by 16ths sounding.

    Half bars rather than beats: a beat often holds only a bass note and a melody note, too
    little for template matching, and half-bar harmony is what simple piano music changes at."""
    n_spans = n_pos // CHORD_SPAN
    sounding = np.zeros((n_pos, 12))  # (position, pitch class) -> sounding
    lowest = np.full(n_pos, 1000)  # lowest sounding pitch per position
    for (pos, pitch_idx), (dur_idx, _) in quantised.items():
        pitch = V.PITCH_MIN + pitch_idx - 1
        end = min(n_pos, pos + V.DURATION_BINS[dur_idx - 1])
        sounding[pos:end, pitch % 12] += 1.0
        np.minimum(lowest[pos:end], pitch, out=lowest[pos:end])
    per_span = sounding.reshape(n_spans, CHORD_SPAN, 12).sum(axis=1)  # (half bars, 12)
    low = lowest.reshape(n_spans, CHORD_SPAN).min(axis=1)
    return [chord_of(per_span[b], int(low[b]) % 12) for b in range(n_spans)]


# -- decoding --------------------------------------------------------------------------------


def _as_rows(tokens: np.ndarray) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim == 1 and arr.size % N_FIELDS == 0:
        arr = arr.reshape(-1, N_FIELDS)
    if arr.ndim != 2 or arr.shape[1] != N_FIELDS:
        raise ValueError(f"tokens: expected shape (T, {N_FIELDS}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.nan_to_num(np.asarray(arr, dtype=np.float64), nan=-1.0, posinf=-1.0, neginf=-1.0)
        arr = np.clip(arr, -1, 1 << 20)
    return arr.astype(np.int64)


def decode_tokens(tokens: np.ndarray) -> pretty_midi.PrettyMIDI:
    """CP tokens -> a one-piano PrettyMIDI (480 ticks per beat), tempo from the tempo tokens.

    Stops at the first EOS (or after ``MAX_DECODE_BARS`` bars). Tolerates any sampled sequence:
    Notes before any Bar go to bar 0, no tempo means 120 bpm, a field out of range skips its note
    or its tempo change, an unknown type skips the token. Raises only ValueError for an array
    that is not (T, 9).
    """
    arr = _as_rows(tokens)
    sizes = V.vocab_sizes()
    bar, pos = -1, 0
    key_number: int | None = None
    tempos: list[tuple[int, int]] = []  # (tick, bpm)
    notes: list[tuple[int, int, int, int]] = []  # (start tick, end tick, pitch, velocity)
    for row in arr:
        kind = int(row[F["type"]])
        if kind == V.TYPE_EOS:
            break
        if kind == V.TYPE_EMOTION:
            k = int(row[F["key"]])
            if key_number is None and 1 <= k < sizes["key"]:
                key_number = k - 1  # pretty_midi: 0..11 major, 12..23 minor, like KEYS
            continue
        if kind == V.TYPE_METRICAL:
            bb = int(row[F["bar_beat"]])
            if bb == V.BAR:
                bar, pos = bar + 1, 0
                if bar >= MAX_DECODE_BARS:
                    break
            elif V.BEAT_OFFSET <= bb < sizes["bar_beat"]:
                bar, pos = max(bar, 0), bb - V.BEAT_OFFSET
            t = int(row[F["tempo"]])
            if 1 <= t < sizes["tempo"]:
                tempos.append((_tick(bar, pos), V.TEMPO_BINS[t - 1]))
        elif kind == V.TYPE_NOTE:
            bar = max(bar, 0)
            p, d, v = (int(row[F[f]]) for f in ("pitch", "duration", "velocity"))
            if (
                1 <= p < sizes["pitch"]
                and 1 <= d < sizes["duration"]
                and 1 <= v < sizes["velocity"]
            ):
                start = _tick(bar, pos)
                end = start + V.DURATION_BINS[d - 1] * TICKS_PER_POSITION
                notes.append((start, end, V.PITCH_MIN + p - 1, V.VELOCITY_BINS[v - 1]))

    # Tempo map: sorted by tick, the last change at a tick wins; the first tempo holds from 0.
    by_tick: dict[int, int] = {}
    for tick, bpm in sorted(tempos, key=lambda tb: tb[0]):
        by_tick[tick] = bpm
    changes = sorted(by_tick.items()) or [(0, 120)]
    scales: list[tuple[int, float]] = []
    for tick, bpm in changes:
        tick = tick if scales else 0
        if scales and scales[-1][1] == _scale(bpm):
            continue
        scales.append((tick, _scale(bpm)))

    pm = pretty_midi.PrettyMIDI(resolution=TICKS_PER_BEAT, initial_tempo=float(changes[0][1]))
    # pretty_midi has no public API for tempo changes; _tick_scales is what it writes out.
    pm._tick_scales = scales
    pm._update_tick_to_time(max((end for _, end, _, _ in notes), default=0) + 1)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    for start, end, pitch, velocity in sorted(notes, key=lambda n: (n[0], n[2])):
        piano.notes.append(
            pretty_midi.Note(
                velocity=velocity,
                pitch=pitch,
                start=pm.tick_to_time(start),
                end=pm.tick_to_time(end),
            )
        )
    pm.instruments.append(piano)
    if key_number is not None:
        pm.key_signature_changes.append(pretty_midi.KeySignature(key_number, 0.0))
    return pm


def _tick(bar: int, pos: int) -> int:
    return max(bar, 0) * TICKS_PER_BAR + pos * TICKS_PER_POSITION


def _scale(bpm: float) -> float:
    """Seconds per tick at ``bpm``, as pretty_midi stores tempo."""
    return 60.0 / (bpm * TICKS_PER_BEAT)


# -- debugging -------------------------------------------------------------------------------


def describe(tokens: np.ndarray) -> list[str]:
    """One human-readable line per token, e.g. ``"Note Pitch_60 Duration_4 Velocity_72"``.

    Fields at CONTI are left out; out-of-range indices show as ``<field>?<index>``.
    """
    lines = []
    for row in _as_rows(tokens):
        kind = int(row[F["type"]])
        name = V.VOCAB.name("type", kind)
        if kind == V.TYPE_EMOTION:
            parts = [name, V.VOCAB.name("emotion", int(row[F["emotion"]]))]
            parts.append("key=" + V.VOCAB.name("key", int(row[F["key"]])))
        elif kind == V.TYPE_METRICAL:
            parts = [V.VOCAB.name("bar_beat", int(row[F["bar_beat"]]))]
            for f in ("tempo", "chord"):
                if row[F[f]]:
                    parts.append(f"{f}={V.VOCAB.name(f, int(row[F[f]]))}")
        elif kind == V.TYPE_NOTE:
            parts = [name] + [
                V.VOCAB.name(f, int(row[F[f]])) for f in ("pitch", "duration", "velocity")
            ]
        else:
            parts = [name]
        lines.append(" ".join(parts))
    return lines
