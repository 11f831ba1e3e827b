"""The compound-word (CP) family: EMOPIA-style CP tokens, one loss per token field."""

from __future__ import annotations

from typing import Any

from engine.models.registry import Family, register

CP_HEADS = ("tempo", "chord", "bar_beat", "type", "pitch", "duration", "velocity", "emotion", "key")


def _build_data(cfg: Any, log=print) -> Any:
    from engine.data.datasets import build_datasets

    return build_datasets(cfg, log=log)


def _build_model(cfg: Any, bundle: Any) -> Any:
    from engine.models.cp_transformer import CPTransformer

    return CPTransformer(cfg, bundle.vocab_sizes)


def _check(model_cfg: Any, data_cfg: Any) -> None:
    if data_cfg.seq_len > model_cfg.max_len:
        raise ValueError(
            f"data.seq_len: {data_cfg.seq_len} is longer than model.max_len {model_cfg.max_len}; "
            "lower data.seq_len or raise model.max_len"
        )


def _configs() -> tuple[type, type]:
    from engine.data.datasets import DataConfig
    from engine.models.cp_transformer import CPTransformerConfig

    return CPTransformerConfig, DataConfig


_model_config, _data_config = _configs()

CP = register(
    Family(
        name="cp",
        description="compound-word transformer (EMOPIA style), conditioned on emotion and key",
        model_config=_model_config,
        data_config=_data_config,
        heads=CP_HEADS,
        build_data=_build_data,
        build_model=_build_model,
        check=_check,
    )
)
