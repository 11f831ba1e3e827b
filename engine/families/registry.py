"""The family contract, and finding a family by name.

A model family is a package (``podium.engine.families.<name>``, or any importable module named by
a dotted path in the profile, ``family = "mylab.podium_families.gru"``) whose module holds
``FAMILY``, a :class:`Family`. It owns everything that differs between model zoos: its profile
tables, its heads, its data and model, its validation metrics, its sampler (or, for a
recogniser, its predictor), its per-epoch hooks, its extra checkpoint state and its adapters
for foreign checkpoint layouts. The loop, the store,
the CLI and the dashboard ask the family; none of them knows one by name (torchtitan's train
specs: components chosen by name from config).

Finding a family imports its package, and only then: importing ``podium.engine.config`` or this
module imports no family and no torch. A family's package should keep its own top level light for
the same reason (build functions import their torch modules when called).

What a family's model must do: ``forward(batch)`` returns the losses by head name (a mapping of
scalar tensors, masked means over the batch), or a :class:`~podium.engine.metrics.ModelOutput`
with those losses plus the outputs its validation metrics read. The trainer sums the losses with
the profile's ``[loss_weights]``; every head is plotted.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from podium.engine import series as names
from podium.engine.errors import ProfileError
from podium.engine.series import Direction

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pretty_midi
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from podium.engine.metrics import ValidationMetrics
    from podium.engine.train_config import TrainConfig

ModelCfg = TypeVar("ModelCfg")
DataCfg = TypeVar("DataCfg")
LogFn = Callable[[str], None]
DataInfo = Mapping[str, Any]
"""JSON-able facts about the data that building the model needs (vocabulary sizes, class
names). Saved in every checkpoint, so a model can be rebuilt for generation without its data."""


class Profile(Protocol):
    """What a family's callables read of a profile; ``podium.engine.config.Profile`` is one.

    Named here by its shape, not imported: the config imports this contract to build profiles,
    so the contract names nothing of the config (no import cycle, not even for type checkers).
    """

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def model(self) -> Any:
        """The family's ``model_config`` dataclass."""
        ...

    @property
    def data(self) -> Any:
        """The family's ``data_config`` dataclass."""
        ...

    @property
    def train(self) -> TrainConfig: ...

    @property
    def loss_weights(self) -> Mapping[str, float]: ...

    @property
    def sections(self) -> Mapping[str, Any]: ...

    def section(self, name: str) -> Any:
        """One of the family's own tables, built (KeyError naming it when absent)."""
        ...


class DataBundle(Protocol):
    """What a family's ``build_data`` returns."""

    @property
    def train(self) -> Dataset: ...

    @property
    def val(self) -> Dataset | None: ...

    @property
    def model_info(self) -> dict[str, Any]:
        """The ``DataInfo`` this data gives the model (saved with checkpoints)."""
        ...


@dataclass(frozen=True)
class ModelCost:
    """What a model costs, known from its config before any weight is allocated."""

    params: int
    """Trainable parameters."""
    flops_per_token: float
    """Training FLOPs per token (forward + backward, ~6 x params plus attention), for MFU."""
    activation_bytes_per_token: float = 0.0
    """A rough size of what the forward pass keeps for the backward one, per token of a batch
    (0: unknown). With ``buffer_bytes`` and ``fp32_bytes`` it lets podium refuse a model that
    cannot fit before allocating it."""
    buffer_bytes: int = 0
    """Non-parameter tensors the model holds (position tables, masks), in bytes."""

    @property
    def fp32_bytes(self) -> int:
        """Weights, gradients and AdamW's two moments in fp32: the floor of training memory."""
        return 16 * self.params


