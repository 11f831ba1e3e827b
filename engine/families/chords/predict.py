"""``podium predict RUN AUDIO.wav`` for the chords family: the chord of every window.

The audio is read at the model's sample rate and cut into windows of one training clip,
every half clip (the last one padded with silence). Each window gets the 3 best (type, root)
pairs by the product of the two heads' probabilities, each written with the bass head's best
bass (``C:maj7/3``); the window's label is the first of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from podium.engine.errors import DataError
from podium.engine.families.chords.data import read_wav
from podium.engine.families.chords.labels import Chord
from podium.engine.families.registry import DataInfo, Prediction, Profile

TOP = 3
BATCH = 64


def windows(audio: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(n, size) windows every ``hop`` samples, the last padded with zeros."""
    n = max(1, -(-(len(audio) - size) // hop) + 1) if len(audio) > size else 1
    out = np.zeros((n, size), dtype=np.float32)
    for i in range(n):
        piece = audio[i * hop : i * hop + size]
        out[i, : len(piece)] = piece
    return out


@torch.no_grad()
def predict_file(
    model: nn.Module, profile: Profile, info: DataInfo, path: Path
) -> list[Prediction]:
    """One prediction per window of the WAV file ``path``.

    Raises:
        DataError: the file is missing, not a WAV file scipy can read, or silent/too short.
    """
    rate = int(info.get("sample_rate") or profile.data.sample_rate)
    size = int(info.get("clip_samples") or profile.data.clip_samples)
    try:
        audio = read_wav(path, rate)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it as WAV ({exc})") from None
    if len(audio) < size // 4:
        raise DataError(f"{path}: {len(audio) / rate:.2f} s of audio; a window is {size / rate} s")
    hop = size // 2
    clips = windows(audio, size, hop)
    peaks = np.maximum(np.abs(clips).max(axis=1, keepdims=True), 1e-8)
    clips = clips / peaks * 0.9  # as the training clips: normalised per clip
    device = next(model.parameters()).device
    results: list[Prediction] = []
    for b in range(0, len(clips), BATCH):
        logits = model.logits(torch.from_numpy(clips[b : b + BATCH]).to(device))
        p_type = logits["type"].softmax(-1)  # (B, 32)
        p_root = logits["root"].softmax(-1)  # (B, 12)
        bass = logits["bass"].argmax(-1)  # (B,)
        joint = (p_type[:, :, None] * p_root[:, None, :]).flatten(1)  # (B, 32 * 12)
        best = joint.topk(TOP, dim=-1)
        for i in range(len(joint)):
            k = b + i
            top = []
            for score, flat in zip(best.values[i].tolist(), best.indices[i].tolist(), strict=True):
                chord = Chord(flat // 12, flat % 12, int(bass[i]))
                top.append((chord.label(), float(score)))
            start = k * hop / rate
            results.append(Prediction(start, start + size / rate, top[0][0], tuple(top)))
    return results
