"""Chords rendered to audio from MIDI: drawn, voiced, synthesised, noised; one clip each.

Each clip is one chord (uniform over the 32 types and 12 roots) as ``pretty_midi`` notes: the
bass in octaves 2-3 (the root, or another chord tone with ``inversion_prob``), the other tones
stacked above it in a close or open voicing (sometimes the root doubled, the fifth left out of
an extended chord, as players voice them), each with its own velocity, onset (a strum) and
length, then synthesised and given an envelope, a gain and white noise at a drawn SNR.

Synthesis: fluidsynth with a General MIDI soundfont, when pyfluidsynth, the fluidsynth library
and a soundfont are all there (a drawn GM program per clip); otherwise pretty_midi's own
additive synthesis with a drawn oscillator (``WAVEFORMS``: four overtone series standing in
for instruments). ``synth_backend`` says which and, when fluidsynth is not used, where it
looked and what was missing.

Every clip draws from its own generator, seeded by (seed, split, index): the same table gives
the same audio byte for byte, whichever order or process renders it.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from podium.engine.families.chords.config import ChordDataConfig
from podium.engine.families.chords.labels import CHORD_TYPES, TYPES, Chord

SPLITS = {"train": 0, "val": 1}
BASS_RANGE = (36, 55)
"""MIDI notes the bass is drawn from (C2..G3)."""
TOP_NOTE = 88
"""Upper voices stay at or below E6, inside the front end's range."""
GM_PROGRAMS = (*range(0, 8), *range(16, 22), *range(24, 30), *range(48, 53), 61, 88, 89)
"""General MIDI programs fluidsynth draws from: pianos, organs, guitars, strings, brass, pads."""
SOUNDFONT_PLACES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)


@dataclass(frozen=True)
class SynthBackend:
    """Which synthesiser renders, and why."""

    name: str
    """"fluidsynth" or "pretty_midi"."""
    soundfont: str
    """The soundfont fluidsynth uses ("" for pretty_midi)."""
    note: str
    """One line for the log: what was found, or where it looked and what was missing."""


def _soundfont_places(configured: str) -> list[Path]:
    places = [Path(configured).expanduser()] if configured else []
    if os.environ.get("SOUNDFONT"):
        places.append(Path(os.environ["SOUNDFONT"]))
    places += [Path(p) for p in SOUNDFONT_PLACES]
    places.append(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")  # pretty_midi ships one
    return places


def synth_backend(cfg: ChordDataConfig) -> SynthBackend:
    """fluidsynth when asked or possible (``synth``), else pretty_midi; the note says why.

    Raises:
        ValueError: ``synth = "fluidsynth"`` and something it needs is missing (what and where).
    """
    if cfg.synth == "pretty_midi":
        return SynthBackend("pretty_midi", "", "pretty_midi synthesis (data.synth)")
    missing = []
    if importlib.util.find_spec("fluidsynth") is None:
        missing.append("pyfluidsynth (the Python module 'fluidsynth')")
    if ctypes.util.find_library("fluidsynth") is None:
        missing.append("the fluidsynth library (libfluidsynth, via ctypes.util.find_library)")
    places = _soundfont_places(cfg.soundfont)
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        missing.append(f"a soundfont (looked at {', '.join(str(p) for p in places)})")
    if not missing:
        return SynthBackend("fluidsynth", str(found), f"fluidsynth with {found}")
    why = "; ".join(missing)
    if cfg.synth == "fluidsynth":
        raise ValueError(f"synth: 'fluidsynth' needs {why}")
    return SynthBackend("pretty_midi", "", f"pretty_midi synthesis: no {why}")


def _triangle(phase: np.ndarray) -> np.ndarray:
    return 2.0 / np.pi * np.arcsin(np.sin(phase))


def _square(phase: np.ndarray) -> np.ndarray:
    return np.sign(np.sin(phase)) * 0.5  # odd harmonics; half gain so it is not louder


def _sawtooth(phase: np.ndarray) -> np.ndarray:
    return (np.mod(phase / np.pi, 2.0) - 1.0) * 0.6


OSCILLATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sine": np.sin,
    "triangle": _triangle,
    "square": _square,
    "sawtooth": _sawtooth,
}


def draw_chord(rng: np.random.Generator, inversion_prob: float) -> Chord:
    """A uniform type and root; the bass another of the first chord tones with the given
    probability (the third, fifth or seventh; never an added ninth or above)."""
    type_index = int(rng.integers(len(TYPES)))
    root = int(rng.integers(12))
    intervals = CHORD_TYPES[TYPES[type_index]]
    bass = root
    if rng.random() < inversion_prob:
        tones = [i for i in intervals[1:4] if i < 12]
        bass = (root + int(rng.choice(tones))) % 12
    return Chord(type_index, root, bass)


