"""The MidiKompanion emotion-to-music pipeline: five small networks, exported to ONNX.

A 216-node emotion thesaurus (``thesaurus``: 6 base emotions x 6 sub-emotions x 6 nuances)
drives synthetic training data (``data``) for five MLPs trained together (``model``: one loss
head each, one validation metric each in ``metrics``): EmotionRecognizer 128 -> 64,
MelodyTransformer 64 -> 128, HarmonyPredictor 128 -> 64, DynamicsEngine 32 -> 16 and
GroovePredictor 64 -> 32. ``podium export RUN --onnx DIR`` writes one ONNX file per network and
checks it with onnxruntime (``export``); ``podium generate RUN --node ID`` turns a node into a
short MIDI phrase through four of them (``phrase``).

This module only declares the family; torch is imported when a builder runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podium.engine.families.emotion_pipeline.config import PipelineDataConfig, PipelineModelConfig
from podium.engine.families.registry import (
    ConditionOption,
    DataBundle,
    DataInfo,
    ExportReport,
    Family,
    LogFn,
    ModelCost,
    Profile,
    Sample,
    SampleRequest,
    SamplerSpec,
)

if TYPE_CHECKING:
    import pretty_midi
    import torch
    from torch import nn

    from podium.engine.metrics import ValidationMetrics

HEADS = ("emotion", "melody", "harmony", "dynamics", "groove")
METRICS = ("emotion_cosine", "melody_f1", "chord_accuracy", "dynamics_mae", "groove_onset_accuracy")


def _build_data(cfg: PipelineDataConfig, log: LogFn) -> DataBundle:
    from podium.engine.families.emotion_pipeline.data import build_data

    return build_data(cfg, log)


def _build_model(cfg: PipelineModelConfig, info: DataInfo) -> nn.Module:
    from podium.engine.families.emotion_pipeline.model import EmotionPipeline

    return EmotionPipeline(cfg)


def _cost(cfg: PipelineModelConfig, data: PipelineDataConfig) -> ModelCost:
    from podium.engine.families.emotion_pipeline.model import param_count

    params = param_count(cfg)  # one example is one "token": each network runs once on it
    return ModelCost(params=params, flops_per_token=6.0 * params)


def _build_metrics(cfg: PipelineModelConfig, info: DataInfo) -> ValidationMetrics:
    from podium.engine.families.emotion_pipeline.metrics import PipelineMetrics

    return PipelineMetrics()


def _check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    from podium.engine.families.emotion_pipeline import thesaurus
    from podium.engine.generate import GenerateError

    node = str(conditioning.get("node", "") or "").strip().lower()
    ids = [n.id for n in thesaurus.load().nodes]
    if node and node not in ids:
        close = difflib.get_close_matches(node, ids, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {close[0]}?"
            if close
            else " (ids are base.sub.nuance, e.g. joy.elation.strong)"
        )
        raise GenerateError(f"--node {node!r}: not a thesaurus node{hint}")
    return {"node": node}


def _sample(
    model: nn.Module, profile: Profile, requests: Sequence[SampleRequest], device: torch.device
) -> list[Sample]:
    from podium.engine.families.emotion_pipeline.phrase import sample_batch

    return sample_batch(model, requests, device)  # type: ignore[arg-type]


def _to_midi(sample: Sample) -> pretty_midi.PrettyMIDI:
    from podium.engine.families.emotion_pipeline.phrase import to_midi

    return to_midi(sample)


def _export(model: nn.Module, profile: Profile, info: DataInfo, outdir: Path) -> ExportReport:
    from podium.engine.families.emotion_pipeline.export import export_onnx

    return export_onnx(model, profile, info, outdir)


SAMPLER = SamplerSpec(
    options=(
        ConditionOption(
            name="node",
            help="a thesaurus node, base.sub.nuance, e.g. joy.elation.strong (blank: drawn)",
        ),
    ),
    check=_check_conditioning,
    sample=_sample,
    to_midi=_to_midi,
)


FAMILY: Family[PipelineModelConfig, PipelineDataConfig] = Family(
    name="emotion_pipeline",
    description="MidiKompanion's five emotion-to-music networks, exported to ONNX",
    model_config=PipelineModelConfig,
    data_config=PipelineDataConfig,
    heads=HEADS,
    build_data=_build_data,
    build_model=_build_model,
    cost=_cost,
    metrics=METRICS,
    metric_directions={"dynamics_mae": "min"},
    build_metrics=_build_metrics,
    sampler=SAMPLER,
    exporter=_export,
)
