"""The audio chord recogniser (the neume-ml seed system): chords rendered to audio, a CQT
front end, three heads (chord type, root, bass) and torchmetrics' classification metrics.

The package: ``labels`` (32 types x 12 roots, the ``C:maj7/3`` notation), ``config`` (the
``[model]`` and ``[data]`` tables), ``render`` (MIDI chords to audio), ``data`` (the rendered
cache and real WAV + CSV folders), ``frontend`` (the CQT), ``model``, ``metrics`` and
``predict`` (``podium predict RUN AUDIO.wav``). This module only declares the family; the
torch-heavy modules are imported when their builders run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from podium.engine.families.chords.config import ChordDataConfig, ChordModelConfig
from podium.engine.families.chords.labels import NOTE_NAMES, TYPES
from podium.engine.families.registry import (
    DataBundle,
    DataInfo,
    Family,
    LogFn,
    ModelCost,
    Prediction,
    Profile,
)

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from podium.engine.metrics import ValidationMetrics

HEADS = ("type", "root", "bass")
"""One cross-entropy per head; the profile's ``[loss_weights]`` weigh them (1 / 1 / 0.5)."""

METRICS = (*(f"{h}/{m}" for m in ("accuracy", "top3", "f1") for h in HEADS), "chord/accuracy")
"""Per head: accuracy, top-3 accuracy, macro F1; and all three heads right (``chord``)."""
MATRICES = (*(f"{h}/confusion" for h in HEADS), *(f"{h}/per_class" for h in HEADS))
"""Per head: the confusion matrix (counts) and per-class precision / recall / F1; the
confusions first, so ``m`` in the dashboard walks the heads."""


def _build_data(cfg: ChordDataConfig, log: LogFn) -> DataBundle:
    from podium.engine.families.chords.data import build_datasets

    return build_datasets(cfg, log)


def _build_model(cfg: ChordModelConfig, info: DataInfo) -> nn.Module:
    from podium.engine.families.chords.model import ChordRecognizer

    return ChordRecognizer(cfg, int(info["sample_rate"]))


def _cost(cfg: ChordModelConfig, data: ChordDataConfig) -> ModelCost:
    import torch

    from podium.engine.families.chords.model import ChordRecognizer

    with torch.device("meta"):  # shapes only: nothing is allocated
        model = ChordRecognizer(cfg, data.sample_rate)
    params = model.num_parameters()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    # "Tokens" are clips here (the trainer counts a batch without a mask by its examples): the
    # cost of one clip is ~6 FLOPs per parameter per encoder frame, plus the front end's conv.
    frames = data.clip_samples // cfg.hop_length + 1
    flops = 6.0 * params * max(frames // 4, 1) + 2.0 * buffers / 4 * frames
    return ModelCost(params=params, flops_per_token=flops, buffer_bytes=buffers)


def _check(model: ChordModelConfig, data: ChordDataConfig, sections: Mapping[str, Any]) -> None:
    if model.fmax() >= data.sample_rate / 2:
        raise ValueError(
            f"model.octaves: the top bin ({model.fmax():.0f} Hz) is above the Nyquist frequency "
            f"of data.sample_rate {data.sample_rate} Hz; use fewer octaves or a higher rate"
        )
    if data.clip_samples < 4 * model.hop_length:
        raise ValueError(
            f"data.clip_seconds: a clip must hold at least 4 hops of model.hop_length "
            f"({4 * model.hop_length} samples; it holds {data.clip_samples})"
        )


def _build_metrics(cfg: ChordModelConfig, info: DataInfo) -> ValidationMetrics:
    from podium.engine.families.chords.metrics import ChordMetrics

    types = list(info.get("types") or TYPES)
    roots = list(info.get("roots") or NOTE_NAMES)
    return ChordMetrics({"type": types, "root": roots, "bass": roots})


def _predict(model: nn.Module, profile: Profile, info: DataInfo, path: Path) -> list[Prediction]:
    from podium.engine.families.chords.predict import predict_file

    return predict_file(model, profile, info, path)


FAMILY: Family[ChordModelConfig, ChordDataConfig] = Family(
    name="chords",
    description="audio chord recogniser: CQT, conv subsampling, transformer; type/root/bass",
    model_config=ChordModelConfig,
    data_config=ChordDataConfig,
    heads=HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    check=_check,
    metrics=METRICS,
    matrices=MATRICES,
    build_metrics=_build_metrics,
    predictor=_predict,
)
