"""The analyser on fabricated MIDI whose answers are known."""

from __future__ import annotations

import pretty_midi
import pytest

from podium.engine.music_stats import analyse


def piece(pitches, *, bpm=120.0, beat=None, chord=False) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    piano = pretty_midi.Instrument(program=0)
    beat = beat or 60.0 / bpm
    for i, p in enumerate(pitches):
        start = 0.0 if chord else i * beat
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=p, start=start, end=start + beat))
    midi.instruments.append(piano)
    return midi


def test_a_c_major_scale_is_c_major_at_its_tempo(tmp_path):
    path = tmp_path / "scale.mid"
    piece([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], bpm=120).write(str(path))
    stats = analyse(path)  # from the file: the tempo map is what was written
    assert stats.key == "C:maj" and stats.mode == "maj"
    assert stats.bpm == pytest.approx(120.0, abs=0.01)
    assert stats.notes == 11 and (stats.pitch_low, stats.pitch_high) == (60, 72)
    assert stats.polyphony == pytest.approx(1.0)
    assert stats.notes_per_s == pytest.approx(2.0)  # a note every half second at 120 bpm


def test_an_a_minor_piece_is_a_minor_and_the_tempo_follows_the_file(tmp_path):
    # A natural minor, tonic and dominant stressed (long A and E, leading tone G#).
    melody = [57, 60, 64, 69, 68, 69, 64, 60, 57, 59, 60, 62, 64, 57, 57, 64]
    path = tmp_path / "aminor.mid"
    piece(melody, bpm=90).write(str(path))
    stats = analyse(path)
    assert stats.key == "A:min" and stats.mode == "min"
    assert stats.bpm == pytest.approx(90.0, abs=0.01)


def test_chords_count_as_polyphony_and_an_empty_file_is_zero_notes(tmp_path):
    assert analyse(piece([60, 64, 67], chord=True)).polyphony == pytest.approx(3.0)
    empty = pretty_midi.PrettyMIDI()
    stats = analyse(empty)
    assert stats.notes == 0 and stats.pitch_low is None and stats.notes_per_s == 0.0


def test_a_file_without_tempo_events_gets_an_estimated_tempo(tmp_path):
    import mido

    # Eighth notes (240 ticks of 480) and no set_tempo event: pretty_midi silently assumes 120
    # bpm; the analyser must say it estimated the tempo from the onsets instead.
    file = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    for i in range(32):
        track.append(mido.Message("note_on", note=60 + (i % 5), velocity=80, time=0))
        track.append(mido.Message("note_off", note=60 + (i % 5), velocity=0, time=240))
    file.tracks.append(track)
    file.save(str(tmp_path / "notempo.mid"))
    stats = analyse(tmp_path / "notempo.mid")
    assert stats.notes == 32 and stats.bpm_estimated and "~" in stats.line()
    assert 60.0 <= stats.bpm <= 480.0 and stats.bpm != 120.0
    piece([60, 62, 64], bpm=120).write(str(tmp_path / "tempo.mid"))
    assert not analyse(tmp_path / "tempo.mid").bpm_estimated
