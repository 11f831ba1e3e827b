"""The toy family's sampler: a few notes per bar, their pitches picked by the classifier.

Every random number comes from the request's seed (numpy's PCG64), so the same seed and weights
give the same MIDI bytes. Tokens are rows ``(pitch, start, duration, velocity)`` in eighths of a
bar; row 0 is the prompt (the mood's index), as in every podium sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pretty_midi
import torch

from podium.engine.families.registry import Sample, SampleRequest
from tests.families.toy import MOODS, _check_conditioning

SECONDS_PER_BAR = 2.0
NOTES_PER_BAR = {"calm": 2, "busy": 8}
BASE = {"calm": 60, "busy": 67}
SCALE = (0, 2, 4, 5, 7, 9, 11, 12)
DEFAULT_TOKENS = 256


@torch.inference_mode()
def sample_batch(model: Any, requests: Sequence[SampleRequest], device: Any) -> list[Sample]:
    from podium.engine.generate import GenerateError

    was_training = model.training
    model.eval()
    try:
        out = []
        for request in requests:
            t0 = time.perf_counter()
            gen = np.random.Generator(np.random.PCG64(int(request.seed)))
            mood = _check_conditioning(request.conditioning)["mood"]
            mood = mood or MOODS[int(gen.integers(len(MOODS)))]
            per_bar = NOTES_PER_BAR[mood]
            bars, ended = _bars(request, per_bar)
            cap = request.tokens if request.tokens is not None else DEFAULT_TOKENS
            n = min(bars * per_bar, cap)
            if n < bars * per_bar:
                ended = "length"
            x = torch.from_numpy(gen.standard_normal((n, model.dim)).astype(np.float32))
            logits = model.logits(x.to(device)).float().cpu()
            if not torch.isfinite(logits).all():
                raise GenerateError("the class head produced non-finite logits (NaN or inf)")
            classes = logits.argmax(dim=-1).numpy()
            rows = [(MOODS.index(mood), 0, 0, 0)]
            step = 8 // per_bar
            for i, c in enumerate(classes):
                pitch = BASE[mood] + SCALE[int(c) % len(SCALE)]
                velocity = 50 + int(gen.integers(40))
                rows.append((pitch, i * step, step, velocity))
            out.append(
                Sample(
                    tokens=np.array(rows, dtype=np.int64),
                    conditioning={"mood": mood},
                    ended=ended,
                    seconds=time.perf_counter() - t0,
                    seed=int(request.seed),
                )
            )
        return out
    finally:
        model.train(was_training)


def _bars(request: SampleRequest, per_bar: int) -> tuple[int, str]:
    """How many bars a request asks for, and what ends it there."""
    bars, ended = request.bars, "bars"
    if request.seconds is not None:
        by_time = max(1, math.ceil(request.seconds / SECONDS_PER_BAR))
        if bars is None or by_time < bars:
            bars, ended = by_time, "seconds"
    if bars is None:  # only a token cap: as many bars as it fills
        tokens = request.tokens if request.tokens is not None else DEFAULT_TOKENS
        bars, ended = math.ceil(tokens / per_bar), "length"
    return bars, ended


def to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="toy")
    eighth = SECONDS_PER_BAR / 8
    for pitch, start, duration, velocity in sample.tokens[1:].tolist():
        piano.notes.append(
            pretty_midi.Note(
                velocity=velocity,
                pitch=pitch,
                start=start * eighth,
                end=(start + duration) * eighth,
            )
        )
    midi.instruments.append(piano)
    return midi
