"""The Music Transformer family: MIDI-like events, a relative-attention decoder, cached sampling.

The package: ``tokens`` (MIDI <-> the 390 event ids), ``prepare`` (the tokeniser ``podium
prepare`` uses), ``data`` (demo, MIDI-folder and prepared datasets, conditioning tokens), ``model`` (the decoder), ``sampler`` (generation with cached keys, values
and relative logits) and ``conditioning`` (the per-epoch check that samples follow their
sentiment). The attention itself is ``podium.engine.models.relative_attention``. This module only
declares the family; the torch-heavy modules are imported when their builders run.

Sequences open with one token per conditioning dimension (sentiment, then genre), whose names and
the lab's integer indices are the profile's ``[data.conditioning]`` tables:
``podium generate RUN --sentiment positive --genre 2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from podium.engine.families.music_transformer.config import (
    CHECK_GROUP,
    DataConfig,
    GenerateConfig,
    MusicTransformerConfig,
)
from podium.engine.families.registry import (
    ConditionOption,
    DataBundle,
    DataInfo,
    EpochHook,
    Family,
    LogFn,
    ModelCost,
    PrepareSpec,
    Sample,
    SampleRequest,
    SamplerSpec,
)

if TYPE_CHECKING:
    import pretty_midi
    import torch
    from torch import nn

    from podium.engine.config import Profile
    from podium.engine.metrics import ValidationMetrics

HEADS = ("events",)
N_EVENTS = 390  # tokens.N_EVENTS, without importing pretty_midi to declare the family


def _build_data(cfg: DataConfig, log: LogFn) -> DataBundle:
    from podium.engine.families.music_transformer.data import build_datasets

    return build_datasets(cfg, log=log)


def _vocab(info: DataInfo) -> tuple[int, int]:
    return int(info.get("vocab_size", N_EVENTS)), int(info.get("n_prefix", 1))


def _build_model(cfg: MusicTransformerConfig, info: DataInfo) -> nn.Module:
    from podium.engine.families.music_transformer.model import MusicTransformer

    vocab, n_prefix = _vocab(info)
    return MusicTransformer(cfg, vocab, n_prefix)


def _cost(cfg: MusicTransformerConfig, data: DataConfig) -> ModelCost:
    C, L, F = cfg.d_model, cfg.max_len, cfg.d_ff
    vocab = N_EVENTS + sum(len(getattr(data.conditioning, d)) for d in data.conditioning.active)
    d_head = C // cfg.n_heads
    per_layer = (3 * C * C + 3 * C) + (C * C + C) + L * d_head + (C * F + F + F * C + C) + 4 * C
    params = vocab * C + cfg.n_layers * per_layer + (C * vocab + vocab)
    T = min(data.seq_len, L)
    # Per token and layer: q.k^T and q.E^T (T each), the weighted sum (T), per head x d_head,
    # forward and backward (x 3), 2 FLOPs a multiply-add.
    attention = 6 * cfg.n_layers * 3 * T * C
    # Kept for backward, per token, fp32: per layer ~10 x C of activations, the FFN's d_ff, and
    # per head the T logits, their skewed copy and the softmax; then the output logits.
    per_token = cfg.n_layers * (10 * C + 2 * F + 3 * cfg.n_heads * T) + 2 * vocab
    return ModelCost(
        params=params,
        flops_per_token=6.0 * params + attention,
        activation_bytes_per_token=4.0 * per_token,
    )


def _check(model: MusicTransformerConfig, data: DataConfig, sections: Mapping[str, Any]) -> None:
    if data.seq_len > model.max_len:
        raise ValueError(
            f"data.seq_len: {data.seq_len} is longer than model.max_len {model.max_len}; lower "
            "data.seq_len or raise model.max_len"
        )
    gen: GenerateConfig = sections["generate"]
    if gen.check_every_epochs and "sentiment" not in data.conditioning.active:
        raise ValueError(
            "generate.check_every_epochs: the conditioning check scores sentiments, and "
            "data.conditioning.sentiment is empty; set it to 0"
        )


def _build_metrics(cfg: MusicTransformerConfig, info: DataInfo) -> ValidationMetrics:
    from podium.engine.families.music_transformer.metrics import NextTokenAccuracy

    return NextTokenAccuracy()


# -- sampling ---------------------------------------------------------------------------------


def _conditions(profile: Profile) -> Any:
    from podium.engine.families.music_transformer.data import ConditionTokens

    return ConditionTokens.of(profile.data.conditioning)


def _check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    from podium.engine.families.music_transformer.sampler import check_conditioning

    return check_conditioning(conditioning)


def _sample(
    model: nn.Module, profile: Profile, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    from podium.engine.families.music_transformer.sampler import sample_batch

    gen = profile.section("generate")
    return sample_batch(model, gen, _conditions(profile), requests, device)


def _to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    from podium.engine.families.music_transformer.tokens import decode_tokens

    return decode_tokens(sample.tokens)


SAMPLER = SamplerSpec(
    options=(
        ConditionOption(
            name="sentiment",
            help="a name or index of the profile's data.conditioning.sentiment (demo: "
            "negative 0, positive 1; blank: drawn by the seed)",
        ),
        ConditionOption(
            name="genre",
            help="a name or index of data.conditioning.genre (demo: alberti 0, arpeggio 1, "
            "chorale 2, march 3; blank: drawn)",
        ),
    ),
    check=_check_conditioning,
    sample=_sample,
    to_midi=_to_midi,
)


# -- the conditioning check -------------------------------------------------------------------


def _check_every(profile: Profile) -> int:
    return profile.section("generate").check_every_epochs


def _run_check(model: nn.Module, profile: Profile, epoch: int) -> Mapping[str, float]:
    from podium.engine.families.music_transformer.conditioning import conditioning_check

    gen = profile.section("generate")
    return conditioning_check(
        model, gen, _conditions(profile), samples=gen.check_samples, seed=epoch
    )


CONDITIONING_CHECK = EpochHook(
    name="conditioning check",
    group=CHECK_GROUP,
    title="conditioning check · fraction of samples in their sentiment's mode",
    every_epochs=_check_every,
    run=_run_check,
    direction="max",
)


def _prepare_spec(cfg: DataConfig) -> PrepareSpec:
    from podium.engine.families.music_transformer.prepare import MTTokenizer

    return PrepareSpec(
        tokenizer=MTTokenizer(keep_drums=cfg.keep_drums), val_fraction=cfg.val_fraction
    )


FAMILY: Family[MusicTransformerConfig, DataConfig] = Family(
    name="music_transformer",
    description="Music Transformer (relative attention, MIDI-like events), sentiment + genre",
    model_config=MusicTransformerConfig,
    data_config=DataConfig,
    sections={"generate": GenerateConfig},
    heads=HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    check=_check,
    metrics=("accuracy",),
    build_metrics=_build_metrics,
    sampler=SAMPLER,
    epoch_hooks=(CONDITIONING_CHECK,),
    prepare=_prepare_spec,
)
