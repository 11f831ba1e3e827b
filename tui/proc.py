"""Readings about this process for the resources panel: RAM, CPU share and CUDA memory.

No psutil: RAM comes from ``/proc/self/status`` (Linux), CPU from ``os.times`` deltas. CUDA memory
is read only when torch is already imported and CUDA initialised by the run, so the dashboard never
initialises CUDA itself (that would pin a context on a GPU the run did not ask for).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of this process (or of ``pid``: the training process of an attached
    run), or None where ``/proc`` is not available or the process is gone."""
    try:
        path = f"/proc/{pid if pid is not None else 'self'}/status"
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def total_ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class CpuMeter:
    """CPU time of this process (all threads), or of ``pid``, per wall second since the previous
    reading.

    100% is one core busy; a training process on two cores reads up to 200%.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self._last = self._sample()

    def _sample(self) -> tuple[float, float | None]:
        if self.pid is None:
            t = os.times()
            return time.monotonic(), t.user + t.system
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return time.monotonic(), (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            return time.monotonic(), None

    def percent(self) -> float | None:
        now = self._sample()
        dt = now[0] - self._last[0]
        if dt <= 0 or now[1] is None or self._last[1] is None:
            self._last = now
            return None
        used = now[1] - self._last[1]
        self._last = now
        return 100.0 * used / dt


@dataclass(frozen=True)
class CudaMemory:
    device: str
    allocated: int
    """Bytes held by live tensors."""
    reserved: int
    """Bytes held by the caching allocator (what nvidia-smi shows for this process, roughly)."""
    peak: int
    """Highest ``allocated`` since the process started."""


def cuda_memory() -> CudaMemory | None:
    """This process's CUDA memory, or None when CUDA is not in use here (a CPU run)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        # is_initialized() first: is_available() would enumerate devices, after which the
        # engine's CUDA_VISIBLE_DEVICES for a run started later in this process has no effect.
        if not torch.cuda.is_initialized():
            return None
        dev = torch.cuda.current_device()
        return CudaMemory(
            device=f"cuda:{dev}",
            allocated=int(torch.cuda.memory_allocated(dev)),
            reserved=int(torch.cuda.memory_reserved(dev)),
            peak=int(torch.cuda.max_memory_allocated(dev)),
        )
    except Exception:  # a driver hiccup must not break the panel
        return None