def voice(rng: np.random.Generator, chord: Chord) -> list[int]:
    """MIDI pitches of one voicing: the bass first, then the upper voices, ascending."""
    intervals = list(CHORD_TYPES[TYPES[chord.type]])
    low, high = BASS_RANGE
    bass = int(rng.choice([p for p in range(low, high + 1) if p % 12 == chord.bass]))
    if len(intervals) >= 5 and rng.random() < 0.4:  # players leave the fifth out of 9/11/13
        intervals.remove(7)
    upper_pcs = [(chord.root + i) % 12 for i in intervals]
    if chord.inverted and chord.bass in upper_pcs and rng.random() < 0.5:
        upper_pcs.remove(chord.bass)  # the bass tone need not sound again above
    if rng.random() < 0.3:  # not always in stacking order (the ninth below the third...)
        tail = upper_pcs[1:]
        rng.shuffle(tail)
        upper_pcs = [*upper_pcs[:1], *tail]
    pitches = [bass]
    current = bass + int(rng.integers(1, 8))
    open_voicing = rng.random() < 0.4
    for pc in upper_pcs:
        p = current + (pc - current) % 12
        if open_voicing and rng.random() < 0.5:
            p += 12
        while p > TOP_NOTE:
            p -= 12
        pitches.append(p)
        current = p + 1
    if rng.random() < 0.3 and bass + 12 <= TOP_NOTE:
        pitches.append(bass + 12)  # the bass doubled an octave up
    return [bass, *sorted(set(pitches[1:]) - {bass})]


def to_midi(rng: np.random.Generator, pitches: list[int], seconds: float, program: int):
    """One instrument holding the voicing: each note its own velocity, onset and end."""
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    strum = rng.uniform(0.0, 0.03) if rng.random() < 0.5 else 0.0
    start0 = rng.uniform(0.0, 0.1 * seconds)
    for k, pitch in enumerate(pitches):
        start = start0 + k * strum
        end = rng.uniform(max(start + 0.25 * seconds, 0.6 * seconds), 1.2 * seconds)
        velocity = int(rng.integers(45, 121))
        inst.notes.append(pretty_midi.Note(velocity, int(pitch), float(start), float(end)))
    midi.instruments.append(inst)
    return midi


def render_clip(
    cfg: ChordDataConfig, backend: SynthBackend, split: str, index: int
) -> tuple[np.ndarray, Chord]:
    """Clip ``index`` of ``split`` (int16 samples, ``cfg.clip_samples`` long) and its chord."""
    rng = np.random.Generator(np.random.PCG64([cfg.seed, SPLITS[split], index]))
    chord = draw_chord(rng, cfg.inversion_prob)
    pitches = voice(rng, chord)
    n, sr = cfg.clip_samples, cfg.sample_rate
    if backend.name == "fluidsynth":
        midi = to_midi(rng, pitches, cfg.clip_seconds, int(rng.choice(GM_PROGRAMS)))
        audio = midi.fluidsynth(fs=sr, sf2_path=backend.soundfont)
    else:
        waveforms = cfg.waveform_list
        wave = OSCILLATORS[waveforms[int(rng.integers(len(waveforms)))]]
        midi = to_midi(rng, pitches, cfg.clip_seconds, 0)
        audio = midi.instruments[0].synthesize(fs=sr, wave=wave)
        # An attack and an exponential decay: a struck or plucked string more than an organ.
        t = np.arange(len(audio)) / sr
        attack = rng.uniform(0.002, 0.03)
        decay = rng.uniform(0.3, 4.0)
        audio = audio * np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    audio = np.asarray(audio, dtype=np.float64)[:n]
    audio = np.pad(audio, (0, n - len(audio)))
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio = audio / peak
    power = float(np.mean(audio**2)) or 1e-8
    snr_db = rng.uniform(cfg.snr_db_min, cfg.snr_db_max)
    audio = audio + rng.standard_normal(n) * np.sqrt(power / 10 ** (snr_db / 10))
    audio = audio / max(float(np.abs(audio).max()), 1e-8) * rng.uniform(0.2, 0.95)
    return (audio * 32767).astype(np.int16), chord


def render_split(
    cfg: ChordDataConfig,
    backend: SynthBackend,
    split: str,
    count: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` clips of a split: audio (count, clip_samples) int16 and labels (count, 3)
    int64 as (type, root, bass). ``progress(done)`` is called after every clip."""
    audio = np.zeros((count, cfg.clip_samples), dtype=np.int16)
    labels = np.zeros((count, 3), dtype=np.int64)
    for i in range(count):
        audio[i], chord = render_clip(cfg, backend, split, i)
        labels[i] = (chord.type, chord.root, chord.bass)
        if progress is not None:
            progress(i + 1)
    return audio, labels
