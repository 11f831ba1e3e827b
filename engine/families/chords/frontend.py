"""The log-frequency front end: audio (B, samples) -> log-magnitude CQT (B, bins, frames).

Two kinds, chosen by ``model.frontend``:

* ``nnaudio``: nnAudio's ``CQT1992v2`` (the field's library for a constant-Q transform on
  torch: one strided conv1d with the CQT kernels). Measured here (bench/chords_frontend.py):
  a sine at every semitone from C2 to B6 peaks in its own bin (0 bins off across 60 notes),
  9% of a note's energy falls beyond +-1 semitone (the stft filterbank: 23%), and a batch of
  32 one-second clips at 8 kHz takes 70 ms on one idle CPU thread (the filterbank 0.75x). It is right for
  podium, so it is the default, with one change: its default ``pad_mode="reflect"`` pads by
  half the longest kernel (4,096 samples for C2 at 24 bins an octave and 8 kHz) and fails on
  any clip shorter than that (0.51 s), so podium pads with zeros (``constant``).
* ``stft``: triangular log-frequency filters over ``torch.stft``'s magnitude, each spanning
  its neighbours' centres: the same bins without nnAudio, coarser at the bottom (an FFT long
  enough for C2's semitones is used, so the lowest bins are still a semitone apart).

Both kernels are fixed (not trained); their tensors are buffers, so a checkpoint holds them
and a model built on the meta device is whole once its state is loaded. Each clip is scaled
to a peak of 1 first, then the magnitude is compressed (``log1p``) and standardised per clip,
so a loud and a quiet clip look alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from podium.engine.families.chords.config import ChordModelConfig


class STFTFilterbank(nn.Module):
    """Log-spaced triangular filters over an STFT's magnitude."""

    def __init__(self, cfg: ChordModelConfig, sample_rate: int) -> None:
        super().__init__()
        self.hop = cfg.hop_length
        # Resolve the lowest semitone: bins 2**(1/12) - 1 (~6%) of fmin apart.
        need = sample_rate / (cfg.fmin * (2 ** (1 / 12) - 1))
        self.n_fft = 2 ** math.ceil(math.log2(need))
        # Built in numpy: the same tables on any device, and cheap under torch.device("meta").
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)  # (n_fft/2+1,)
        k = np.arange(-1, cfg.n_bins + 1, dtype=np.float64)
        centres = cfg.fmin * 2.0 ** (k / cfg.bins_per_octave)  # (n_bins + 2,)
        lo, mid, hi = centres[:-2, None], centres[1:-1, None], centres[2:, None]
        up = (freqs[None, :] - lo) / (mid - lo)
        down = (hi - freqs[None, :]) / (hi - mid)
        weights = np.clip(np.minimum(up, down), 0.0, None)  # (n_bins, n_fft/2+1)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        window = np.hanning(self.n_fft + 1)[:-1]  # periodic, as torch.hann_window
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio,
            self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
            return_complex=True,
        ).abs()  # (B, n_fft/2+1, frames)
        return torch.einsum("kf,bft->bkt", self.weights, spec)  # (B, n_bins, frames)


class Frontend(nn.Module):
    """CQT magnitude, compressed and standardised per clip."""

    def __init__(self, cfg: ChordModelConfig, sample_rate: int) -> None:
        super().__init__()
        if cfg.fmax() >= sample_rate / 2:
            raise ValueError(
                f"model.octaves: the top bin ({cfg.fmax():.0f} Hz) is above the Nyquist "
                f"frequency of data.sample_rate {sample_rate} Hz; use fewer octaves or a "
                "higher sample rate"
            )
        if cfg.frontend == "nnaudio":
            from nnAudio.features import CQT1992v2

            self.cqt: nn.Module = CQT1992v2(
                sr=sample_rate,
                hop_length=cfg.hop_length,
                fmin=cfg.fmin,
                n_bins=cfg.n_bins,
                bins_per_octave=cfg.bins_per_octave,
                output_format="Magnitude",
                pad_mode="constant",  # reflect needs clips longer than half the C2 kernel
                verbose=False,
            )
        else:
            self.cqt = STFTFilterbank(cfg, sample_rate)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = audio.float()
        audio = audio / audio.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)  # any gain
        spec = self.cqt(audio)  # (B, n_bins, frames)
        spec = torch.log1p(100.0 * spec)
        mean = spec.mean(dim=(1, 2), keepdim=True)
        std = spec.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        return (spec - mean) / std
