"""The ``amt`` family's profile tables: ``[model]``, ``[data]`` and its own ``[generate]``.

Plain dataclasses (no torch), so loading and checking a profile costs no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_SEMANTIC = 16
"""The most semantic tokens (k-means clusters) a profile may ask for; the family declares one
``loss_sem<K>`` validation metric per possible cluster, so the bound is fixed here."""
NOTE_TOKENS = 128
"""One NOTE token per MIDI pitch."""
SPECIALS = ("PAD", "UNK", "START", "END")


@dataclass(frozen=True, kw_only=True)
class GPT2Config:
    """The profile's ``[model]`` table: a GPT-2 decoder. Defaults are the AMT seed report's."""

    n_layers: int = 6
    """Transformer blocks."""
    n_heads: int = 8
    """Attention heads; must divide ``d_model``."""
    d_model: int = 768
    """Width of the hidden state (GPT-2's ``n_embd``)."""
    d_ff: int = 0
    """Hidden width of each feed-forward block; 0 means 4 x ``d_model`` (GPT-2's ``n_inner``)."""
    max_len: int = 1024
    """Learned positions: the longest sequence the model reads (GPT-2's ``n_positions``)."""
    dropout: float = 0.1
    """Embedding, attention and residual dropout (GPT-2's three ``*_pdrop``); 0 disables it."""
    layer_norm_eps: float = 1e-5
    """LayerNorm epsilon (GPT-2's ``layer_norm_epsilon``)."""
    init_from: str = ""
    """A Hugging Face GPT-2 directory (``config.json`` + ``model.safetensors``) whose weights
    start the run; its sizes must match this table and the data's vocabulary. "" = random."""

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "max_len"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1 (got {value})")
        if self.d_ff < 0:
            raise ValueError(f"d_ff: must be >= 0 (0 = 4 x d_model; got {self.d_ff})")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model: must be divisible by n_heads (got {self.d_model} and {self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")
        if not 0.0 < self.layer_norm_eps < 1.0:
            raise ValueError(f"layer_norm_eps: must be in (0, 1) (got {self.layer_norm_eps})")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The profile's ``[data]`` table: where pieces and their descriptions come from, the event
    vocabulary and the semantic clustering."""

    source: Literal["demo", "midi_dir"] = "demo"
    """``demo``: podium's generated corpus (its ``description`` labels are the texts);
    ``midi_dir``: a folder of MIDI files with a labels file holding a text column."""
    path: str = ""
    """The MIDI folder for ``midi_dir`` (``~`` expanded); unused for ``demo``."""
    labels: str = ""
    """The labels file for ``midi_dir`` (CSV or JSONL, with a ``file`` column and the text
    column); "" = ``labels.jsonl`` or ``labels.csv`` in ``path``. Relative to ``path``."""
    text_column: str = "description"
    """The labels' column holding each piece's text description."""
    n_pieces: int = 400
    """Demo corpus size (pieces)."""
    corpus_seed: int = 0
    """Demo corpus seed."""
    bars: int = 8
    """Bars per demo piece."""
    vocab_size: int = 512
    """Tokens in the vocabulary: 4 specials, ``max_semantic`` semantic tokens, 128 NOTE, and
    the rest split between TIME_ON and DURATION steps (the report uses 512)."""
    resolution: int = 100
    """Time ticks per second for TIME_ON and DURATION (100 = the AMT's 10 ms)."""
    max_semantic: int = 8
    """The most semantic tokens (k-means clusters); k is chosen by silhouette in
    ``min_semantic`` .. ``max_semantic`` (at most 16)."""
    min_semantic: int = 2
    """The fewest clusters tried."""
    cluster_seed: int = 0
    """Seed of k-means."""
    max_terms: int = 2000
    """TF-IDF vocabulary cap (the most frequent terms), which bounds what every checkpoint
    stores of the vectoriser."""
    seq_len: int = 512
    """Tokens per training example (model inputs); each example holds ``seq_len + 1``."""
    keep_drums: bool = False
    """Tokenise drum tracks too, their notes as pitches (General MIDI key numbers: the
    vocabulary has no instrument field). Off: drum tracks are dropped, and a file with only
    drums is skipped ("drums only")."""
    val_fraction: float = 0.1
    """Share of pieces held out for validation, chosen by a stable hash of the piece id."""
    cache_dir: str = ""
    """Where demo corpora and prepared data live; "" = ``$PODIUM_CACHE`` or podium's cache."""

    def __post_init__(self) -> None:
        if self.source not in ("demo", "midi_dir"):
            raise ValueError(f"source: must be 'demo' or 'midi_dir', got {self.source!r}")
        if self.source == "midi_dir" and not self.path.strip():
            raise ValueError("path: source 'midi_dir' needs the MIDI folder; set data.path")
        if self.n_pieces < 2:
            raise ValueError(f"n_pieces: must be >= 2, got {self.n_pieces}")
        if not 2 <= self.bars <= 64:
            raise ValueError(f"bars: must be between 2 and 64, got {self.bars}")
        if not 1 <= self.resolution <= 1000:
            raise ValueError(f"resolution: must be 1..1000 ticks per second, got {self.resolution}")
        if not 1 <= self.max_semantic <= MAX_SEMANTIC:
            raise ValueError(f"max_semantic: must be 1..{MAX_SEMANTIC}, got {self.max_semantic}")
        if not 1 <= self.min_semantic <= self.max_semantic:
            raise ValueError(
                f"min_semantic: must be 1..max_semantic ({self.max_semantic}), "
                f"got {self.min_semantic}"
            )
        fixed = len(SPECIALS) + self.max_semantic + NOTE_TOKENS
        if self.vocab_size < fixed + 2 * 8:
            raise ValueError(
                f"vocab_size: {self.vocab_size} leaves fewer than 8 TIME_ON and 8 DURATION "
                f"tokens after {fixed} specials, semantic and NOTE tokens; raise it (512 is usual)"
            )
        if self.max_terms < 1:
            raise ValueError(f"max_terms: must be >= 1, got {self.max_terms}")
        if self.seq_len < 4:
            raise ValueError(f"seq_len: must be >= 4 tokens, got {self.seq_len}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be between 0 and 1, got {self.val_fraction}")
        if not self.text_column.strip():
            raise ValueError("text_column: must name the labels' text column")


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """The profile's ``[generate]`` table: sampling defaults."""

    max_tokens: int = 1024
    """Hard cap on generated tokens for a request that asks for neither bars nor seconds."""
    temperature: float = 1.0
    """Softmax temperature."""
    top_p: float = 0.95
    """Nucleus mass."""
    bpm: float = 120.0
    """The tempo that turns ``--bars N`` into seconds (4 beats a bar): events carry time, not
    bars."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1 (got {self.max_tokens})")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature: must be in (0, 10] (got {self.temperature})")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1] (got {self.top_p})")
        if not 10.0 <= self.bpm <= 400.0:
            raise ValueError(f"bpm: must be in [10, 400] (got {self.bpm})")
