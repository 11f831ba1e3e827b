"""The ``amt`` family: a GPT-2 over MIDI events conditioned on semantic tokens (the AMT seed).

Pieces become TIME_ON / NOTE / DURATION events (``tokens``) behind a SEMANTIC_k token, k the
k-means cluster of the piece's text description (``semantic``: scikit-learn TF-IDF + k-means, k
by silhouette). ``data`` prepares and caches them, ``model`` is the GPT-2 (with its validation
metrics: perplexity, next-token accuracy, loss per semantic token), ``hf`` reads and writes the
Hugging Face GPT-2 layout, ``sampler`` generates through the key-value cache, ``prepare`` is the
tokeniser ``podium prepare`` runs (events only: the semantic token is added when a prepared
directory is read, once the clustering is fitted over its texts). This module only
declares the family; the torch-heavy modules are imported when their builders run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from podium.engine.families.amt.config import (
    MAX_SEMANTIC,
    DataConfig,
    GenerateConfig,
    GPT2Config,
)
from podium.engine.families.registry import (
    ConditionOption,
    DataBundle,
    DataInfo,
    Family,
    LogFn,
    ModelCost,
    PrepareSpec,
    Sample,
    SampleRequest,
    SamplerSpec,
    StateDictAdapter,
)

if TYPE_CHECKING:
    import pretty_midi
    import torch
    from torch import nn

    from podium.engine.config import Profile
    from podium.engine.metrics import ValidationMetrics

HEADS = ("events",)
SEMANTIC_METRICS = tuple(f"loss_sem{k}" for k in range(MAX_SEMANTIC))
"""Validation loss of the pieces of each semantic token (only the run's k of them appear)."""


def _build_data(cfg: DataConfig, log: LogFn) -> DataBundle:
    from podium.engine.families.amt.data import build_datasets

    return build_datasets(cfg, log=log)


def _vocab(info: DataInfo) -> Any:
    from podium.engine.families.amt.tokens import AMTVocab

    return AMTVocab.from_dict(info.get("vocab"))


def _build_model(cfg: GPT2Config, info: DataInfo) -> nn.Module:
    from podium.engine.families.amt.model import GPT2

    semantic = info.get("semantic") or {}
    model = GPT2(cfg, _vocab(info).vocab_size, n_semantic=max(1, len(semantic.get("centres", ()))))
    if cfg.init_from and not model.wte.weight.is_meta:  # meta: a shape-only rebuild
        from podium.engine.families.amt.hf import init_from_hf

        init_from_hf(model, cfg.init_from)
    return model


def param_count(cfg: GPT2Config, vocab_size: int) -> int:
    """GPT-2's parameters from its sizes (no torch): embeddings, blocks, final norm."""
    d, ff = cfg.d_model, cfg.ff_width
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d)
    return vocab_size * d + cfg.max_len * d + cfg.n_layers * block + 2 * d


def _cost(cfg: GPT2Config, data: DataConfig) -> ModelCost:
    params = param_count(cfg, data.vocab_size)
    T = min(data.seq_len, cfg.max_len)
    d, ff = cfg.d_model, cfg.ff_width
    # Kept for backward per token (fp32): per layer the norms, q/k/v, attention output,
    # residuals (~10 d), the feed-forward's two activations; then the logits and their softmax.
    per_layer = 10 * d + 2 * ff + 2 * cfg.n_heads * T // 8  # SDPA's flash/efficient kernels
    return ModelCost(
        params=params,
        flops_per_token=6.0 * params + 6.0 * cfg.n_layers * d * T,  # + causal attention
        activation_bytes_per_token=4.0 * (cfg.n_layers * per_layer + 3 * data.vocab_size),
    )


def _check(model: GPT2Config, data: DataConfig, sections: Mapping[str, Any]) -> None:
    if data.seq_len > model.max_len:
        raise ValueError(
            f"data.seq_len: {data.seq_len} is longer than model.max_len {model.max_len}; "
            "lower data.seq_len or raise model.max_len"
        )


def _build_metrics(cfg: GPT2Config, info: DataInfo) -> ValidationMetrics:
    from podium.engine.families.amt.model import AMTMetrics

    vocab = _vocab(info)
    k = len((info.get("semantic") or {}).get("centres", ())) or vocab.max_semantic
    return AMTMetrics(vocab.semantic_base, min(k, MAX_SEMANTIC))


def _extra_state(data: DataBundle) -> dict[str, Any]:
    """The clustering in words (k, silhouette, sizes, top terms) beside the data info."""
    semantic = data.semantic
    return {
        "semantic_summary": {
            "k": semantic.k,
            "silhouette": semantic.silhouette,
            "sizes": list(semantic.sizes),
            "top_terms": [list(t) for t in semantic.top_terms],
        }
    }


# -- sampling ---------------------------------------------------------------------------------


def _check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    from podium.engine.families.amt.sampler import check_conditioning

    return check_conditioning(conditioning)


def _draw(conditioning: Mapping[str, str], info: DataInfo, seed: int) -> dict[str, str]:
    from podium.engine.families.amt.sampler import draw_conditioning

    return draw_conditioning(conditioning, info, seed)


def _sample(
    model: nn.Module, profile: Profile, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    from podium.engine.families.amt.data import vocab_of
    from podium.engine.families.amt.sampler import sample_batch

    return sample_batch(
        model, profile.section("generate"), vocab_of(profile.data), requests, device
    )


def _to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    from podium.engine.families.amt.tokens import AMTVocab, decode_tokens

    return decode_tokens(sample.tokens, getattr(sample, "vocab", None) or AMTVocab())


SAMPLER = SamplerSpec(
    options=(
        ConditionOption(
            name="semantic",
            help="semantic token K, 0..k-1 (blank: from --text, else drawn by the seed)",
            derived_from="text",
        ),
        ConditionOption(
            name="text", help='a description, mapped to the nearest token ("a slow sad ballad")'
        ),
    ),
    check=_check_conditioning,
    sample=_sample,
    to_midi=_to_midi,
    draw=_draw,
)


def _prepare_spec(cfg: DataConfig) -> PrepareSpec:
    from podium.engine.families.amt.prepare import tokenizer_of

    return PrepareSpec(tokenizer=tokenizer_of(cfg), val_fraction=cfg.val_fraction)


def _adapters() -> Mapping[str, StateDictAdapter]:
    from podium.engine.families.amt.hf import GPT2Adapter

    return {"hf": GPT2Adapter()}


class _LazyAdapters(Mapping):
    """``{"hf": GPT2Adapter()}``, built on first use (``hf`` imports torch)."""

    def __getitem__(self, key: str) -> StateDictAdapter:
        return _adapters()[key]

    def __iter__(self):
        return iter(("hf",))

    def __len__(self) -> int:
        return 1


FAMILY: Family[GPT2Config, DataConfig] = Family(
    name="amt",
    description="GPT-2 over TIME_ON/NOTE/DURATION events, conditioned on semantic tokens",
    model_config=GPT2Config,
    data_config=DataConfig,
    sections={"generate": GenerateConfig},
    heads=HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    check=_check,
    metrics=("perplexity", "accuracy", *SEMANTIC_METRICS),
    metric_directions={"perplexity": "min", **dict.fromkeys(SEMANTIC_METRICS, "min")},
    build_metrics=_build_metrics,
    sampler=SAMPLER,
    extra_state=_extra_state,
    prepare=_prepare_spec,
    adapters=_LazyAdapters(),
)
