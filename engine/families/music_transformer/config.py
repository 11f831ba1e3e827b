"""The ``music_transformer`` family's profile tables: ``[model]``, ``[data]`` and ``[generate]``.

Plain dataclasses (no torch), so loading and checking a profile costs no torch import.

The conditioning names and their integer indices live in ``[data.conditioning]``, not in a table
of their own: they decide both which token a labelled piece starts with (the data's job) and how
many conditioning tokens the model embeds, and a family's ``build_data`` sees only ``[data]``.
The lab's generation script takes the indices as integers; ``podium generate`` takes either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CHECK_GROUP = "cond"
"""The series group of the conditioning check (``cond/sentiment``)."""
CONDITIONS = ("sentiment", "genre")
"""The conditioning dimensions, in the order their tokens open a sequence."""


def _demo_sentiments() -> dict[str, int]:
    return {"negative": 0, "positive": 1}


DEMO_GENRES = ("alberti", "arpeggio", "chorale", "march")
"""The demo corpus's styles (``demo_corpus.STYLES``, written out: that module imports
pretty_midi, and a profile loads without it; a test keeps the two equal)."""


def _demo_genres() -> dict[str, int]:
    return {style: i for i, style in enumerate(DEMO_GENRES)}


@dataclass(frozen=True, kw_only=True)
class ConditioningConfig:
    """``[data.conditioning]``: label name -> integer index, per conditioning dimension.

    Each table's indices must be 0..n-1 (each once). An empty table turns that dimension off:
    its pieces need no such label and its sequences carry no such token.
    """

    sentiment: dict[str, int] = field(default_factory=_demo_sentiments)
    """Sentiment names and the lab's integers (the demo: negative 0, positive 1)."""
    genre: dict[str, int] = field(default_factory=_demo_genres)
    """Genre names and the lab's integers (the demo: its four accompaniment styles)."""

    def __post_init__(self) -> None:
        for dim in CONDITIONS:
            table: dict[str, int] = getattr(self, dim)
            indices = sorted(table.values())
            if indices != list(range(len(table))):
                raise ValueError(
                    f"{dim}: indices must be 0..{len(table) - 1}, each once (got "
                    f"{', '.join(f'{k} = {v}' for k, v in table.items())})"
                )
            for name in table:
                if not name or name != name.strip().lower() or name.isdigit():
                    raise ValueError(
                        f"{dim}: name {name!r} must be lower case, not blank and not a number "
                        "(numbers are the indices)"
                    )

    def names(self, dim: str) -> tuple[str, ...]:
        """The names of ``dim`` in index order."""
        table: dict[str, int] = getattr(self, dim)
        return tuple(sorted(table, key=table.__getitem__))

    @property
    def active(self) -> tuple[str, ...]:
        """The dimensions whose table is not empty, in token order."""
        return tuple(d for d in CONDITIONS if getattr(self, d))


@dataclass(frozen=True, kw_only=True)
class MusicTransformerConfig:
    """The profile's ``[model]`` table. Defaults are the published size (Huang et al. 2018, as
    the lab trains it): 6 layers, 8 heads, d_model 512, FFN 1024, 2048 tokens."""

    d_model: int = 512
    """Width of the hidden state."""
    n_layers: int = 6
    """Post-norm relative-attention + feed-forward layers."""
    n_heads: int = 8
    """Attention heads; must divide ``d_model``."""
    d_ff: int = 1024
    """Hidden width of each feed-forward block."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and feed-forward outputs; 0 disables it."""
    max_len: int = 2048
    """Longest sequence (and farthest relative distance) the model knows. Training crops to
    ``data.seq_len``; generation past it slides a window (see ``sampler``)."""
    activation: Literal["gelu", "relu"] = "relu"
    """Feed-forward non-linearity (the paper's ReLU)."""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1 (got {value})")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model: must be divisible by n_heads (got {self.d_model} and {self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation: must be 'gelu' or 'relu' (got {self.activation!r})")
        if self.max_len < 8:
            raise ValueError(f"max_len: must be >= 8 tokens (got {self.max_len})")


