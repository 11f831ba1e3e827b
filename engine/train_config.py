"""The profile's ``[train]`` table: optimizer, schedule, batch, precision, validation, stopping.

Plain dataclasses, apart from the loop that reads them, so loading a profile imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    """``[train.early_stopping]``: stop when validation stops improving."""

    patience: int = 0
    """Validations without an improvement of at least ``min_delta`` before the run stops (0 = off)."""
    min_delta: float = 0.0
    """How much the validation loss must drop to count as an improvement."""

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"patience: must be >= 0 (got {self.patience})")
        if self.min_delta < 0:
            raise ValueError(f"min_delta: must be >= 0 (got {self.min_delta})")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The profile's [train] table."""

    seed: int = 0
    """Seeds weights, dropout and the data order."""
    epochs: int = 10
    """Length of the schedule. ``--max-steps``/``--max-epochs`` end a run early without changing it."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."""
    optimizer: Literal["adamw"] = "adamw"
    lr: float = 3e-4
    """Peak learning rate."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    """Applied to weight matrices and embeddings only (parameters with 2+ dimensions)."""
    schedule: Literal["cosine", "onecycle", "noam", "constant"] = "cosine"
    """cosine: linear warmup then cosine to lr*min_lr_ratio; onecycle: linear up over warmup_steps
    then linear down to lr*min_lr_ratio; noam: warmup then inverse square root; constant: warmup
    then flat."""
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    clip_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping; the norm is still measured)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on CUDA GPUs that support it, else fp16 with loss scaling; fp32 on CPU."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    val_every_steps: int = 0
    """Validate every this many optimizer steps (0 = at the end of each epoch)."""
    val_max_batches: int = 0
    """Cap validation to this many batches (0 = the whole validation split)."""
    log_every_steps: int = 0
    """Read losses back from the device every this many steps (0 = every step on CPU, every 10 on
    GPU). Every step's losses are recorded either way; this only sets how often the host syncs."""
    num_workers: int = -1
    """DataLoader worker processes: 0 loads in the training thread; -1 (auto) is 0 on the CPU
    (a worker would take a core from the intra-op threads) and, on a GPU, this rank's share of
    the usable CPUs less the training thread, at most 4."""
    prefetch_batches: int = 4
    """Batches each DataLoader worker keeps ready (with workers only)."""
    tf32: bool = True
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores (what fp32 parts of an
    autocast step run in). Off for bit-faithful fp32."""
    compile: bool = False
    """Train through ``torch.compile(model)`` (the first steps pay for the compilation;
    checkpoints, validation and previews use the plain module)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """torch.compile's mode; "reduce-overhead" also captures CUDA graphs."""
    cpu_threads: int = 0
    """Intra-op CPU threads per rank (0 = the CPUs this process may use, by its affinity and
    cgroup quota, divided among the run's ranks)."""
    cpu_share: bool = False
    """Also divide those CPUs among the podium runs training on the host when this one starts
    (faster when several share the cores). Off by default: on CPU the thread count can change
    a result in its last bits, so with it a rerun or a resume on a busier or quieter host is no
    longer bit-identical to the run it repeats."""
    cpu_wait: Literal["passive", "active"] = "passive"
    """How idle OpenMP threads wait: passive (sleep; right on a shared host, where spinning
    threads of several runs starve each other) or active (spin; a machine of one's own).
    ``OMP_WAIT_POLICY`` in the environment wins."""
    max_nonfinite_steps: int = 5
    """Consecutive steps with a non-finite loss or gradient (each skipped) before the run fails."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_nonfinite_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        non_negative = (
            "warmup_steps",
            "val_every_steps",
            "val_max_batches",
            "log_every_steps",
            "cpu_threads",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 (got {getattr(self, name)})")
        if self.num_workers < -1:
            raise ValueError(f"num_workers: must be >= 0, or -1 for auto (got {self.num_workers})")
        if self.prefetch_batches < 1:
            raise ValueError(f"prefetch_batches: must be >= 1 (got {self.prefetch_batches})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be > 0 (got {self.lr})")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1) (got {getattr(self, name)})")
        if self.eps <= 0:
            raise ValueError(f"eps: must be > 0 (got {self.eps})")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0 (got {self.weight_decay})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: must be in [0, 1] (got {self.min_lr_ratio})")
        if self.clip_grad_norm < 0:
            raise ValueError(f"clip_grad_norm: must be >= 0 (got {self.clip_grad_norm})")
        if self.device != "auto" and self.device != "cpu" and not _is_cuda_name(self.device):
            raise ValueError(f"device: must be auto, cpu, cuda or cuda:N (got {self.device!r})")


def _is_cuda_name(name: str) -> bool:
    return name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())
