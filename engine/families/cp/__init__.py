"""The compound-word (CP) family: EMOPIA-style CP tokens, one loss per token field.

The package: ``vocab`` (the fixed dictionary), ``tokens`` (MIDI <-> CP tokens), ``data`` (demo,
EMOPIA and MIDI-folder datasets), ``model`` (the causal-linear-attention transformer),
``stepper`` (its one-token recurrent form), ``sampler`` (generation) and ``conditioning`` (the
per-epoch check that the model follows its emotion). This module only declares the family; the
torch-heavy modules are imported when their builders run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from podium.engine.families.cp.config import (
    CHECK_GROUP,
    CPTransformerConfig,
    DataConfig,
    GenerateConfig,
)
from podium.engine.families.cp.emopia import EmopiaAdapter
from podium.engine.families.cp.vocab import EMOTIONS, FIELDS
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

CP_HEADS = FIELDS
"""One loss per CP token field, in the dictionary's order."""


def _build_data(cfg: DataConfig, log: LogFn) -> DataBundle:
    from podium.engine.families.cp.data import build_datasets

    return build_datasets(cfg, log=log)


def _build_model(cfg: CPTransformerConfig, info: DataInfo) -> nn.Module:
    from podium.engine.families.cp import vocab
    from podium.engine.families.cp.model import CPTransformer

    return CPTransformer(cfg, info.get("vocab_sizes") or vocab.vocab_sizes())


def _cost(cfg: CPTransformerConfig, data: DataConfig) -> ModelCost:
    import dataclasses

    import torch

    from podium.engine.families.cp import vocab
    from podium.engine.families.cp.model import CPTransformer

    def measure(n_layers: int) -> tuple[int, int]:
        with torch.device("meta"):  # shapes only: nothing is allocated
            model = CPTransformer(dataclasses.replace(cfg, n_layers=n_layers), sizes)
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
        return model.num_parameters(), buffers

    # Layers are identical, so two small builds give the cost of any depth: building 100,000
    # layers, even on the meta device, would take minutes of Python objects.
    sizes = vocab.vocab_sizes()
    (p1, b1), (p2, b2) = measure(1), measure(2)
    params = p1 + (cfg.n_layers - 1) * (p2 - p1)
    buffers = b1 + (cfg.n_layers - 1) * (b2 - b1)
    # 6 FLOPs per parameter per token (forward and backward), plus chunked causal linear
    # attention: per layer a 64-token masked block and a (d_head x d_head) state per head.
    d_head = cfg.d_model // cfg.n_heads
    attention = 6 * cfg.n_layers * cfg.d_model * (2 * 64 + 2 * d_head)
    # Kept for backward, in fp32, per token: per layer the block's inputs, norms, q/k/v, output
    # and residuals (~10 x d_model), the feed-forward's two d_ff activations and the chunk's
    # attention scores; then the embeddings and every head's logits (and their softmax).
    per_layer = 10 * cfg.d_model + 2 * cfg.d_ff + 2 * 64 * cfg.n_heads
    outside = 2 * sum(cfg.emb_sizes.values()) + 2 * cfg.d_model + 2 * sum(sizes.values())
    return ModelCost(
        params=params,
        flops_per_token=6.0 * params + attention,
        activation_bytes_per_token=4.0 * (cfg.n_layers * per_layer + outside),
        buffer_bytes=buffers,
    )


def _check(model: CPTransformerConfig, data: DataConfig, sections: Mapping[str, Any]) -> None:
    if data.seq_len > model.max_len:
        raise ValueError(
            f"data.seq_len: {data.seq_len} is longer than model.max_len {model.max_len}; "
            "lower data.seq_len or raise model.max_len"
        )
    generate: GenerateConfig = sections["generate"]
    for attr in ("temperatures", "top_ps"):
        unknown = sorted(set(getattr(generate, attr)) - set(CP_HEADS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], CP_HEADS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (heads: {', '.join(CP_HEADS)})"
            raise ValueError(f"generate.{attr}.{unknown[0]}: unknown head{hint}")


# -- sampling ---------------------------------------------------------------------------------


def _check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    from podium.engine.families.cp.sampler import check_conditioning

    return check_conditioning(conditioning)


def _sample(
    model: nn.Module, profile: Profile, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    from podium.engine.families.cp.sampler import sample_batch

    return sample_batch(model, profile.section("generate"), requests, device)


def _draw(conditioning: Mapping[str, str], info: DataInfo, seed: int) -> dict[str, str]:
    from podium.engine.families.cp.keys import draw_conditioning

    return draw_conditioning(conditioning, info, seed)


def _to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    from podium.engine.families.cp.tokens import decode_tokens

    return decode_tokens(sample.tokens)


SAMPLER = SamplerSpec(
    options=(
        ConditionOption(name="emotion", help="Q1..Q4 (blank: drawn by the seed)", choices=EMOTIONS),
        ConditionOption(
            name="key",
            help="e.g. C:maj, a:min (blank: one the training data pairs with the emotion)",
        ),
    ),
    check=_check_conditioning,
    sample=_sample,
    to_midi=_to_midi,
    draw=_draw,
)


# -- the conditioning check -------------------------------------------------------------------


def _check_every(profile: Profile) -> int:
    return profile.section("generate").check_every_epochs


def _run_check(model: nn.Module, profile: Profile, epoch: int) -> Mapping[str, float]:
    from podium.engine.families.cp.conditioning import conditioning_check

    gen = profile.section("generate")
    return conditioning_check(model, gen, samples_per_quadrant=gen.check_samples, seed=epoch)


CONDITIONING_CHECK = EpochHook(
    name="conditioning check",
    group=CHECK_GROUP,
    title="conditioning check · fraction of samples matching",
    every_epochs=_check_every,
    run=_run_check,
    direction="max",  # each value is a fraction of samples that match: higher is better
)


def _prepare_spec(cfg: DataConfig) -> PrepareSpec:
    from podium.engine.families.cp.prepare import CPTokenizer

    return PrepareSpec(
        tokenizer=CPTokenizer(keep_drums=cfg.keep_drums),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
    )


FAMILY: Family[CPTransformerConfig, DataConfig] = Family(
    name="cp",
    description="compound-word transformer (EMOPIA style), conditioned on emotion and key",
    model_config=CPTransformerConfig,
    data_config=DataConfig,
    sections={"generate": GenerateConfig},
    heads=CP_HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    check=_check,
    sampler=SAMPLER,
    epoch_hooks=(CONDITIONING_CHECK,),
    prepare=_prepare_spec,
    adapters={"emopia": EmopiaAdapter()},
)
