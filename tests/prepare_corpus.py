"""Fabricated MIDI files for the ``podium prepare`` tests: good ones, and every hard case."""

from __future__ import annotations

from pathlib import Path

import mido
import pretty_midi


def write_piece(
    path: Path, pitches: list[int], *, tempo: float = 100.0, drums: bool = False
) -> None:
    """A short piece of 8th notes (``drums``: on a drum track only)."""
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=0, is_drum=drums)
    eighth = 30.0 / tempo
    for i, p in enumerate(pitches):
        inst.notes.append(
            pretty_midi.Note(velocity=80, pitch=p, start=i * eighth, end=(i + 1) * eighth)
        )
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def write_mido(path: Path, tracks: list[list[mido.Message]], *, midi_type: int = 1) -> None:
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=480)
    for msgs in tracks:
        mid.tracks.append(mido.MidiTrack(msgs))
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))


def notes(pitches: list[int], channel: int = 0, length: int = 240) -> list[mido.Message]:
    out: list[mido.Message] = []
    for p in pitches:
        out.append(mido.Message("note_on", note=p, velocity=80, channel=channel, time=0))
        out.append(mido.Message("note_off", note=p, velocity=0, channel=channel, time=length))
    return out


C_MAJOR = [60, 64, 67, 65, 64, 62, 60, 67, 72, 71, 72, 60]
A_MINOR = [69, 72, 76, 74, 72, 71, 69, 64, 69, 72, 76, 81]

HARD_CASES = {
    # file -> the kind of its report entry ("kept" when it must be kept)
    "truncated.mid": "unreadable",
    "bad_byte.mid": "unreadable",
    "empty.mid": "empty",
    "zero_notes.mid": "no notes",
    "drums.mid": "drums only",
    "tempo_map.mid": "kept",
    "forty_tracks.mid": "kept",
    "type0.mid": "kept",
    "Ünïcødé 曲 ピアノ.mid": "kept",
    "tiny.mid": "too short",
    "long.mid": "too long",
}
MIN_TOKENS, MAX_TOKENS = 7, 400
"""The tokeniser limits the hard cases are made for: tiny.mid has 6 CP tokens, long.mid ~1,200."""


def write_hard_cases(root: Path) -> None:
    """Every hard case of ``HARD_CASES`` under ``root`` (labelled Q1 by ``labels.csv``)."""
    write_piece(root / "good.mid", C_MAJOR)
    data = (root / "good.mid").read_bytes()
    (root / "truncated.mid").write_bytes(data[: len(data) // 2])
    i = data.index(bytes([0x90]))  # the first note-on: its velocity becomes 0xFF
    (root / "bad_byte.mid").write_bytes(data[: i + 2] + b"\xff" + data[i + 3 :])
    (root / "empty.mid").write_bytes(b"")
    write_mido(root / "zero_notes.mid", [[mido.MetaMessage("set_tempo", tempo=500000)]])
    write_piece(root / "drums.mid", [36, 38, 42, 36], drums=True)
    tempos = [
        mido.MetaMessage("set_tempo", tempo=400000 + 37 * (k % 500), time=10) for k in range(5000)
    ]
    write_mido(root / "tempo_map.mid", [tempos, notes(A_MINOR * 8)])
    write_mido(
        root / "forty_tracks.mid",
        [notes([48 + k % 36, 50 + k % 30], channel=k % 9) for k in range(40)],
    )
    write_mido(
        root / "type0.mid",
        [[mido.MetaMessage("set_tempo", tempo=600000), *notes(C_MAJOR)]],
        midi_type=0,
    )
    write_piece(root / "Ünïcødé 曲 ピアノ.mid", A_MINOR)
    write_mido(
        root / "tiny.mid", [[mido.MetaMessage("time_signature", time=0), *notes([60], length=1)]]
    )
    write_mido(root / "long.mid", [notes([48 + k % 40 for k in range(600)], length=120)])
    rows = ["file,emotion,genre,description"] + [
        f'"{name}",Q{1 + k % 4},test,"case {k}"' for k, name in enumerate(["good.mid", *HARD_CASES])
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
