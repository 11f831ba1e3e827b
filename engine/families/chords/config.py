"""The ``chords`` family's profile tables: ``[model]`` (front end, encoder, heads) and
``[data]`` (what is rendered, and real recordings to add).

Plain dataclasses (no torch), so loading and checking a profile costs no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WAVEFORMS = ("sine", "triangle", "square", "sawtooth")
"""The oscillators pretty_midi's own synthesis is given when fluidsynth is not there: four
timbres with different overtone series stand in for instruments."""


@dataclass(frozen=True, kw_only=True)
class ChordModelConfig:
    """The profile's ``[model]`` table: CQT front end, conv subsampling, transformer, heads."""

    frontend: Literal["nnaudio", "stft"] = "nnaudio"
    """Constant-Q transform: nnAudio's ``CQT1992v2`` (the field's library for a CQT on torch),
    or a log-frequency triangular filterbank over ``torch.stft`` (no nnAudio needed)."""
    fmin: float = 65.406
    """Lowest bin's centre frequency in Hz (C2)."""
    octaves: int = 5
    """Octaves the transform covers above ``fmin``."""
    bins_per_octave: int = 24
    """Frequency bins per octave (24: quarter tones, robust to detuned recordings)."""
    hop_length: int = 256
    """Samples between frames."""
    channels: int = 16
    """Channels of the two convolutional subsampling layers."""
    d_model: int = 128
    """Width of the transformer encoder."""
    n_layers: int = 2
    """Encoder layers."""
    n_heads: int = 4
    """Attention heads; must divide ``d_model``."""
    d_ff: int = 256
    """Feed-forward width of each encoder layer."""
    dropout: float = 0.1
    """Dropout in the encoder and before the heads."""
    label_smoothing: float = 0.1
    """Label smoothing of every head's cross-entropy (the guide's 0.1)."""

    def __post_init__(self) -> None:
        if self.frontend not in ("nnaudio", "stft"):
            raise ValueError(f"frontend: must be 'nnaudio' or 'stft' (got {self.frontend!r})")
        for name in ("octaves", "bins_per_octave", "hop_length", "channels", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        for name in ("n_layers", "n_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.bins_per_octave % 12:
            raise ValueError(
                f"bins_per_octave: must be a multiple of 12 (got {self.bins_per_octave}), so "
                "every semitone has the same number of bins"
            )
        if not 20.0 <= self.fmin <= 1000.0:
            raise ValueError(f"fmin: must be between 20 and 1000 Hz (got {self.fmin})")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model: must be divisible by n_heads (got {self.d_model} and {self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1) (got {self.label_smoothing})")

    @property
    def n_bins(self) -> int:
        return self.octaves * self.bins_per_octave

    def fmax(self) -> float:
        """The highest bin's centre frequency."""
        return self.fmin * 2.0 ** ((self.n_bins - 1) / self.bins_per_octave)


@dataclass(frozen=True, kw_only=True)
class ChordDataConfig:
    """The profile's ``[data]`` table: synthetic chords rendered once into the cache, plus an
    optional folder of real recordings."""

    n_train: int = 8000
    """Rendered training clips."""
    n_val: int = 800
    """Rendered validation clips (another seed stream: never the same chords as training)."""
    seed: int = 0
    """Everything rendered is drawn from it; the same seed gives the same audio, byte for byte."""
    sample_rate: int = 8000
    """Audio sample rate in Hz (real recordings are resampled to it)."""
    clip_seconds: float = 1.0
    """Length of every clip (and of the prediction window)."""
    inversion_prob: float = 0.3
    """Share of rendered chords with a chord tone other than the root in the bass."""
    snr_db_min: float = 15.0
    """Lowest signal-to-noise ratio, in dB, of the white noise added to each clip."""
    snr_db_max: float = 45.0
    """Highest signal-to-noise ratio; each clip draws one between the two."""
    waveforms: str = ",".join(WAVEFORMS)
    """Timbres of pretty_midi's synthesis, comma-separated (some of ``WAVEFORMS``); fluidsynth
    draws General MIDI programs instead."""
    synth: Literal["auto", "pretty_midi", "fluidsynth"] = "auto"
    """``fluidsynth`` (pyfluidsynth, the library and a GM soundfont must be there), ``pretty_midi``
    (its own additive synthesis), or ``auto``: fluidsynth when all three are found."""
    soundfont: str = ""
    """A General MIDI soundfont (.sf2) for fluidsynth; "" looks in the usual places."""
    real_dir: str = ""
    """A folder of WAV files with real, labelled chords ("" = none)."""
    real_csv: str = ""
    """Their labels: a CSV with columns file, start, end, label (``C:maj7/3``); relative to
    ``real_dir`` unless absolute; "" means ``real_dir``/labels.csv."""
    real_split: Literal["val", "train"] = "val"
    """Where the real clips go: held out for validation (a real-world check) or into training."""
    cache_dir: str = ""
    """Where rendered audio lives; "" means ``$PODIUM_CACHE``, else ``$XDG_CACHE_HOME/podium``,
    else ``~/.cache/podium``."""

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError(f"n_train, n_val: must be >= 1 (got {self.n_train}, {self.n_val})")
        if self.n_train + self.n_val > 200_000:
            raise ValueError(
                f"n_train + n_val: at most 200,000 clips (got {self.n_train + self.n_val:,}); "
                "they are rendered into the cache"
            )
        if not 4000 <= self.sample_rate <= 48000:
            raise ValueError(f"sample_rate: must be 4000..48000 Hz (got {self.sample_rate})")
        if not 0.25 <= self.clip_seconds <= 10.0:
            raise ValueError(f"clip_seconds: must be 0.25..10 s (got {self.clip_seconds})")
        if not 0.0 <= self.inversion_prob <= 1.0:
            raise ValueError(f"inversion_prob: must be in [0, 1] (got {self.inversion_prob})")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min: {self.snr_db_min} is above snr_db_max {self.snr_db_max}")
        bad = [w for w in self.waveform_list if w not in WAVEFORMS]
        if bad or not self.waveform_list:
            raise ValueError(
                f"waveforms: {bad[0] if bad else '(none)'!r}: must be some of {', '.join(WAVEFORMS)}"
            )
        if self.synth not in ("auto", "pretty_midi", "fluidsynth"):
            raise ValueError(
                f"synth: must be 'auto', 'pretty_midi' or 'fluidsynth' (got {self.synth!r})"
            )
        if self.real_split not in ("val", "train"):
            raise ValueError(f"real_split: must be 'val' or 'train' (got {self.real_split!r})")
        if self.real_csv and not self.real_dir:
            raise ValueError("real_csv: needs real_dir (the folder its file names are in)")

    @property
    def waveform_list(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.waveforms.split(",") if w.strip())

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)
