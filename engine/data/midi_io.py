"""Reading MIDI files: one door that turns any parser failure into a ``DataError``, plus the
Krumhansl-Schmuckler key estimate used when a dataset has no key labels.

pretty_midi (through mido) fails on bad files with whatever the failure happens to be (OSError,
EOFError, ValueError, KeyError, IndexError...), so ``load_midi`` catches broadly and names the file:
a dataset of a thousand files must be able to say which one is broken, in one line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from podium.engine.data.music import KEYS
from podium.engine.errors import DataError


@dataclass(frozen=True)
class NoteEvent:
    """One note on podium's tick grid (480 ticks per quarter note)."""

    start: int
    """Onset in ticks."""
    end: int
    """Offset in ticks (> start)."""
    pitch: int
    velocity: int


TICKS_PER_BEAT = 480
"""podium's grid: 480 ticks per quarter note, quantised to 16ths (120 ticks)."""


def load_midi(source: pretty_midi.PrettyMIDI | Path | str) -> pretty_midi.PrettyMIDI:
    """A parsed MIDI file; a PrettyMIDI object passes through.

    Raises:
        DataError: ``"<path>: not a readable MIDI file (<reason>)"`` for a missing, empty, truncated
            or otherwise unparsable file.
    """
    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    path = Path(source)
    try:
        with warnings.catch_warnings():
            # pretty_midi warns about tempo events on non-zero tracks, common in real files.
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # the parser raises many unrelated types on bad input
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable MIDI file ({reason})") from exc


def _seconds_to_ticks(midi: pretty_midi.PrettyMIDI, seconds: np.ndarray) -> np.ndarray:
    """Seconds -> ticks on the 480 grid (rounded), through the file's tempo map, vectorised
    (pretty_midi's ``time_to_tick`` is one Python call per time)."""
    times, bpms = midi.get_tempo_changes()
    if len(times) == 0:
        times, bpms = np.zeros(1), np.full(1, 120.0)
    per_second = bpms * TICKS_PER_BEAT / 60.0  # ticks per second in each tempo segment
    starts = np.concatenate([[0.0], np.cumsum(np.diff(times) * per_second[:-1])])
    seg = np.clip(np.searchsorted(times, seconds, side="right") - 1, 0, len(times) - 1)
    return np.rint(starts[seg] + (seconds - times[seg]) * per_second[seg]).astype(np.int64)


def drums_as_notes(midi: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    """``midi`` with its drum tracks turned into pitched ones (a drum's General MIDI key number
    becomes its pitch), for a profile that keeps drums (``[data] keep_drums``): the vocabularies
    have no instrument field, so kept drums are notes like the others. Changes ``midi``."""
    for inst in midi.instruments:
        inst.is_drum = False
    return midi


def piano_notes(midi: pretty_midi.PrettyMIDI) -> list[NoteEvent]:
    """All non-drum notes of every instrument, merged as one piano, on the 480-tick grid
    (not yet quantised to 16ths), sorted by (start, pitch)."""
    raw = [n for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    if not raw:
        return []
    ticks = _seconds_to_ticks(midi, np.array([(n.start, n.end) for n in raw], dtype=np.float64))
    notes = [
        NoteEvent(start=int(s), end=int(e), pitch=int(n.pitch), velocity=int(n.velocity))
        for n, (s, e) in zip(raw, ticks, strict=True)
        if e > s and 0 <= n.pitch <= 127
    ]
    notes.sort(key=lambda n: (n.start, n.pitch, -n.end))
    return notes


def tempo_changes(midi: pretty_midi.PrettyMIDI) -> list[tuple[int, float]]:
    """(tick on the 480 grid, bpm) of every tempo change; 120 bpm at 0 when the file has none."""
    times, bpms = midi.get_tempo_changes()
    if len(times) == 0:
        return [(0, 120.0)]
    ticks = _seconds_to_ticks(midi, np.asarray(times, dtype=np.float64))
    return [(int(t), float(b)) for t, b in zip(ticks, bpms, strict=True)]


# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(notes: list[NoteEvent]) -> str:
    """The key (``"C:maj"`` .. ``"B:min"``) whose Krumhansl-Kessler profile correlates best with the
    duration-weighted pitch-class histogram. Deterministic; ``"C:maj"`` for no notes."""
    hist = np.zeros(12)
    for n in notes:
        hist[n.pitch % 12] += n.end - n.start
    if hist.sum() <= 0 or np.allclose(hist, hist[0]):
        return "C:maj"
    best, best_r = KEYS[0], -np.inf
    for k, key in enumerate(KEYS):
        profile = _MAJOR_PROFILE if k < 12 else _MINOR_PROFILE
        r = float(np.corrcoef(hist, np.roll(profile, k % 12))[0, 1])
        if r > best_r + 1e-12:
            best, best_r = key, r
    return best
