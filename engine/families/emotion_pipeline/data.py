"""The pipeline's training data: one bar per example, synthesised from the thesaurus by seed.

Each example takes a node and writes one bar for it on a grid of 16 steps (four a beat): onsets
where the node's groove puts them (as many as its note density asks), pitches from a note set
in the node's mode and register, velocities from its dynamics and articulation, and a chord
from a progression in its mode. From that bar come every network's input and target:

==================  ===========================================  ==============================
network             input                                        target
==================  ===========================================  ==============================
EmotionRecognizer   128 note features of the bar (``features``)   the node's 64-d embedding
MelodyTransformer   the embedding (``cond``)                      the bar's note set (128 pitches)
HarmonyPredictor    the embedding + the previous chord, one-hot   the chord (64 classes)
DynamicsEngine      the embedding's affect block (32)             16 step velocities in [0, 1]
GroovePredictor     the embedding                                 16 onsets (+-1), 16 offsets
==================  ===========================================  ==============================

The same seed gives the same examples, split 80/10/10 (train/val/test). Augmentation (training
split only) mixes a node's embedding with one of its related nodes' by a small weight, the
targets staying the node's: the networks learn that neighbours in the thesaurus sound alike.

Real labelled examples can be added (``[data] real_examples``, a JSON list of rows ``{"midi":
path or "features": path, "node_id", "valence", "arousal", "dominance", "intensity"}``). They
train the EmotionRecognizer only (the other heads are masked for them); a bad row is reported
with its index and reason and skipped, never aborting the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from podium.engine.errors import DataError
from podium.engine.families.emotion_pipeline import thesaurus as th
from podium.engine.families.registry import LogFn

STEPS = 16
"""Grid steps in a bar (four a beat, 4/4)."""
FEATURES = 128
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
}
NO_CHORD = 12 * len(QUALITIES)
"""Class 60, "N.C.": the previous chord of a phrase's first; classes 61..63 are reserved (the
HarmonyPredictor's output is 64 wide, as the host expects)."""
CHORDS = 64
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 1, 4, 0), (0, 3, 0, 4), (5, 3, 0, 4))
"""Scale-degree progressions; a node prefers one (its index mod 6), seven times out of ten."""
_ORDER = {  # which grid steps a groove fills first; the rest follow in order
    "straight": (0, 8, 4, 12, 2, 6, 10, 14),
    "swing": (0, 8, 4, 12, 6, 14, 2, 10),
    "syncopated": (0, 3, 6, 10, 12, 14, 8, 4),
    "shuffle": (0, 4, 8, 12, 3, 7, 11, 15),
    "halftime": (0, 8, 12, 4, 10, 14, 2, 6),
    "driving": (0, 4, 8, 12, 2, 6, 10, 14),
}
GROOVE_ORDER = {
    g: tuple(first) + tuple(s for s in range(STEPS) if s not in first)
    for g, first in _ORDER.items()
}
_OFFBEATS = (2, 6, 10, 14)


def groove_offsets(groove: str) -> np.ndarray:
    """Micro-timing of each step (fraction of half a step, -1 early .. 1 late) for a groove."""
    out = np.zeros(STEPS)
    if groove == "swing":
        out[list(_OFFBEATS)] = 0.6
    elif groove == "shuffle":
        out[[3, 7, 11, 15]] = 0.5
    elif groove == "halftime":
        out[:] = 0.1
    elif groove == "driving":
        out[:] = -0.1
    return out


def chord_class(root: int, quality: str) -> int:
    return (root % 12) * len(QUALITIES) + tuple(QUALITIES).index(quality)


