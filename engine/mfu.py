"""Model FLOPs utilisation: the share of the accelerator's peak a run's arithmetic reaches.

MFU = (model FLOPs per token x tokens per second) / peak FLOP/s, the PaLM definition: the
FLOPs the model needs, not the ones the hardware happened to execute (recomputation, padding
and the optimizer do not count).

FLOPs per token are counted, not derived from a formula per family: one forward of a real
micro-batch under ``torch.utils.flop_counter.FlopCounterMode`` (torch's own counter of matmul,
convolution and attention FLOPs by shape), in eval mode, without gradients and with the RNG
state put back, so counting changes nothing a resumed run must reproduce (no dropout draw, no
BatchNorm statistics). Training costs three forwards' worth (the backward computes gradients
for activations and for weights, each a forward's FLOPs): the convention of PaLM and nanoGPT's
``6N`` per token. Tokens are the ones the loop counts for tokens/s (valid, unpadded), so padded
positions are work MFU does not credit.

Peak FLOP/s: the dense bf16/fp16 tensor-core figure of the GPU by name (the data sheets'
numbers, without sparsity), or ``PODIUM_PEAK_TFLOPS`` when set (a GPU not in the table, or a
CPU, whose peak podium cannot know). Without a peak there is no MFU, only achieved FLOP/s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from podium.engine.models.modes import eval_mode

PEAK_ENV = "PODIUM_PEAK_TFLOPS"
"""Environment variable: the device's peak in TFLOP/s, overriding the table (e.g. for a CPU)."""

TRAIN_FLOPS_PER_FORWARD = 3.0
"""Forward + backward (activation and weight gradients) = three forwards of matmul FLOPs."""

# Dense bf16/fp16 tensor-core TFLOP/s from the vendors' data sheets (no 2:4 sparsity). Matched
# by substring of torch.cuda.get_device_name, most specific first.
_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A6000", 154.8),
    ("RTX 6000 Ada", 364.2),
    ("A40", 149.7),
    ("A30", 165.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 5090", 209.5),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_flops(device: torch.device) -> float | None:
    """The device's peak FLOP/s, or None when podium does not know it."""
    text = os.environ.get(PEAK_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            return None
        return value * 1e12 if value > 0 else None
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in _PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def peak_env_error() -> str | None:
    """A one-line complaint about ``PODIUM_PEAK_TFLOPS``, or None when it is unset or valid."""
    text = os.environ.get(PEAK_ENV, "").strip()
    if not text:
        return None
    try:
        if float(text) > 0:
            return None
    except ValueError:
        pass
    return f"{PEAK_ENV}={text!r}: must be a number of TFLOP/s > 0 (the device's peak); unset it"


@dataclass(frozen=True)
class FlopCount:
    forward: float
    """Matmul/convolution/attention FLOPs of one forward of the counted batch."""
    tokens: float
    """The tokens the loop would count for that batch."""

    @property
    def train_per_token(self) -> float:
        """Training FLOPs per token (forward + backward)."""
        return TRAIN_FLOPS_PER_FORWARD * self.forward / max(self.tokens, 1.0)


def count_flops(model: nn.Module, batch: Mapping[str, object], tokens: float) -> FlopCount:
    """One forward of ``batch`` under torch's FLOP counter, leaving no trace on the model."""
    from torch.utils.flop_counter import FlopCounterMode

    devices = [batch_device(batch)] if batch_device(batch).type == "cuda" else []
    with (
        eval_mode(model),
        torch.random.fork_rng(devices=devices),
        torch.no_grad(),
        FlopCounterMode(display=False) as counter,
    ):
        model(batch)
    return FlopCount(forward=float(counter.get_total_flops()), tokens=float(tokens))


def batch_device(batch: Mapping[str, object]) -> torch.device:
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """The fraction of ``peak`` reached (0..1), or None without a peak."""
    if peak is None or peak <= 0:
        return None
    return flops_per_token * tokens_per_s / peak
