"""Refusing a run that cannot fit, before anything is allocated.

On a shared server a typo (``model.n_layers = 100000``) must not take the machine's memory from
everyone else. The family's ``cost`` (computed on the meta device: no weights exist) gives the
parameters and a rough activation size per token; training needs about

    16 bytes per parameter (fp32 weights, gradients, AdamW's two moments)
    + activation bytes per token x batch_size x seq_len

which is compared with what is available where the model will live: the host's ``MemAvailable``
(``/proc/meminfo``) on the CPU, the chosen GPUs' free memory (NVML) on CUDA. The estimate is a
floor, not a forecast: a run it lets through may still run out, one it refuses cannot fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podium.engine.errors import ProfileError
from podium.engine.units import size

if TYPE_CHECKING:
    from podium.engine.config import Profile
    from podium.engine.gpus.nvml import GpuInfo

MEMINFO = Path("/proc/meminfo")


def host_available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` in bytes, or None where the kernel does not say (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file says kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def training_bytes(profile: Profile) -> tuple[int, int]:
    """``(parameters, bytes)`` one process needs to train ``profile`` (the module docstring)."""
    cost = profile.family_spec.cost(profile.model, profile.data)
    tokens = profile.train.batch_size * int(getattr(profile.data, "seq_len", 1) or 1)
    need = cost.fp32_bytes + cost.buffer_bytes + cost.activation_bytes_per_token * tokens
    return cost.params, int(need)


def check_fits(
    profile: Profile,
    gpus: Sequence[GpuInfo] = (),
    *,
    processes: int = 1,
    host_bytes: int | None = None,
) -> None:
    """Refuse ``profile`` in one line when its estimate exceeds the memory it would train in.

    Args:
        gpus: the chosen GPUs (``GpuInfo``, their ``memory_free`` from NVML); empty: the CPU.
        processes: ranks on the CPU, each holding a whole copy.
        host_bytes: the host's available memory (default: ``/proc/meminfo``).

    Raises:
        ProfileError: naming the estimate, the memory available and where.
    """
    params, need = training_bytes(profile)
    if gpus:
        free = [(g.memory_free, g) for g in gpus if isinstance(g.memory_free, int)]
        if not free:
            return  # NVML does not say: let CUDA decide
        have, gpu = min(free, key=lambda item: item[0])
        where = f"GPU {gpu.index} ({gpu.uuid}) has {size(have)} free"
    else:
        have = host_available_bytes() if host_bytes is None else host_bytes
        if have is None:
            return
        need *= processes
        ranks = f" for {processes} ranks" if processes > 1 else ""
        where = f"this host has {size(have)} available{ranks} (MemAvailable)"
    if need > have:
        raise ProfileError(
            f"{profile.source or profile.name}: model: {params:,} parameters need about "
            f"{size(need)} to train (weights, gradients, AdamW and activations at batch "
            f"{profile.train.batch_size}); {where}; make the model or the batch smaller"
        )