def chord_name(cls: int) -> str:
    if cls >= NO_CHORD:
        return "N.C."
    return PITCH_NAMES[cls // len(QUALITIES)] + ":" + tuple(QUALITIES)[cls % len(QUALITIES)]


def chord_pitches(cls: int, bass: int = 48) -> list[int]:
    """The chord's notes in root position from the octave at ``bass`` (none for N.C.)."""
    if cls >= NO_CHORD:
        return []
    root, quality = cls // len(QUALITIES), tuple(QUALITIES)[cls % len(QUALITIES)]
    return [bass + root + i for i in QUALITIES[quality]]


def diatonic_chord(node: th.Node, degree: int) -> int:
    """The triad (a seventh chord for legato nodes) on a scale degree of the node's mode, C tonic."""
    scale = node.scale
    root, third, fifth = (scale[(degree + k) % 7] for k in (0, 2, 4))
    third_up, fifth_up = (third - root) % 12, (fifth - root) % 12
    quality = "maj" if third_up == 4 else ("dim" if fifth_up == 6 else "min")
    if node.articulation == "legato" and quality != "dim":
        quality += "7"
    return chord_class(root, quality)


def velocity_curve(node: th.Node, gen: np.random.Generator | None = None) -> np.ndarray:
    """16 step velocities in [0, 1]: the node's loudness, accents on the beats (strength by
    articulation), a slope by intensity, and a little noise when ``gen`` is given."""
    base = th.DYNAMICS[node.dynamics]
    accent = np.zeros(STEPS)
    accent[[0, 8]], accent[[4, 12]] = 0.1, 0.05
    slope = (np.arange(STEPS) / (STEPS - 1) - 0.5) * (node.intensity - 0.5) * 0.3
    curve = base + accent * th.ARTICULATIONS[node.articulation] + slope
    if gen is not None:
        curve = curve + gen.normal(0.0, 0.02, STEPS)
    return np.clip(curve, 0.05, 1.0)


def onsets_per_bar(node: th.Node) -> int:
    """How many notes a bar of this node holds: its density (notes a beat) times four beats."""
    return int(np.clip(round(node.note_density * 4), 1, STEPS))


def register(node: th.Node) -> tuple[int, int]:
    """Lowest and highest melody pitch: higher and wider with arousal and intensity."""
    low = 55 + round(12 * node.arousal)
    return low, low + 12 + round(7 * node.intensity)


def note_features(
    notes: Sequence[tuple[int, float, float, int]], tempo: float, beats: float
) -> np.ndarray:
    """128 features of some notes ``(pitch, start beat, length in beats, velocity)``, the
    EmotionRecognizer's input; the same function reads synthetic bars and real MIDI files.

    0..95 duration-weighted pitch histogram of MIDI 24..119 (max 1), 96..107 pitch classes
    (max 1), 108..123 onsets per grid step of the bar (max 1), 124 notes a beat / 4, 125 mean
    velocity / 127, 126 tempo / 240, 127 mean length in beats / 4.
    """
    out = np.zeros(FEATURES)
    if not notes:
        return out
    pitch = np.array([n[0] for n in notes])
    start = np.array([n[1] for n in notes], dtype=float)
    length = np.array([n[2] for n in notes], dtype=float)
    velocity = np.array([n[3] for n in notes], dtype=float)
    keep = (pitch >= 24) & (pitch < 120)
    np.add.at(out, pitch[keep] - 24, length[keep])
    np.add.at(out[96:108], pitch % 12, length)
    np.add.at(out[108:124], np.round(start * 4).astype(int) % STEPS, 1.0)
    for lo, hi in ((0, 96), (96, 108), (108, 124)):
        peak = out[lo:hi].max()
        if peak > 0:
            out[lo:hi] /= peak
    out[124] = min(1.0, len(notes) / max(beats, 1e-6) / 4)
    out[125] = velocity.mean() / 127
    out[126] = min(1.0, tempo / 240)
    out[127] = min(1.0, length.mean() / 4)
    return out


@dataclass(frozen=True)
class Bar:
    """One synthetic example's bar and the targets drawn from it."""

    melody: np.ndarray  # (128,) 0/1
    prev_chord: int
    chord: int
    dynamics: np.ndarray  # (16,) in [0, 1]
    groove: np.ndarray  # (32,) 16 onsets (+-1) then 16 offsets
    features: np.ndarray  # (128,)


def synth_bar(node: th.Node, gen: np.random.Generator, noise: float) -> Bar:
    """One bar for ``node``, every choice drawn from ``gen``."""
    tempo = float(gen.uniform(*node.tempo_range))
    order = list(GROOVE_ORDER[node.groove])
    n = onsets_per_bar(node)
    chosen = order[:n]
    if n < STEPS and gen.random() < 0.2:  # a player's variation: one onset moved
        chosen[int(gen.integers(n))] = order[int(gen.integers(n, STEPS))]
    steps = sorted(set(chosen))
    low, high = register(node)
    candidates = [p for p in range(low, high + 1) if (p % 12) in node.scale]
    k = int(np.clip(2 + round(node.note_density), 3, len(candidates)))
    note_set = sorted(gen.choice(candidates, size=k, replace=False).tolist())
    melody = np.zeros(128)
    melody[note_set] = 1.0
    preferred = node.index % len(PROGRESSIONS)
    which = preferred if gen.random() < 0.7 else int(gen.integers(len(PROGRESSIONS)))
    progression = [diatonic_chord(node, d) for d in PROGRESSIONS[which]]
    j = int(gen.integers(len(progression)))
    prev = NO_CHORD if j == 0 else progression[j - 1]
    curve = velocity_curve(node, gen)
    onsets = -np.ones(STEPS)
    onsets[steps] = 1.0
    offsets = np.clip(groove_offsets(node.groove) + gen.normal(0, 0.05, STEPS), -1, 1)
    gap = np.diff([*steps, STEPS]) / 4  # beats to the next onset
    notes = [
        (
            int(gen.choice(note_set)),
            s / 4,
            g * th.NOTE_LENGTH[node.articulation],
            int(curve[s] * 127),
        )
        for s, g in zip(steps, gap, strict=True)
    ]
    notes += [(p, 0.0, 4.0, int(curve[0] * 90)) for p in chord_pitches(progression[j])]
    features = note_features(notes, tempo, 4.0) + gen.normal(0.0, noise, FEATURES)
    return Bar(melody, prev, progression[j], curve, np.concatenate([onsets, offsets]), features)


# -- real labelled examples -------------------------------------------------------------------


def midi_features(path: Path) -> np.ndarray:
    """The 128 note features of a MIDI file (ValueError when unreadable or without notes)."""
    import pretty_midi

    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # pretty_midi raises many kinds on a broken file
        raise ValueError(f"cannot read the MIDI file {path} ({type(exc).__name__})") from None
    tempi = midi.get_tempo_changes()[1]
    tempo = float(tempi[0]) if len(tempi) else 120.0
    per_second = tempo / 60
    notes = [
        (n.pitch, n.start * per_second, (n.end - n.start) * per_second, n.velocity)
        for inst in midi.instruments
        if not inst.is_drum
        for n in inst.notes
    ]
    if not notes:
        raise ValueError(f"the MIDI file {path} has no notes")
    return note_features(notes, tempo, max(midi.get_end_time() * per_second, 1.0))


def file_features(path: Path) -> np.ndarray:
    """128 features from a ``.npy`` file or a JSON list of numbers (ValueError otherwise)."""
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = np.array(json.loads(path.read_text(encoding="utf-8")), dtype=float)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the feature file {path} ({exc})") from None
    values = np.asarray(values, dtype=float).reshape(-1)
    if values.shape != (FEATURES,) or not np.isfinite(values).all():
        raise ValueError(f"the feature file {path} must hold {FEATURES} finite numbers")
    return values


_AFFECT_RANGES = {"valence": (-1, 1), "arousal": (0, 1), "dominance": (-1, 1), "intensity": (0, 1)}


@dataclass(frozen=True)
class RealExample:
    index: int
    node: th.Node
    features: np.ndarray
    affect: tuple[float, float, float, float]


def _real_row(row: Any, base: Path, thesaurus: th.Thesaurus) -> tuple[th.Node, np.ndarray, tuple]:
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    node_id = row.get("node_id")
    if not isinstance(node_id, str) or node_id not in thesaurus:
        raise ValueError(f"node_id {node_id!r} is not a thesaurus node")
    affect = []
    for name, (lo, hi) in _AFFECT_RANGES.items():
        value = row.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name}: must be in [{lo}, {hi}] (got {value})")
        affect.append(float(value))
    kinds = [k for k in ("midi", "features") if k in row]
    if len(kinds) != 1 or not isinstance(row[kinds[0]], str):
        raise ValueError('give one of "midi" or "features": a file path')
    path = Path(row[kinds[0]])
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ValueError(f"{kinds[0]}: no file {path}")
    features = midi_features(path) if kinds[0] == "midi" else file_features(path)
    return thesaurus.get(node_id), features, tuple(affect)