MAX_DEMO_PIECES = 100_000


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The profile's ``[data]`` table."""

    source: Literal["demo", "midi_dir"] = "demo"
    """Where pieces come from: podium's generated demo corpus, or a folder of MIDI files."""
    path: str = ""
    """The MIDI folder for ``midi_dir`` (searched recursively), or, for either source, a
    ``podium prepare`` output directory, which is then read instead."""
    labels: str = ""
    """``midi_dir`` only: a ``.jsonl`` (one object per piece: ``file``, ``sentiment``,
    ``genre``) or ``.csv`` (columns ``file,sentiment,genre``) of labels, names or the lab's
    integers; "" looks for ``labels.jsonl`` / ``labels.csv`` in the folder. Optional when the
    conditioning tables are empty."""
    n_pieces: int = 400
    """Demo corpus size (pieces)."""
    corpus_seed: int = 0
    """Demo corpus seed."""
    bars: int = 8
    """Bars per demo piece."""
    seq_len: int = 2048
    """Tokens per training example (model inputs, conditioning tokens included). Longer pieces
    are cropped at a random place every epoch, drawn from (train seed, epoch, example)."""
    keep_drums: bool = False
    """Tokenise drum tracks too, their notes as pitches (General MIDI key numbers: the
    vocabulary has no instrument field). Off: drum tracks are dropped, and a file with only
    drums is skipped ("drums only")."""
    val_fraction: float = 0.1
    """Share of pieces held out for validation (by a stable hash of the piece id); validation
    crops are always the piece's opening."""
    cache_dir: str = ""
    """Where demo corpora and prepared tokens live; "" means ``$PODIUM_CACHE`` or podium's."""
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    """``[data.conditioning]``: the label names and indices."""

    def __post_init__(self) -> None:
        if self.source not in ("demo", "midi_dir"):
            raise ValueError(f"source: must be 'demo' or 'midi_dir' (got {self.source!r})")
        if self.source == "midi_dir" and not self.path.strip():
            raise ValueError("path: source 'midi_dir' needs the MIDI folder; set data.path")
        if not 2 <= self.n_pieces <= MAX_DEMO_PIECES:
            raise ValueError(f"n_pieces: must be in 2..{MAX_DEMO_PIECES} (got {self.n_pieces})")
        if self.corpus_seed < 0:
            raise ValueError(f"corpus_seed: must be >= 0 (got {self.corpus_seed})")
        if not 2 <= self.bars <= 64:
            raise ValueError(f"bars: must be between 2 and 64 (got {self.bars})")
        if self.seq_len < 8:
            raise ValueError(f"seq_len: must be >= 8 tokens (got {self.seq_len})")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in (0, 1) (got {self.val_fraction})")


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """The profile's ``[generate]`` table: sampling defaults and the conditioning check."""

    max_tokens: int = 2048
    """Token cap of a request that names no length of its own. It may exceed ``model.max_len``:
    generation then slides its window (the conditioning tokens stay in it)."""
    temperature: float = 1.0
    top_p: float = 0.95
    seconds_per_bar: float = 2.0
    """Events carry no bars: a request for N bars stops after N x this many seconds of music
    (a 4/4 bar at 120 bpm)."""
    check_every_epochs: int = 0
    """Every N epochs, sample ``check_samples`` pieces per sentiment and score their mode
    (``cond/sentiment``); 0 turns the check off."""
    check_samples: int = 4
    """Samples per sentiment in each check."""
    check_tokens: int = 256
    """Tokens per check sample."""
    check_modes: dict[str, str] = field(
        default_factory=lambda: {"positive": "maj", "negative": "min"}
    )
    """Which mode a sample of each sentiment should be in ("maj" or "min"); sentiments not
    named here are not scored."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1 (got {self.max_tokens})")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature: must be in (0, 10] (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1] (got {self.top_p})")
        if not self.seconds_per_bar > 0:
            raise ValueError(f"seconds_per_bar: must be > 0 (got {self.seconds_per_bar})")
        if self.check_every_epochs < 0:
            raise ValueError(f"check_every_epochs: must be >= 0 (got {self.check_every_epochs})")
        if not 1 <= self.check_samples <= 64:
            raise ValueError(f"check_samples: must be in 1..64 (got {self.check_samples})")
        if self.check_tokens < 8:
            raise ValueError(f"check_tokens: must be >= 8 (got {self.check_tokens})")
        for name, mode in self.check_modes.items():
            if mode not in ("maj", "min"):
                raise ValueError(f"check_modes: {name} must be 'maj' or 'min' (got {mode!r})")
