"""The CP dictionary and MIDI <-> CP token conversion."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest

from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.tokens import F, chord_of, decode_tokens, describe, encode_midi

TEMPO = 132  # a tempo bin
SIXTEENTH = 60.0 / TEMPO / 4


def _midi(notes, *, tempo: float = TEMPO, program: int = 0, drums=()) -> pretty_midi.PrettyMIDI:
    """notes: (start 16th, duration 16ths, pitch, velocity)."""
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=tempo)
    step = 60.0 / tempo / 4
    inst = pretty_midi.Instrument(program=program)
    for s, d, p, v in notes:
        inst.notes.append(pretty_midi.Note(velocity=v, pitch=p, start=s * step, end=(s + d) * step))
    pm.instruments.append(inst)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        for s, d, p, v in drums:
            kit.notes.append(
                pretty_midi.Note(velocity=v, pitch=p, start=s * step, end=(s + d) * step)
            )
        pm.instruments.append(kit)
    return pm


# Notes on the 16th grid, with durations and velocities on bins; bar 2 (positions 32..47) is empty.
NOTES = [
    (0, 4, 60, 72),
    (0, 4, 64, 72),
    (0, 8, 67, 72),
    (4, 2, 62, 97),
    (6, 1, 65, 12),
    (15, 3, 72, 127),
    (20, 32, 48, 42),
    (52, 16, 107, 57),
    (52, 16, 22, 57),
]


def _notes(pm: pretty_midi.PrettyMIDI):
    return sorted((n.pitch, n.start, n.end, n.velocity) for i in pm.instruments for n in i.notes)


# -- the dictionary ----------------------------------------------------------------------------


def test_vocab_sizes_and_fixed_indices():
    sizes = V.vocab_sizes()
    assert tuple(sizes) == V.FIELDS
    assert sizes == {
        "tempo": 56,
        "chord": 135,
        "bar_beat": 18,
        "type": 4,
        "pitch": 87,
        "duration": 18,
        "velocity": 25,
        "emotion": 5,
        "key": 25,
    }
    assert V.token_names("type") == ("EOS", "Emotion", "Metrical", "Note")
    assert V.index("bar_beat", "Bar") == 1 and V.index("bar_beat", "Beat_15") == 17
    assert V.index("pitch", "Pitch_22") == 1 and V.index("pitch", "Pitch_107") == 86
    assert V.token_names("emotion") == ("CONTI", *V.EMOTIONS)
    assert V.KEYS[0] == "C:maj" and V.KEYS[12] == "C:min" and "F#:maj" in V.KEYS
    assert all(V.token_names(f)[0] == "CONTI" for f in V.FIELDS if f != "type")
    with pytest.raises(KeyError, match="key: unknown token 'Gb:maj'"):
        V.index("key", "Gb:maj")


def test_vocab_save_load_round_trip(tmp_path):
    V.save(tmp_path / "dictionary.json")
    loaded = V.load(tmp_path / "dictionary.json")
    assert loaded == V.VOCAB and loaded.sizes() == V.vocab_sizes()
    data = json.loads((tmp_path / "dictionary.json").read_text())
    data["names"]["pitch"] = data["names"]["pitch"][:-1]
    (tmp_path / "other.json").write_text(json.dumps(data))
    assert V.load(tmp_path / "other.json") != V.VOCAB


@pytest.mark.parametrize(
    ("text", "mode", "want"),
    [
        ("C:maj", "", "C:maj"),
        ("a minor", "", "A:min"),
        ("Bb", "", "A#:maj"),
        ("c#", "", "C#:min"),
        ("F#m", "", "F#:min"),
        ("Eb:min", "", "D#:min"),
        ("D", "minor", "D:min"),
        ("D", "1", "D:maj"),
        ("H", "", None),
        ("C lydian", "", None),
    ],
)
def test_parse_key(text, mode, want):
    assert V.parse_key(text, mode_hint=mode) == want


def test_bins_round_to_nearest_and_clip():
    assert V.TEMPO_BINS[V.tempo_index(133.9) - 1] == 132
    assert V.TEMPO_BINS[V.tempo_index(500) - 1] == 248
    assert V.DURATION_BINS[V.duration_index(0.2) - 1] == 1
    assert V.DURATION_BINS[V.duration_index(20) - 1] == 16
    assert V.DURATION_BINS[V.duration_index(100) - 1] == 32
    assert V.VELOCITY_BINS[V.velocity_index(1) - 1] == 12
    assert V.pitch_index(21) == V.pitch_index(33)  # folded up an octave
    assert V.pitch_index(108) == V.pitch_index(96)


# -- encoding ----------------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path):
    pm = _midi(NOTES, drums=[(0, 1, 36, 100)])
    tokens = encode_midi(pm, emotion="Q2", key="E:min")
    assert tokens.dtype == np.int64 and tokens.shape[1] == 9
    out = decode_tokens(tokens)
    assert len(out.instruments) == 1 and out.instruments[0].program == 0
    want = sorted((p, s * SIXTEENTH, (s + d) * SIXTEENTH, v) for s, d, p, v in NOTES)
    got = _notes(out)
    assert [(p, v) for p, _, _, v in got] == [(p, v) for p, _, _, v in want]
    np.testing.assert_allclose([g[1:3] for g in got], [w[1:3] for w in want], atol=1e-9)
    times, tempi = out.get_tempo_changes()
    assert list(times) == [0.0] and tempi[0] == pytest.approx(TEMPO)
    assert out.key_signature_changes[0].key_number == 16  # E minor

    # Through a file and back: the very same tokens.
    out.write(str(tmp_path / "again.mid"))
    again = encode_midi(tmp_path / "again.mid", emotion="Q2", key="E:min")
    np.testing.assert_array_equal(again, tokens)


def test_token_layout():
    tokens = encode_midi(_midi(NOTES), emotion="Q4", key="F#:maj")
    lines = describe(tokens)
    assert lines[0] == "Emotion Q4 key=F#:maj"
    assert lines[1] == "Bar"
    assert lines[2] == "Beat_0 tempo=Tempo_132 chord=C:M"
    assert lines[3:6] == [
        "Note Pitch_60 Duration_4 Velocity_72",
        "Note Pitch_64 Duration_4 Velocity_72",
        "Note Pitch_67 Duration_8 Velocity_72",
    ]
    assert lines[-1] == "EOS" and lines.count("EOS") == 1
    # Four bars (the third one empty), each opened by a Bar token.
    assert lines.count("Bar") == 4
    third = [i for i, s in enumerate(lines) if s == "Bar"][2]
    assert lines[third + 1] == "Bar"
    # Emotion token: only type, emotion and key are set.
    head = tokens[0]
    assert head[F["type"]] == V.TYPE_EMOTION
    assert head[F["emotion"]] == V.index("emotion", "Q4") and head[F["key"]] == V.index(
        "key", "F#:maj"
    )
    assert np.count_nonzero(head) == 3
    # Notes carry no tempo/chord/bar_beat; Metrical tokens carry no pitch/duration/velocity.
    notes = tokens[tokens[:, F["type"]] == V.TYPE_NOTE]
    assert not notes[:, [F["tempo"], F["chord"], F["bar_beat"]]].any()
    metrical = tokens[tokens[:, F["type"]] == V.TYPE_METRICAL]
    assert not metrical[:, [F["pitch"], F["duration"], F["velocity"]]].any()
    # Tempo is stated once (it never changes).
    assert np.count_nonzero(tokens[:, F["tempo"]]) == 1


def test_quantises_off_grid_notes_and_merges_instruments():
    pm = _midi([(0, 4, 60, 70)])
    off = pretty_midi.Instrument(program=40)  # a violin, merged as piano
    off.notes.append(
        pretty_midi.Note(velocity=101, pitch=120, start=1.1 * SIXTEENTH, end=3.3 * SIXTEENTH)
    )
    pm.instruments.append(off)
    lines = describe(encode_midi(pm, emotion="Q1", key="C:maj"))
    assert "Beat_1" in lines
    # pitch 120 folded to 108 -> 96; duration 2.2 -> 2; velocity 101 -> 102
    assert lines[lines.index("Beat_1") + 1] == "Note Pitch_96 Duration_2 Velocity_102"


def test_tempo_changes_round_trip(tmp_path):
    pm = _midi([(s, 2, 60 + s % 12, 72) for s in range(0, 64, 2)], tempo=120)
    pm._tick_scales.append((480 * 6, 60.0 / (80 * 480)))  # 80 bpm from beat 6 (bar 1, Beat_8)
    pm.write(str(tmp_path / "tempo.mid"))
    tokens = encode_midi(tmp_path / "tempo.mid", emotion="Q3", key="A:min")
    lines = describe(tokens)
    tempo_lines = [s for s in lines if "tempo=" in s]
    assert len(tempo_lines) == 2
    assert tempo_lines[0].startswith("Beat_0 tempo=Tempo_120")
    assert tempo_lines[1].startswith("Beat_8 tempo=Tempo_80")
    assert lines.index(tempo_lines[1]) > [i for i, s in enumerate(lines) if s == "Bar"][1]
    out = decode_tokens(tokens)
    times, tempi = out.get_tempo_changes()
    assert list(tempi.round(3)) == [120.0, 80.0] and times[1] == pytest.approx(3.0)
    np.testing.assert_array_equal(encode_midi(out, emotion="Q3", key="A:min"), tokens)


def test_empty_midi_gives_emotion_then_eos():
    tokens = encode_midi(pretty_midi.PrettyMIDI(), emotion="Q1", key="C:maj")
    assert describe(tokens) == ["Emotion Q1 key=C:maj", "EOS"]


@pytest.mark.parametrize(
    ("pitches", "want"),
    [
        ((60, 64, 67), "C:M"),
        ((57, 60, 64), "A:m"),
        ((55, 59, 62, 65), "G:7"),
        ((48, 64), "C:M"),  # a bare third over the bass reads as the triad
        ((60, 72), "Other"),  # one pitch class names no chord
        ((), "N.C."),
    ],
)
def test_chord_estimate(pitches, want):
    w = np.zeros(12)
    for p in pitches:
        w[p % 12] += 1
    bass = min(pitches) % 12 if pitches else 0
    assert V.VOCAB.name("chord", chord_of(w, bass)) == want


def test_unreadable_files_raise_data_error(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    with pytest.raises(DataError, match=r"bad\.mid: not a readable MIDI file \(.+\)"):
        encode_midi(bad, emotion="Q1", key="C:maj")
    with pytest.raises(DataError, match=r"missing\.mid: not a readable MIDI file"):
        encode_midi(tmp_path / "missing.mid", emotion="Q1", key="C:maj")
    with pytest.raises(DataError, match="emotion 'Q5'"):
        encode_midi(_midi(NOTES), emotion="Q5", key="C:maj")


# -- decoding whatever a model samples ---------------------------------------------------------


def test_decode_tolerates_garbage():
    rng = np.random.default_rng(0)
    for _ in range(200):
        t = int(rng.integers(0, 200))
        garbage = rng.integers(-3, 300, size=(t, 9))
        # bias towards valid types so that many tokens reach the note/tempo code paths
        garbage[:, F["type"]] = rng.choice([-1, 1, 2, 2, 3, 3, 3, 7], size=t)
        pm = decode_tokens(garbage)
        for n in pm.instruments[0].notes:
            assert V.PITCH_MIN <= n.pitch <= V.PITCH_MAX and n.end > n.start >= 0
        assert len(describe(garbage)) == t
    decode_tokens(rng.normal(size=(10, 9)) * 1e30)  # floats, huge values
    decode_tokens(np.full((5, 9), np.nan))


def test_decode_defaults_and_stops_at_eos():
    note = np.zeros(9, dtype=np.int64)
    note[[F["type"], F["pitch"], F["duration"], F["velocity"]]] = [V.TYPE_NOTE, 39, 4, 13]
    eos = np.zeros(9, dtype=np.int64)
    tokens = np.stack([note, eos, note])  # a Note before any Bar; no tempo; a note after EOS
    pm = decode_tokens(tokens)
    assert [(n.pitch, n.velocity) for n in pm.instruments[0].notes] == [(60, 72)]
    assert pm.instruments[0].notes[0].end == pytest.approx(0.5)  # 4 16ths at the default 120 bpm
    assert pm.get_tempo_changes()[1][0] == pytest.approx(120.0)
    with pytest.raises(ValueError, match="tokens: expected shape"):
        decode_tokens(np.zeros((3, 4)))
