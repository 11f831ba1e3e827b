"""A thesaurus node -> a short phrase, through the melody, harmony, dynamics and groove networks.

The node sets the frame, as the plugin's emotion-to-music rules do: its mode (pitches are kept
to its scale, on C), its tempo (the middle of its range), how many notes a bar holds (its note
density) and its articulation (how long each note sounds). The networks fill it in: the
MelodyTransformer's note probabilities choose the pitches, the HarmonyPredictor one chord a bar
(each from the one before), the DynamicsEngine the velocity of every step and the
GroovePredictor which steps sound and how early or late.

Tokens are rows ``(track, pitch, start tick, length in ticks, velocity)``, 12 ticks a grid step
(four steps a beat); track 0 is the melody, 1 the chords. Row 0 is the prompt: ``(node index,
tempo in bpm, ticks per step, bars, 0)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pretty_midi
import torch

from podium.engine.families.emotion_pipeline import data as D
from podium.engine.families.emotion_pipeline import thesaurus as th
from podium.engine.families.emotion_pipeline.model import EmotionPipeline, harmony_context
from podium.engine.families.registry import Sample, SampleRequest
from podium.engine.models.modes import eval_mode

TICKS = 12
"""Ticks per grid step: room for the groove's micro-timing."""
DEFAULT_BARS = 4
MAX_BARS = 32


@torch.no_grad()
def network_outputs(
    model: EmotionPipeline, node: th.Node, device: torch.device
) -> dict[str, np.ndarray]:
    """The four generating networks' outputs for the node's embedding (batch of one, eval mode)."""
    e = torch.tensor([th.embedding(node)], dtype=torch.float32, device=device)  # (1, 64)
    return {
        "melody": model.net("melody")(e)[0].float().cpu().numpy(),  # (128,)
        "dynamics": model.net("dynamics")(e[:, : th.AFFECT])[0].float().cpu().numpy(),  # (16,)
        "groove": model.net("groove")(e)[0].float().cpu().numpy(),  # (32,)
    }


@torch.no_grad()
def next_chord(
    model: EmotionPipeline, node: th.Node, prev: int, device: torch.device
) -> np.ndarray:
    """The HarmonyPredictor's probabilities of the next chord given the previous one, kept to
    the chords of the node's mode (unnormalised)."""
    e = torch.tensor([th.embedding(node)], dtype=torch.float32, device=device)
    prev_t = torch.tensor([prev], device=device)
    probs = model.net("harmony")(harmony_context(e, prev_t))[0].float().cpu().numpy()
    return probs * in_mode(node) + 1e-9 * in_mode(node)  # never all zero: the node's chords stay


def in_mode(node: th.Node) -> np.ndarray:
    """1 for the chords whose notes all lie in the node's scale (on C), 0 for the others."""
    mask = np.zeros(D.CHORDS)
    for c in range(D.NO_CHORD):
        mask[c] = all(p % 12 in node.scale for p in D.chord_pitches(c))
    return mask


def melody_pitches(node: th.Node, note_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pitches a phrase may use (the node's scale, MIDI 36..96) and their weights (the
    MelodyTransformer's probabilities there, the eight likeliest kept)."""
    pitches = np.array([p for p in range(36, 97) if p % 12 in node.scale])
    weights = note_probs[pitches].astype(np.float64)
    keep = np.argsort(-weights, kind="stable")[:8]
    pitches, weights = pitches[keep], weights[keep] + 1e-6
    return pitches, weights / weights.sum()


def onset_steps(node: th.Node, groove: np.ndarray) -> list[int]:
    """The grid steps that sound in every bar: as many as the node's density asks, the ones
    the GroovePredictor scores highest."""
    n = D.onsets_per_bar(node)
    return sorted(np.argsort(-groove[: D.STEPS], kind="stable")[:n].tolist())


def bars_for(request: SampleRequest, tempo: float) -> tuple[int, str]:
    """How many bars a request asks for (default 4, at most 32) and what ends it there."""
    bars, ended = request.bars or DEFAULT_BARS, "bars"
    if request.seconds is not None:
        by_time = max(1, math.ceil(request.seconds / (4 * 60 / tempo)))
        if request.bars is None or by_time < bars:
            bars, ended = by_time, "seconds"
    if bars > MAX_BARS:
        bars, ended = MAX_BARS, "length"
    return bars, ended


def phrase(
    model: EmotionPipeline, node: th.Node, request: SampleRequest, device: torch.device
) -> Sample:
    """One phrase for ``node``, every random choice drawn from the request's seed."""
    t0 = time.perf_counter()
    gen = np.random.Generator(np.random.PCG64(int(request.seed)))
    out = network_outputs(model, node, device)
    tempo = node.tempo
    bars, ended = bars_for(request, tempo)
    pitches, weights = melody_pitches(node, out["melody"])
    steps = onset_steps(node, out["groove"])
    velocity = np.clip(np.round(out["dynamics"] * 127), 1, 127).astype(int)
    offsets = np.round(out["groove"][D.STEPS :] * TICKS / 2).astype(int)  # up to half a step
    gaps = np.diff([*steps, D.STEPS + steps[0]])
    length = th.NOTE_LENGTH[node.articulation]
    rows = [(node.index, round(tempo), TICKS, bars, 0)]
    prev = D.NO_CHORD
    for bar in range(bars):
        probs = next_chord(model, node, prev, device)[: D.NO_CHORD]
        chord = int(gen.choice(D.NO_CHORD, p=probs / probs.sum()))
        prev = chord
        start = bar * D.STEPS * TICKS
        for p in D.chord_pitches(chord):
            rows.append((1, p, start, D.STEPS * TICKS, max(1, int(velocity[0] * 0.7))))
        for s, gap in zip(steps, gaps, strict=True):
            tick = max(0, start + s * TICKS + int(offsets[s]))
            pitch = int(gen.choice(pitches, p=weights))
            rows.append((0, pitch, tick, max(1, round(gap * TICKS * length)), int(velocity[s])))
    limit = request.tokens
    if limit is not None and len(rows) > limit + 1:
        rows, ended = rows[: limit + 1], "length"
    return Sample(
        tokens=np.array(rows, dtype=np.int64),
        conditioning={"node": node.id},
        ended=ended,
        seconds=time.perf_counter() - t0,
        seed=int(request.seed),
        bars=bars,
    )


def sample_batch(
    model: EmotionPipeline, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    """One phrase per request (a blank node is drawn by the request's seed); the model's
    train/eval mode is restored."""
    thesaurus = th.load()
    with eval_mode(model):
        out = []
        for request in requests:
            node_id = request.conditioning.get("node", "")
            if not node_id:
                gen = np.random.Generator(np.random.PCG64(int(request.seed)))
                node_id = thesaurus.nodes[int(gen.integers(len(thesaurus)))].id
            out.append(phrase(model, thesaurus.get(node_id), request, device))
        return out


def to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    """The phrase as MIDI: a piano melody and a string-pad chord track at the node's tempo."""
    _node, tempo, ticks, _bars, _ = (int(v) for v in sample.tokens[0])
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(tempo))
    tick = 60.0 / tempo / 4 / ticks  # seconds
    tracks = [
        pretty_midi.Instrument(program=0, name="melody"),
        pretty_midi.Instrument(program=48, name="chords"),
    ]
    for track, pitch, start, length, velocity in sample.tokens[1:].tolist():
        tracks[track].notes.append(
            pretty_midi.Note(
                velocity=velocity, pitch=pitch, start=start * tick, end=(start + length) * tick
            )
        )
    midi.instruments.extend(tracks)
    return midi
