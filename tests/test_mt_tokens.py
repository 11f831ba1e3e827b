"""The Music Transformer's event vocabulary: ids, round trips, the pedal, restrikes."""

from __future__ import annotations

import random

import numpy as np
import pretty_midi
import pytest

from podium.engine.data.demo_corpus import STYLES, generate_demo_corpus
from podium.engine.families.music_transformer import config
from podium.engine.families.music_transformer import tokens as T


def piano(notes, pedal=()) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(v, p, s, e) for p, v, s, e in notes]
    inst.control_changes = [pretty_midi.ControlChange(64, val, t) for t, val in pedal]
    midi.instruments.append(inst)
    return midi


def notes_of(midi: pretty_midi.PrettyMIDI):
    out = [n for inst in midi.instruments for n in inst.notes]
    return sorted(out, key=lambda n: (n.start, n.pitch))


def test_the_vocabulary_is_the_public_implementations_layout():
    assert (T.NOTE_ON, T.NOTE_OFF, T.TIME_SHIFT, T.VELOCITY, T.END, T.PAD) == (
        0, 128, 256, 356, 388, 389,
    )  # fmt: skip
    assert T.N_EVENTS == 390
    # C4 at velocity 80 for half a second, then D4 at the same velocity 1.5 s later.
    got = T.encode_midi(piano([(60, 80, 0.0, 0.5), (62, 81, 2.0, 2.25)])).tolist()
    assert got == [
        356 + 20, 60,  # velocity 80 // 4, note-on 60
        256 + 49, 128 + 60,  # 50 steps of 10 ms, note-off 60
        256 + 99, 256 + 49,  # 1.5 s: one full second-long shift, then 50 steps
        62,  # 81 // 4 == 20: no new velocity event
        256 + 24, 128 + 62,
    ]  # fmt: skip


def test_random_piano_music_round_trips_within_10_ms():
    rng = random.Random(3)
    notes, t = [], 0.0
    for _ in range(300):
        t += rng.choice([0.0, 0.013, 0.1, 0.37, 1.9, 3.3])  # chords, runs and long rests
        pitch = rng.randrange(21, 109)
        notes.append((pitch, rng.randrange(1, 128), t, t + rng.uniform(0.02, 2.5)))
    # One note of a pitch at a time, as a piano plays it (restrikes are tested below).
    notes.sort(key=lambda n: n[2])
    last_end: dict[int, float] = {}
    playable = []
    for p, v, s, e in notes:
        if s >= last_end.get(p, -1.0) + 0.02:
            playable.append((p, v, s, e))
            last_end[p] = e
    midi = piano(playable)
    back = notes_of(T.decode_tokens(T.encode_midi(midi)))
    want = notes_of(midi)
    assert len(back) == len(want)
    for a, b in zip(want, back, strict=True):
        assert a.pitch == b.pitch
        assert abs(a.start - b.start) <= 0.01 and abs(a.end - b.end) <= 0.01
        assert abs(max(a.velocity // 4 * 4, 1) - b.velocity) == 0


def test_a_demo_piece_round_trips_within_10_ms(tmp_path):
    generate_demo_corpus(tmp_path / "demo", n_pieces=2, seed=5, bars=4)
    for path in sorted((tmp_path / "demo" / "midi").glob("*.mid")):
        midi = pretty_midi.PrettyMIDI(str(path))
        events = T.encode_midi(midi)
        assert events.dtype == np.int64 and events.max() < T.END
        back, want = notes_of(T.decode_tokens(events)), notes_of(midi)
        assert [n.pitch for n in back] == [n.pitch for n in want]
        assert max(abs(a.start - b.start) for a, b in zip(want, back, strict=True)) <= 0.01
        assert max(abs(a.end - b.end) for a, b in zip(want, back, strict=True)) <= 0.01


def test_the_sustain_pedal_is_folded_into_the_notes():
    midi = piano(
        [(60, 64, 0.0, 0.2), (64, 64, 0.5, 0.6), (67, 64, 1.5, 1.7)],
        pedal=[(0.1, 127), (1.0, 0)],  # down while 60 and 64 are released, up at 1.0
    )
    back = notes_of(T.decode_tokens(T.encode_midi(midi)))
    assert [(n.pitch, n.start, n.end) for n in back] == [
        (60, 0.0, 1.0),
        (64, 0.5, 1.0),
        (67, 1.5, 1.7),  # struck after the pedal lifted: as written
    ]


def test_a_restruck_pitch_ends_the_note_before_it():
    # Under the pedal the first 60 would ring to 2.0, but the second 60 at 0.5 cuts it.
    midi = piano([(60, 64, 0.0, 0.3), (60, 100, 0.5, 0.8)], pedal=[(0.2, 127), (2.0, 0)])
    back = notes_of(T.decode_tokens(T.encode_midi(midi)))
    assert [(n.start, n.end, n.velocity) for n in back] == [(0.0, 0.5, 64), (0.5, 2.0, 100)]


def test_decoding_skips_conditioning_and_pad_and_stops_at_end():
    events = T.encode_midi(piano([(60, 80, 0.0, 0.5)])).tolist()
    tokens = [T.END, 391, 393, *events, T.PAD, T.END, 64, 256, 128 + 64]
    back = notes_of(T.decode_tokens(tokens))
    assert [(n.pitch, n.start, n.end) for n in back] == [(60, 0.0, 0.5)]
    # A held note with no note-off is released where the events end, one step at least.
    dangling = notes_of(T.decode_tokens([60, 256 + 9, 62]))
    assert [(n.pitch, n.start, n.end) for n in dangling] == [(60, 0.0, 0.1), (62, 0.1, 0.11)]


@pytest.mark.parametrize("value", [0, 1, 3, 127])
def test_velocities_map_to_32_bins_and_never_to_silence(value):
    events = T.encode_midi(piano([(60, value, 0.0, 0.1)]))
    assert T.VELOCITY <= events[0] < T.END
    (note,) = notes_of(T.decode_tokens(events))
    assert note.velocity == max(value // 4 * 4, 1)


def test_the_profile_defaults_name_the_demo_corpus_styles():
    assert config.DEMO_GENRES == STYLES
    assert config.ConditioningConfig().names("genre") == STYLES
