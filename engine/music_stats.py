"""Statistics of any MIDI file: what a listener would check first, computed.

Used under every generated preview and by the conditioning check (does a sample asked for a
happy, energetic piece come out major and fast?). Key and mode come from the Krumhansl-Kessler
profiles over the duration-weighted pitch-class histogram (``podium.engine.data.midi_io.estimate_key``);
tempo from the file's tempo map (time-weighted mean); a file without any tempo event (pretty_midi
then assumes 120) gets pretty_midi's onset-based estimate instead, flagged ``bpm_estimated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from podium.engine.data.midi_io import estimate_key, load_midi, piano_notes


@dataclass(frozen=True)
class MusicStats:
    notes: int
    seconds: float
    pitch_low: int | None
    pitch_high: int | None
    polyphony: float
    """Mean number of sounding notes while any note sounds."""
    notes_per_s: float
    key: str
    """"C:maj" .. "B:min": the key the notes sound in, whatever key a sample was asked for."""
    mode: str
    """"maj" or "min" (valence)."""
    bpm: float
    bpm_estimated: bool = False
    """True when the file states no tempo and ``bpm`` was estimated from the onsets."""

    def line(self) -> str:
        """One line; the key is called detected, so that it is not taken for one asked for."""
        rng = f"{self.pitch_low}-{self.pitch_high}" if self.notes else "-"
        return (
            f"{self.notes} notes · {self.seconds:.1f} s · pitch {rng} · polyphony "
            f"{self.polyphony:.2f} · {self.notes_per_s:.2f} notes/s · detected key {self.key} · "
            f"{'~' if self.bpm_estimated else ''}{self.bpm:.0f} bpm"
        )


def mean_bpm(midi: pretty_midi.PrettyMIDI) -> float:
    """Time-weighted mean tempo of the file (120 when it states none)."""
    times, bpms = midi.get_tempo_changes()
    if len(bpms) == 0:
        return 120.0
    end = max(midi.get_end_time(), float(times[-1]) + 1e-9)
    spans = np.diff(np.append(times, end))
    if spans.sum() <= 0:
        return float(bpms[0])
    return float((bpms * spans).sum() / spans.sum())


def _states_tempo(path: Path | str) -> bool:
    """Whether the file has a set_tempo event (pretty_midi hides its absence behind 120 bpm)."""
    import mido

    try:
        file = mido.MidiFile(str(path))
    except Exception:  # load_midi already read it; when in doubt trust its tempo map
        return True
    return any(msg.type == "set_tempo" for track in file.tracks for msg in track)


def analyse(source: pretty_midi.PrettyMIDI | Path | str) -> MusicStats:
    """Statistics of a MIDI file or object (raises DataError for an unreadable file)."""
    midi = source if isinstance(source, pretty_midi.PrettyMIDI) else load_midi(source)
    estimate = not isinstance(source, pretty_midi.PrettyMIDI) and not _states_tempo(source)
    notes = [n for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    seconds = float(midi.get_end_time())
    if not notes:
        return MusicStats(0, seconds, None, None, 0.0, 0.0, "C:maj", "maj", mean_bpm(midi))
    starts = np.array([n.start for n in notes])
    ends = np.array([n.end for n in notes])
    # Polyphony: sweep the onsets and offsets; average the count over time where it is > 0.
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends])
    count, last, sounding, weighted = 0, events[0][0], 0.0, 0.0
    for t, d in events:
        if count > 0:
            sounding += t - last
            weighted += count * (t - last)
        count += d
        last = t
    key = estimate_key(piano_notes(midi))
    bpm = mean_bpm(midi)
    if estimate and len(notes) > 1:
        try:
            bpm = float(midi.estimate_tempo())
        except ValueError:  # too few onsets to estimate: keep the default
            estimate = False
    span = float(ends.max() - starts.min())
    return MusicStats(
        notes=len(notes),
        seconds=seconds,
        pitch_low=int(min(n.pitch for n in notes)),
        pitch_high=int(max(n.pitch for n in notes)),
        polyphony=weighted / sounding if sounding > 0 else 0.0,
        notes_per_s=len(notes) / span if span > 0 else float(len(notes)),
        key=key,
        mode=key.split(":")[1],
        bpm=bpm,
        bpm_estimated=estimate and len(notes) > 1,
    )
