"""MIDI <-> the Music Transformer's event vocabulary (Oore et al. 2018; Huang et al. 2018).

The ids are those of the public implementations (the lab's checkpoints use them)::

    0-127    NOTE_ON  pitch          128-255  NOTE_OFF pitch
    256-355  TIME_SHIFT 1..100 steps of 10 ms
    356-387  VELOCITY velocity // 4 (emitted before a note-on only when it changes)
    388      END                      389      PAD
    390...   conditioning tokens (sentiment, then genre; see ``data.ConditionTokens``)

All notes of all non-drum instruments become one piano stream. The sustain pedal (CC 64 >= 64)
is folded into the notes: a note released while the pedal is down sounds until the pedal lifts
(or until its pitch is struck again). Times are rounded to the 10 ms grid, so a round trip keeps
every onset and release within 5 ms (a note never shorter than one step).

``encode_midi`` and ``decode_tokens`` are pure functions, so a generic ``podium prepare`` can
call the tokeniser without knowing this family.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pretty_midi

NOTE_ON = 0
NOTE_OFF = 128
TIME_SHIFT = 256
VELOCITY = 356
END = 388
PAD = 389
N_EVENTS = 390
"""Event ids, END and PAD: the conditioning tokens start here."""
MAX_SHIFT = 100
"""Steps in the longest single time shift (one second)."""
STEP_S = 0.01
"""Seconds per time-shift step."""
VELOCITY_BINS = 32
SUSTAIN_CC = 64


def _pedal_intervals(inst: pretty_midi.Instrument) -> list[tuple[float, float]]:
    """(down, up) seconds of the sustain pedal; one still down at the end has up = +inf."""
    out, down = [], None
    for cc in sorted(inst.control_changes, key=lambda c: c.time):
        if cc.number != SUSTAIN_CC:
            continue
        if cc.value >= 64 and down is None:
            down = cc.time
        elif cc.value < 64 and down is not None:
            out.append((down, cc.time))
            down = None
    if down is not None:
        out.append((down, float("inf")))
    return out


def _sustained_end(end: float, pedal: list[tuple[float, float]]) -> float:
    for down, up in pedal:
        if down <= end < up:
            return up
    return end


def _quantised_notes(midi: pretty_midi.PrettyMIDI) -> list[tuple[int, int, int, int]]:
    """(on step, off step, pitch, velocity) of every sounding note, pedal folded in, one note of
    a pitch at a time (a restruck pitch ends the note before it)."""
    raw = []
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        pedal = _pedal_intervals(inst)
        for n in inst.notes:
            end = _sustained_end(n.end, pedal)
            if end == float("inf"):  # a pedal never lifted: the note as written
                end = n.end
            on, off = round(n.start / STEP_S), round(end / STEP_S)
            raw.append((on, max(off, on + 1), int(n.pitch), int(n.velocity)))
    raw.sort()
    notes: list[tuple[int, int, int, int]] = []
    last: dict[int, int] = {}  # pitch -> index in notes of its latest note
    for on, off, pitch, vel in raw:
        i = last.get(pitch)
        if i is not None and notes[i][1] > on:
            p_on, p_off, _, p_vel = notes[i]
            if p_on == on:  # struck twice at once: one note, the longer and louder
                notes[i] = (on, max(p_off, off), pitch, max(p_vel, vel))
                continue
            notes[i] = (p_on, on, pitch, p_vel)  # the restrike ends it
        last[pitch] = len(notes)
        notes.append((on, off, pitch, vel))
    return notes


def encode_midi(midi: pretty_midi.PrettyMIDI) -> np.ndarray:
    """The events of ``midi`` as int64 ids (no END, no conditioning tokens)."""
    events: list[tuple[int, int, int, int]] = []  # (step, 0 = off / 1 = on, pitch, velocity)
    for on, off, pitch, vel in _quantised_notes(midi):
        events.append((on, 1, pitch, vel))
        events.append((off, 0, pitch, 0))
    events.sort()  # releases before onsets at the same step: a restrike stays two notes
    out: list[int] = []
    now, velocity = 0, -1
    for step, kind, pitch, vel in events:
        dt = step - now
        while dt > 0:
            s = min(dt, MAX_SHIFT)
            out.append(TIME_SHIFT + s - 1)
            dt -= s
        now = step
        if kind == 1:
            vb = min(max(vel, 0) // 4, VELOCITY_BINS - 1)
            if vb != velocity:
                out.append(VELOCITY + vb)
                velocity = vb
            out.append(NOTE_ON + pitch)
        else:
            out.append(NOTE_OFF + pitch)
    return np.asarray(out, dtype=np.int64)


def decode_tokens(tokens: Iterable[int]) -> pretty_midi.PrettyMIDI:
    """A piano MIDI of event ids. Conditioning tokens and PAD are skipped; END ends it once an
    event has been read (a leading END is the start marker of unconditioned sequences); a
    note-off without its note-on is ignored, a note still held at the end is released there
    (at least one step after its onset)."""
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0, name="piano")
    now, velocity = 0, 64
    held: dict[int, tuple[int, int]] = {}  # pitch -> (on step, velocity)

    def release(pitch: int, at: int) -> None:
        on, vel = held.pop(pitch)
        end = max(at, on + 1)
        piano.notes.append(pretty_midi.Note(vel, pitch, on * STEP_S, end * STEP_S))

    started = False
    for t in (int(x) for x in tokens):
        if t == END and started:
            break
        started = started or t < END
        if NOTE_ON <= t < NOTE_OFF:
            pitch = t - NOTE_ON
            if pitch in held:
                release(pitch, now)
            held[pitch] = (now, velocity)
        elif NOTE_OFF <= t < TIME_SHIFT:
            if t - NOTE_OFF in held:
                release(t - NOTE_OFF, now)
        elif TIME_SHIFT <= t < VELOCITY:
            now += t - TIME_SHIFT + 1
        elif VELOCITY <= t < END:
            velocity = max(1, (t - VELOCITY) * 4)
    for pitch in list(held):
        release(pitch, now)
    piano.notes.sort(key=lambda n: (n.start, n.pitch))
    midi.instruments.append(piano)
    return midi


def seconds_of(tokens: Iterable[int]) -> float:
    """The music's length in seconds: the time shifts summed."""
    a = np.asarray(list(tokens), dtype=np.int64)
    shifts = a[(a >= TIME_SHIFT) & (a < VELOCITY)]
    return float((shifts - TIME_SHIFT + 1).sum()) * STEP_S
