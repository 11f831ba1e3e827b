"""The chords family's two CQT front ends, side by side: accuracy and speed (one CPU thread).

1. Accuracy: a sine at every semitone from C2 to B6 (60 notes); which bin holds the most
   energy, against the note's own bin (2 bins a semitone). Also each front end's leakage:
   the share of a note's energy outside +-1 semitone of it.
2. Speed: forward of a batch of 32 one-second clips at 8 kHz, median of ``--repeats``, and
   the ratio stft / nnaudio.
3. Short clips: nnAudio's default ``pad_mode="reflect"`` on a 0.5 s clip (podium pads with
   zeros for that reason).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_chords_frontend.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from podium.engine.families.chords.config import ChordModelConfig
from podium.engine.families.chords.frontend import Frontend

SR = 8000


def sines(midis: list[int], seconds: float = 1.0) -> torch.Tensor:
    t = np.arange(int(SR * seconds)) / SR
    rows = [np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in midis]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def accuracy(front: Frontend) -> tuple[set[int], float]:
    midis = list(range(36, 96))
    with torch.no_grad():
        energy = front.cqt(sines(midis)).mean(dim=-1)  # (60, 120)
    errors = {int(energy[i].argmax()) - 2 * (m - 36) for i, m in enumerate(midis)}
    leak = []
    for i, m in enumerate(midis):
        own = 2 * (m - 36)
        near = energy[i, max(own - 2, 0) : own + 3].sum()
        leak.append(float(1 - near / energy[i].sum()))
    return errors, statistics.mean(leak)


def speed(front: Frontend, repeats: int) -> float:
    batch = torch.randn(32, SR)
    times = []
    with torch.no_grad():
        front(batch)
        for _ in range(repeats):
            t0 = time.perf_counter()
            front(batch)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds = {}
    for kind in ("nnaudio", "stft"):
        front = Frontend(ChordModelConfig(frontend=kind), SR)
        errors, leak = accuracy(front)
        seconds[kind] = speed(front, args.repeats)
        print(
            f"{kind:8s} bin error over C2..B6: {sorted(errors)}  leakage beyond +-1 semitone "
            f"{leak:.1%}  batch of 32 x 1 s: {seconds[kind] * 1000:.0f} ms"
        )
    print(f"stft / nnaudio time: {seconds['stft'] / seconds['nnaudio']:.2f}x")
    from nnAudio.features import CQT1992v2

    reflect = CQT1992v2(sr=SR, hop_length=256, fmin=65.406, n_bins=120, bins_per_octave=24,
                        verbose=False)  # fmt: skip
    try:
        reflect(sines([60], 0.5))
        print("nnAudio reflect padding on a 0.5 s clip: works")
    except RuntimeError as exc:
        print(f"nnAudio reflect padding on a 0.5 s clip: fails ({str(exc).splitlines()[0][:90]})")


if __name__ == "__main__":
    main()