# -- sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ConditionOption:
    """One conditioning input of a sampler. The CLI flag (``--<name>``), the socket's
    ``generate`` argument and the dashboard's preview field are all made from it."""

    name: str
    """Lower-case, letters and '_' (the flag is ``--name`` with '-' for '_')."""
    help: str
    """One line for ``--help`` and the form's placeholder."""
    choices: tuple[str, ...] = ()
    """The allowed values, when it is a closed set (else the sampler's ``check`` decides)."""
    derived_from: str = ""
    """Another option that sets this one when this is left blank (the semantic token from a
    text): a value made that way is derived from what was asked, not drawn by the seed."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class SampleRequest:
    """One sample to generate. Blank conditioning values are drawn with the seed."""

    conditioning: Mapping[str, str] = field(default_factory=dict)
    """Option name -> value, as the sampler's ``options`` declare them."""
    bars: int | None = 8
    """Stop after this many bars (None: only the end token or ``tokens`` end it)."""
    seconds: float | None = None
    """Stop at the first bar that would start after this much music."""
    tokens: int | None = None
    """Hard cap on generated tokens (default: the family's own)."""
    temperature: float | None = None
    """Overrides every head's temperature (None: the profile's)."""
    top_p: float | None = None
    """Overrides every head's nucleus mass (None: the profile's)."""
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """Generated tokens and what ended them."""

    tokens: np.ndarray
    conditioning: dict[str, str]
    """The conditioning actually used (drawn values filled in), in the options' order."""
    ended: str
    """What ended it: "eos", "bars", "seconds", "length" (the token cap), "max_len"..."""
    seconds: float
    """Wall time the generation took."""
    seed: int
    """The seed actually used (the request's, or the next after a retry)."""
    note: str = ""
    """Why it ended, in words a user can act on, when it ended short of what was asked ("4 of
    8 bars: the model holds at most 256 tokens (model.max_len)..."); "" when it ended as asked."""
    bars: int | None = None
    """Bars the sample holds, when the family counts bars."""
    requested: dict[str, str] = field(default_factory=dict)
    """The conditioning as asked (blank: drawn); filled in by ``generate_from_run``."""
    checkpoint: str = ""
    """Which weights made it: a checkpoint's name, or "live"; filled in by ``generate_from_run``."""
    step: int | None = None
    """The training step of those weights, when known."""

    @property
    def label(self) -> str:
        """The conditioning in a few words ("Q1 C:maj"), for messages and file names."""
        return " ".join(v for v in self.conditioning.values() if v)

    @property
    def drawn(self) -> tuple[str, ...]:
        """The options left blank in the request whose values were drawn (none when the
        request is not known)."""
        if not self.requested:
            return ()
        return tuple(n for n, v in self.conditioning.items() if v and not self.requested.get(n))


@dataclass(frozen=True, kw_only=True)
class SamplerSpec:
    """A family's sampler. Randomness comes only from the requests' seeds."""

    options: tuple[ConditionOption, ...]
    check: Callable[[Mapping[str, str]], dict[str, str]]
    """Canonical conditioning values (blank kept blank), or ``GenerateError`` naming the bad
    option and what it takes. Called before any model is loaded."""
    sample: Callable[[nn.Module, Profile, Sequence[SampleRequest], torch.device], list[Sample]]
    """One sample per request, in one batch; the model's train/eval mode is restored."""
    to_midi: Callable[[Sample], pretty_midi.PrettyMIDI]
    """The sample as a MIDI file."""
    draw: Callable[[Mapping[str, str], DataInfo, int], dict[str, str]] | None = None
    """``(checked conditioning, the checkpoint's data info, seed) -> conditioning`` with every
    blank value drawn, by the seed, from what the training data pairs with the given ones (a
    key the pieces of the asked emotion were in), for data info that says so. Called before
    ``sample``; None: ``sample`` draws blank values itself."""


@dataclass(frozen=True, kw_only=True)
class EpochHook:
    """Something measured every few epochs on the training thread (rank 0), e.g. whether a model
    follows its conditioning. Its values are published as series ``<group>/<name>``."""

    name: str
    """What it is, for messages ("conditioning check")."""
    group: str
    """The prefix of its series ("cond"); the dashboard plots a group together."""
    title: str
    """The dashboard plot's title."""
    every_epochs: Callable[[Profile], int]
    """How often for this profile (0: off)."""
    run: Callable[[nn.Module, Profile, int], Mapping[str, float]]
    """``(bare model, profile, epoch) -> {"<group>/<name>": value}``; a ``GenerateError``
    skips one check with a warning."""
    direction: Direction = "max"
    """Which way its values improve: "max" for a score (a fraction matching), "min" for an
    error. The dashboard's "best" of each ``<group>/*`` series follows it."""


@dataclass(frozen=True)
class Prediction:
    """What a recogniser heard in one window of an input (``podium predict``)."""

    start: float
    """Window start, in seconds."""
    end: float
    """Window end, in seconds."""
    label: str
    """The best answer, in the family's notation (``C:maj7/3``)."""
    top: tuple[tuple[str, float], ...]
    """The best few answers with their probabilities, best first."""


Predictor = Callable[["nn.Module", Profile, DataInfo, Path], list[Prediction]]
"""``(eval-mode model, profile, checkpoint data info, input file) -> one Prediction per window``;
``DataError`` for an input it cannot read."""


