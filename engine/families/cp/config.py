"""The ``cp`` family's profile tables: ``[model]``, ``[data]`` and its own ``[generate]``.

Plain dataclasses (no torch), so loading and checking a profile costs no torch import.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

from podium.engine.families.cp.vocab import FIELDS


def _default_emb_sizes() -> dict[str, int]:
    # EMOPIA's sizes (tempo 128, chord 256, bar-beat 64, type 32, pitch 512, duration 128,
    # velocity 128, emotion 128), plus key at 128.
    return {
        "tempo": 128,
        "chord": 256,
        "bar_beat": 64,
        "type": 32,
        "pitch": 512,
        "duration": 128,
        "velocity": 128,
        "emotion": 128,
        "key": 128,
    }


@dataclass(frozen=True, kw_only=True)
class CPTransformerConfig:
    """The profile's ``[model]`` table for the ``cp`` family. Defaults are EMOPIA's model."""

    d_model: int = 512
    """Width of the hidden state."""
    n_layers: int = 12
    """Number of post-norm attention + feed-forward layers."""
    n_heads: int = 8
    """Attention heads; must divide ``d_model``."""
    d_ff: int = 2048
    """Hidden width of each feed-forward block."""
    dropout: float = 0.1
    """Dropout after the input projection, attention and feed-forward; 0 disables it."""
    max_len: int = 1024
    """Longest sequence (positions) the model accepts, in training and in generation."""
    emb_sizes: dict[str, int] = field(default_factory=_default_emb_sizes)
    """Embedding width per field; must name exactly the nine CP fields."""
    activation: Literal["gelu", "relu"] = "gelu"
    """Feed-forward non-linearity (EMOPIA uses GELU)."""
    attention: Literal["linear"] = "linear"
    """Attention kind; the CP family uses causal linear attention (Katharopoulos et al. 2020)."""
    attention_backend: Literal["torch", "fla", "fast_transformers", "auto"] = "torch"
    """Kernel of the parallel form: ``torch`` (pure-torch chunked, any device), ``fla``
    (flash-linear-attention's Triton kernel, CUDA only; ``pip install 'podium[gpu]'``),
    ``fast_transformers`` (that package's kernel; ``pip install 'podium[fast]'``) or ``auto``
    (on CUDA: fla, else fast_transformers, whichever is importable first, else torch; on the
    CPU: torch)."""
    condition: Literal["first", "every"] = "first"
    """Where the emotion and key reach the model: ``first`` (EMOPIA: only as the first token) or
    ``every`` (also added to every position's input; see the module docstring)."""
    key_relative: bool = False
    """Add key-relative logits to the pitch and chord heads (see the module docstring)."""
    bar_positions: int = 0
    """Learned bar-number embeddings added to every input (0 = none; the bar number is capped at
    this minus one; see the module docstring)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1 (got {value})")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model: must be divisible by n_heads (got {self.d_model} and {self.n_heads}); "
                "pick a d_model that is a multiple of n_heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")
        missing = [f for f in FIELDS if f not in self.emb_sizes]
        unknown = [f for f in self.emb_sizes if f not in FIELDS]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise ValueError(
                f"emb_sizes: {'; '.join(parts)} (must name exactly: {', '.join(FIELDS)})"
            )
        for name, size in self.emb_sizes.items():
            if size < 1:
                raise ValueError(f"emb_sizes: {name} must be >= 1 (got {size})")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation: must be 'gelu' or 'relu' (got {self.activation!r})")
        if self.bar_positions < 0:
            raise ValueError(f"bar_positions: must be >= 0 (got {self.bar_positions})")
        if self.condition not in ("first", "every"):
            raise ValueError(f"condition: must be 'first' or 'every' (got {self.condition!r})")
        if self.attention != "linear":
            raise ValueError(f"attention: only 'linear' is supported (got {self.attention!r})")
        if self.attention_backend not in ("torch", "fla", "fast_transformers", "auto"):
            raise ValueError(
                "attention_backend: must be 'torch', 'fla', 'fast_transformers' or 'auto' "
                f"(got {self.attention_backend!r})"
            )
        # Checked here, not only when the model is built, so the profile error names its line.
        # That fla runs on CUDA only is checked where the device is known (``check_device``).
        if self.attention_backend == "fast_transformers" and not _importable("fast_transformers"):
            raise ValueError(
                "attention_backend: 'fast_transformers' is not importable here; install it "
                '(pip install \'podium[fast]\') or use "auto" or "torch"'
            )
        if self.attention_backend == "fla" and not _importable("fla", "triton"):
            raise ValueError(
                "attention_backend: 'fla' (flash-linear-attention, with Triton) is not importable "
                'here; install it (pip install \'podium[gpu]\', CUDA only) or use "auto" or "torch"'
            )

    def check_device(self, device_type: str) -> None:
        """What this model cannot do on ``device_type``: asked by the session once the run's
        device is known and before anything starts (a ValueError, as ``__post_init__``). The
        rule is the attention layer's own (``resolve_backend``: fla off CUDA), asked ahead of
        the first forward; the session has loaded torch by then. On CUDA the profile check has
        already found the kernels, and importing them here would only come before the run's
        own import (in a detached run, in another process)."""
        if device_type != "cuda":
            from podium.engine.models.linear_attention import resolve_backend

            resolve_backend(self.attention_backend, device_type)


def _importable(*names: str) -> bool:
    """Whether these top-level packages are installed, found without importing them (a profile
    check must not import torch)."""
    return all(importlib.util.find_spec(name) is not None for name in names)


MAX_DEMO_PIECES = 100_000
"""A demo corpus bigger than this fills the cache for nothing (EMOPIA has 1,078 pieces)."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The profile's ``[data]`` table for the ``cp`` family."""

    source: Literal["demo", "emopia", "midi_dir"] = "demo"
    """Where pieces come from: the generated demo corpus, an EMOPIA-layout directory, or any folder
    of MIDI files with labels."""
    path: str = ""
    """Dataset directory for ``emopia`` and ``midi_dir`` (``~`` expanded, relative to the working
    directory); unused for ``demo``."""
    n_pieces: int = 400
    """Demo corpus size (pieces)."""
    corpus_seed: int = 0
    """Demo corpus seed; the same seed gives the same pieces, byte for byte."""
    bars: int = 8
    """Bars per demo piece."""
    seq_len: int = 256
    """Tokens per training example (model inputs); each example holds ``seq_len + 1`` tokens."""
    keep_drums: bool = False
    """Tokenise drum tracks too, their notes as pitches (General MIDI key numbers: the
    vocabulary has no instrument field). Off: drum tracks are dropped, and a file with only
    drums is skipped ("drums only")."""
    val_fraction: float = 0.1
    """Share of pieces held out for validation, chosen by a stable hash of the piece id."""
    test_fraction: float = 0.0
    """Share of pieces ``podium prepare`` holds out as a test split (by content hash); training
    never reads them."""
    transpose: int = 0
    """Augmentation: shift each training example by a random number of semitones in
    [-transpose, +transpose], notes, chord roots and key together, drawn anew every epoch from
    (train seed, epoch, example) so a resumed run sees the same examples; shifts that would push
    a note past the pitch range are not drawn. 0 = off; validation is never shifted. It shows the
    model every key with every progression, so it learns what the key token means from a
    corpus with a dozen pieces per key."""
    cache_dir: str = ""
    """Where demo corpora and prepared data live; "" means ``$PODIUM_CACHE``, else
    ``$XDG_CACHE_HOME/podium``, else ``~/.cache/podium``."""

    def __post_init__(self) -> None:
        if self.source not in ("demo", "emopia", "midi_dir"):
            raise ValueError(f"source: must be 'demo', 'emopia' or 'midi_dir', got {self.source!r}")
        if self.source != "demo" and not self.path.strip():
            raise ValueError(
                f"path: source {self.source!r} needs the dataset directory; set data.path "
                "(or use source = 'demo')"
            )
        if self.n_pieces < 2:
            raise ValueError(
                f"n_pieces: must be >= 2 so both splits get a piece, got {self.n_pieces}"
            )
        if self.n_pieces > MAX_DEMO_PIECES:
            raise ValueError(
                f"n_pieces: at most {MAX_DEMO_PIECES:,} demo pieces (got {self.n_pieces:,}); "
                "the corpus is written to the cache, one MIDI file per piece"
            )
        if self.corpus_seed < 0:
            raise ValueError(f"corpus_seed: must be >= 0, got {self.corpus_seed}")
        if not 2 <= self.bars <= 64:
            raise ValueError(f"bars: must be between 2 and 64, got {self.bars}")
        if self.seq_len < 4:
            raise ValueError(f"seq_len: must be >= 4 tokens, got {self.seq_len}")
        if not 0 <= self.transpose <= 11:
            raise ValueError(f"transpose: must be between 0 and 11 semitones, got {self.transpose}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"val_fraction: must be between 0 and 1 (exclusive), got {self.val_fraction}; "
                "0.1 holds out a tenth of the pieces"
            )
        if not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"test_fraction: must be in [0, 1) and leave pieces to train on with "
                f"val_fraction {self.val_fraction} (got {self.test_fraction})"
            )


CPU_WEIGHTS = ("auto", "float32", "bfloat16")
BF16_FROM_PARAMS = 8_000_000
"""``cpu_weights = "auto"`` samples in bfloat16 from this many parameters on
(bench/bench_generate.py: emopia-cp's 39M in float32 and bfloat16, the demo's in float32)."""


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """The profile's ``[generate]`` table for the ``cp`` family: sampling defaults and the
    conditioning check."""

    max_tokens: int = 1024
    """Hard cap on generated tokens, so a model that never emits EOS still ends, for a request
    that asks for neither bars nor seconds (those end it themselves, within ``model.max_len``)."""
    temperature: float = 1.0
    """Default temperature for every head without an entry in ``temperatures``."""
    top_p: float = 0.9
    """Default nucleus mass for every head without an entry in ``top_ps``."""
    temperatures: dict[str, float] = field(default_factory=dict)
    """Per-head temperature overrides, e.g. ``{ pitch = 1.1, duration = 0.9 }``."""
    top_ps: dict[str, float] = field(default_factory=dict)
    """Per-head top-p overrides."""
    check_every_epochs: int = 0
    """Every N epochs, generate ``check_samples`` short pieces per conditioning class and record
    how many match what was asked (``cond/*`` series); 0 turns the check off."""
    check_samples: int = 4
    """Samples per conditioning class in each check."""
    cpu_weights: str = "auto"
    """The big matrices' dtype when sampling on the CPU: ``float32``, ``bfloat16`` (half the
    memory each token reads; logits move by ~1e-2) or ``auto``: bfloat16 from
    ``BF16_FROM_PARAMS`` parameters on, where a token's time is the memory it reads, float32
    below, where it is Python and dispatch and bfloat16 would only add conversions. On a GPU
    the model's own dtype is used."""

    def __post_init__(self) -> None:
        if self.cpu_weights not in CPU_WEIGHTS:
            raise ValueError(
                f"cpu_weights: must be one of {', '.join(CPU_WEIGHTS)} (got {self.cpu_weights!r})"
            )
        if self.check_every_epochs < 0:
            raise ValueError(f"check_every_epochs: must be >= 0 (got {self.check_every_epochs})")
        if not 1 <= self.check_samples <= 64:
            raise ValueError(f"check_samples: must be in 1..64 (got {self.check_samples})")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1 (got {self.max_tokens})")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature: must be in (0, 10] (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1] (got {self.top_p})")
        for head, t in self.temperatures.items():
            if not 0.0 < t <= 10.0:
                raise ValueError(f"temperatures: {head} must be in (0, 10] (got {t})")
        for head, p in self.top_ps.items():
            if not 0.0 < p <= 1.0:
                raise ValueError(f"top_ps: {head} must be in (0, 1] (got {p})")


CHECK_GROUP = "cond"
"""The series group of the conditioning check (``cond/valence``, ``cond/arousal``,
``cond/both``), which ``check_every_epochs`` turns on."""