def load_real_examples(path: Path, log: LogFn) -> list[RealExample]:
    """The good rows of a labelled-examples JSON file; each bad row is logged with its index and
    reason and skipped. A file that is not a JSON list at all is a ``DataError``."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"data.real_examples {path}: cannot read ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(f"data.real_examples {path}: expected a JSON list of rows")
    thesaurus = th.load()
    good: list[RealExample] = []
    for i, row in enumerate(rows):
        try:
            node, features, affect = _real_row(row, path.parent, thesaurus)
        except ValueError as exc:
            log(f"real examples {path}: row {i}: {exc}; skipped")
            continue
        good.append(RealExample(i, node, features, affect))
    log(f"real examples {path}: {len(good)} of {len(rows)} rows used")
    return good


# -- the datasets -----------------------------------------------------------------------------


class PipelineExamples(Dataset):
    """Examples as one tensor per field; ``music`` is 0 for rows that train the recognizer only."""

    FIELDS = ("features", "emotion", "cond", "melody", "prev_chord", "chord", "dynamics", "groove")

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["node"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


@dataclass
class PipelineData:
    train: PipelineExamples
    val: PipelineExamples | None
    test: PipelineExamples
    model_info: dict[str, Any] = field(default_factory=dict)


def _stack(rows: list[dict[str, Any]]) -> PipelineExamples:
    ints = {"prev_chord", "chord", "node"}
    return PipelineExamples(
        {
            k: torch.tensor(
                np.array([r[k] for r in rows]), dtype=torch.long if k in ints else torch.float32
            )
            for k in rows[0]
        }
    )


def _synthetic_row(node: th.Node, emb: np.ndarray, gen: np.random.Generator, noise: float) -> dict:
    bar = synth_bar(node, gen, noise)
    return {
        "features": bar.features,
        "emotion": emb[node.index],
        "cond": emb[node.index],
        "melody": bar.melody,
        "prev_chord": bar.prev_chord,
        "chord": bar.chord,
        "dynamics": bar.dynamics,
        "groove": bar.groove,
        "music": 1.0,
        "node": node.index,
    }


def _real_dict(ex: RealExample) -> dict:
    target = np.array(th.embedding(ex.node, ex.affect))
    return {
        "features": ex.features,
        "emotion": target,
        "cond": target,
        "melody": np.zeros(128),
        "prev_chord": NO_CHORD,
        "chord": NO_CHORD,
        "dynamics": np.zeros(STEPS),
        "groove": np.zeros(2 * STEPS),
        "music": 0.0,
        "node": ex.node.index,
    }


def split_80_10_10(n: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = gen.permutation(n)
    a, b = math.floor(0.8 * n), math.floor(0.9 * n)
    return order[:a], order[a:b], order[b:]


def augment(rows: list[dict], thesaurus: th.Thesaurus, emb: np.ndarray, p: float, mix: float,
            gen: np.random.Generator) -> int:  # fmt: skip
    """Mix the ``cond`` of a fraction ``p`` of synthetic rows with a related node's embedding
    (weight up to ``mix``); returns how many were mixed."""
    mixed = 0
    for row in rows:
        if row["music"] and gen.random() < p:
            node = thesaurus.nodes[int(row["node"])]
            other = thesaurus.get(node.related[int(gen.integers(len(node.related)))])
            lam = float(gen.uniform(0.0, mix))
            row["cond"] = (1 - lam) * row["cond"] + lam * emb[other.index]
            mixed += 1
    return mixed


def build_data(cfg: Any, log: LogFn) -> PipelineData:
    """The examples of a ``[data]`` table: the same on every machine for the same seed."""
    thesaurus = th.load()
    emb = np.array([th.embedding(n) for n in thesaurus.nodes])
    gen = np.random.Generator(np.random.PCG64(cfg.seed))
    picks = gen.integers(len(thesaurus), size=cfg.examples)
    synthetic = [_synthetic_row(thesaurus.nodes[int(i)], emb, gen, cfg.noise) for i in picks]
    parts = [[synthetic[i] for i in idx] for idx in split_80_10_10(len(synthetic), gen)]
    real: list[RealExample] = []
    if cfg.real_examples:
        real = load_real_examples(Path(cfg.real_examples).expanduser(), log)
        rows = [_real_dict(ex) for ex in real]
        for part, idx in zip(parts, split_80_10_10(len(rows), gen), strict=True):
            part += [rows[i] for i in idx]
    mixed = augment(parts[0], thesaurus, emb, cfg.augment, cfg.mix, gen)
    train, val, test = (_stack(p) for p in parts)
    sizes = {"train": len(train), "val": len(val), "test": len(test)}
    log(
        f"emotion pipeline: {len(thesaurus)} nodes, {cfg.examples} synthetic + {len(real)} real "
        f"examples (train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; "
        f"{mixed} train examples mixed with a related node)"
    )
    info = {"nodes": len(thesaurus), "examples": sizes, "real_examples": len(real)}
    return PipelineData(train, val, test, info)