class StateDictAdapter(Protocol):
    """Converts a foreign checkpoint layout (a released model's) to the family's own names and
    back; the model never learns other layouts (torchtitan's state-dict adapters)."""

    def to_native(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def from_native(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExportedFile:
    """One file an exporter wrote (an ONNX network, say) and what checking it found."""

    name: str
    """What it holds ("EmotionRecognizer")."""
    path: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What was measured, by column name ("size_mb", "median_ms", "max_abs_diff"...),
    JSON-able; the CLI prints them as the report's table."""
    failed: Mapping[str, str] = field(default_factory=dict)
    """Check name -> why it failed ("latency": "12.3 ms >= 10 ms"); empty when all passed."""


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What a family's exporter wrote and checked (``podium export``)."""

    files: tuple[ExportedFile, ...]
    checks: tuple[str, ...]
    """The checks run on every file, in order ("names", "shapes", "max_diff", "latency"...)."""

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.files)


Exporter = Callable[["nn.Module", Profile, DataInfo, "Path"], ExportReport]
"""``(bare model in eval mode, profile, the checkpoint's data info, output folder) -> report``;
raises ``PodiumError`` for what stops it from exporting at all (a missing library)."""


# -- preparation (``podium prepare``) ---------------------------------------------------------


class Tokenizer(Protocol):
    """A family's tokeniser as ``podium prepare`` uses it: pure, picklable (it is sent to worker
    processes), and the same object a family's ``build_data`` would use, so prepared data and
    data made inside ``podium train`` agree token for token."""

    @property
    def min_tokens(self) -> int:
        """Pieces with fewer tokens are skipped as "too short"."""
        ...

    @property
    def max_tokens(self) -> int | None:
        """Pieces with more tokens are skipped as "too long" (None: no limit)."""
        ...

    @property
    def keep_drums(self) -> bool:
        """Whether drum tracks are tokenised; a file with only drums is skipped as "drums only"
        when they are not."""
        ...

    @property
    def label_fields(self) -> tuple[str, ...]:
        """The labels ``encode`` reads (they become part of each piece's cache key)."""
        ...

    def encode(self, midi: pretty_midi.PrettyMIDI, labels: Mapping[str, str]) -> np.ndarray:
        """One piece's tokens (any shape whose first axis is time, one dtype for all pieces).
        ``DataError`` for a piece the tokeniser cannot take (skipped as "unsupported")."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able vocabulary and settings: prepared shards are re-used only while it is
        unchanged."""
        ...

    def vocabulary(self) -> dict[str, Any]:
        """JSON-able vocabulary written beside the shards (``vocab.json``)."""
        ...


@dataclass(frozen=True, kw_only=True)
class PrepareSpec:
    """What ``podium prepare`` needs of a family for one ``[data]`` table."""

    tokenizer: Tokenizer
    val_fraction: float
    """Share of pieces in the validation split (by content hash)."""
    test_fraction: float = 0.0
    """Share of pieces in the test split (by content hash)."""


# -- the family -------------------------------------------------------------------------------


def _no_check(model: Any, data: Any, sections: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Family(Generic[ModelCfg, DataCfg]):
    """One model family. Optional parts are ``None`` or empty, never stubs."""

    name: str
    description: str
    model_config: type[ModelCfg]
    """Dataclass of the profile's ``[model]`` table."""
    data_config: type[DataCfg]
    """Dataclass of the profile's ``[data]`` table."""
    heads: tuple[str, ...]
    """Names of the losses the model returns, in display order (``[loss_weights]`` keys)."""
    build_data: Callable[[DataCfg, LogFn], DataBundle]
    """Prepare (once) and load the data; ``DataError`` for bad input."""
    build_model: Callable[[ModelCfg, DataInfo], nn.Module]
    """A fresh model (seeded by the caller) for this config and data. It must also build under
    ``torch.device("meta")``: a process that is training rebuilds its model that way for
    previews, so that no initialisation draws from the run's RNG."""
    cost: Callable[[ModelCfg, DataCfg], ModelCost]
    """Parameters and FLOPs per token, without allocating the model."""
    sections: Mapping[str, type] = field(default_factory=dict)
    """Extra profile tables the family owns (its ``[generate]``...): name -> dataclass."""
    check: Callable[[ModelCfg, DataCfg, Mapping[str, Any]], None] = _no_check
    """Cross-table checks over [model], [data] and the family's own sections; raise
    ``ValueError("section.field: message")``."""
    metrics: tuple[str, ...] = ()
    """Scalar validation metrics beyond the loss (series ``val/<name>``)."""
    metric_directions: Mapping[str, Direction] = field(default_factory=dict)
    """Which way a metric improves, where it is not a score that rises ("max", the default):
    ``{"perplexity": "min"}``. Losses always improve downward."""
    matrices: tuple[str, ...] = ()
    """Matrix validation metrics (a confusion matrix...), stored latest per step."""
    build_metrics: Callable[[ModelCfg, DataInfo], ValidationMetrics] | None = None
    """A fresh accumulator per validation pass, required when ``metrics`` or ``matrices``."""
    sampler: SamplerSpec | None = None
    epoch_hooks: tuple[EpochHook, ...] = ()
    extra_state: Callable[[DataBundle], dict[str, Any]] | None = None
    """More JSON-able or tensor state to save in every checkpoint (beside the data info)."""
    adapters: Mapping[str, StateDictAdapter] = field(default_factory=dict)
    """Foreign checkpoint layouts by name ("hf", "emopia")."""
    exporter: Exporter | None = None
    """Writes the model for another runtime (ONNX files for a C++ host) and checks what it
    wrote (``podium export``); None: the family has no exporter."""
    prepare: Callable[[DataCfg], PrepareSpec] | None = None
    """The tokeniser and split fractions ``podium prepare`` uses for this ``[data]`` table
    (None: the family's data cannot be prepared ahead)."""
    predictor: Predictor | None = None
    """A classifier's counterpart of the sampler: what the model recognises in an input file,
    window by window (``podium predict RUN FILE``). None: the family predicts nothing."""

    def __post_init__(self) -> None:
        if (self.metrics or self.matrices) and self.build_metrics is None:
            raise TypeError(f"family {self.name}: metrics are declared but build_metrics is None")
        for metric, direction in self.metric_directions.items():
            if metric not in self.metrics:
                raise TypeError(
                    f"family {self.name}: metric_directions names undeclared metric {metric!r}"
                )
            if direction not in names.DIRECTIONS:
                raise TypeError(
                    f"family {self.name}: metric {metric!r}: direction {direction!r} is not "
                    "'min' or 'max'"
                )
        for hook in self.epoch_hooks:
            if hook.direction not in names.DIRECTIONS:
                raise TypeError(
                    f"family {self.name}: epoch hook {hook.name!r}: direction "
                    f"{hook.direction!r} is not 'min' or 'max'"
                )
        clash = set(self.sections) & {"name", "family", "description", *CORE_SECTIONS}
        if clash:
            raise TypeError(f"family {self.name}: section {sorted(clash)[0]!r} is podium's own")

    def direction(self, series: str) -> Direction:
        """Which way the stored series ``series`` improves: "min" for losses, else as the
        metric or epoch hook that publishes it declares (``names.default_direction`` when no
        declaration names it)."""
        kind = names.kind(series)
        if kind == "metric":
            return self.metric_directions.get(names.metric_of(series), "max")
        if kind == "hook":
            group = names.group_of(series)
            for hook in self.epoch_hooks:
                if hook.group == group:
                    return hook.direction
        return names.default_direction(series)


CORE_SECTIONS = ("model", "data", "train", "checkpoint", "log", "loss_weights")
"""Profile tables every family has; a family's own ``sections`` come on top."""

_PACKAGE = "podium.engine.families"
_LOADED: dict[str, Family] = {}


def builtin_names() -> list[str]:
    """The families shipped with podium (their packages, found without importing them)."""
    import podium.engine.families as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg)


def get_family(name: str) -> Family:
    """The family called ``name``: a built-in package, or a dotted module path holding
    ``FAMILY``.

    Raises:
        ProfileError: no such family (with the known names), or its module is broken.
    """
    family = _LOADED.get(name)
    if family is not None:
        return family
    known = builtin_names()
    if name in known:
        module_name = f"{_PACKAGE}.{name}"
    elif "." in name:
        module_name = name
    else:
        raise ProfileError(
            f"unknown model family {name!r} (known: {', '.join(known)}; or a module path "
            "like mylab.families.gru)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProfileError(f"model family {name!r}: cannot import {module_name} ({exc})") from None
    family = getattr(module, "FAMILY", None)
    if not isinstance(family, Family):
        raise ProfileError(f"model family {name!r}: {module_name} has no FAMILY (a Family)")
    _LOADED[name] = family
    return family
