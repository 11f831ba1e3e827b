"""The pipeline's profile tables: ``[model]`` (five networks' layer sizes) and ``[data]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class NetConfig:
    """One network's hidden layers (``[model.<network>]``), each Linear + ReLU + BatchNorm +
    Dropout, as the MidiKompanion guide builds them."""

    width: int = 128
    """The first hidden layer's width."""
    depth: int = 2
    """How many hidden layers."""
    taper: Literal["halve", "flat"] = "halve"
    """``halve``: each layer half as wide as the one before (512, 256, 128); ``flat``: all
    ``width`` wide (the melody network's 256, 256, 256)."""

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth: must be >= 1 (got {self.depth})")
        if self.width < 2 ** (self.depth - 1 if self.taper == "halve" else 0):
            raise ValueError(f"width: {self.width} is too narrow for {self.depth} halving layers")

    @property
    def hidden(self) -> tuple[int, ...]:
        if self.taper == "flat":
            return (self.width,) * self.depth
        return tuple(self.width // 2**i for i in range(self.depth))


@dataclass(frozen=True, kw_only=True)
class PipelineModelConfig:
    """``[model]``: the five networks' hidden layers (defaults: the guide's recipes) and the
    dropout they share. Their input and output widths are fixed: the C++ host expects them."""

    emotion: NetConfig = field(default_factory=lambda: NetConfig(width=512, depth=3))
    """EmotionRecognizer 128 -> 512 -> 256 -> 128 -> 64 (Tanh)."""
    melody: NetConfig = field(default_factory=lambda: NetConfig(width=256, depth=3, taper="flat"))
    """MelodyTransformer 64 -> 256 -> 256 -> 256 -> 128 (Sigmoid: note probabilities)."""
    harmony: NetConfig = field(default_factory=lambda: NetConfig(width=256, depth=2))
    """HarmonyPredictor 128 -> 256 -> 128 -> 64 (Softmax: chord probabilities)."""
    dynamics: NetConfig = field(default_factory=lambda: NetConfig(width=128, depth=2))
    """DynamicsEngine 32 -> 128 -> 64 -> 16 (Sigmoid: step velocities)."""
    groove: NetConfig = field(default_factory=lambda: NetConfig(width=128, depth=2))
    """GroovePredictor 64 -> 128 -> 64 -> 32 (Tanh: onsets and micro-timing)."""
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")


@dataclass(frozen=True, kw_only=True)
class PipelineDataConfig:
    """``[data]``: synthetic examples from the thesaurus, and optional real labelled ones."""

    seed: int = 0
    """Draws every synthetic example and the 80/10/10 split."""
    examples: int = 8000
    """Synthetic examples in all (80% train, 10% val, 10% test)."""
    augment: float = 0.5
    """Fraction of training examples whose embedding is mixed with a related node's."""
    mix: float = 0.3
    """The largest weight of the related node in such a mix."""
    noise: float = 0.03
    """Gaussian noise added to the synthetic note features (the recognizer's input)."""
    real_examples: str = ""
    """A JSON list of labelled examples (``{"midi" or "features": path, "node_id", "valence",
    "arousal", "dominance", "intensity"}``), paths relative to the file; "" for none."""

    def __post_init__(self) -> None:
        if self.examples < 20:
            raise ValueError(f"examples: must be >= 20 for a 80/10/10 split (got {self.examples})")
        for name in ("augment", "mix"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1] (got {getattr(self, name)})")
        if self.noise < 0:
            raise ValueError(f"noise: must be >= 0 (got {self.noise})")
