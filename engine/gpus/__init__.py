"""The one door to NVIDIA GPUs: NVML readings (``nvml``), the lab's and the user's GPU settings
(``config``), reservations and selection before CUDA starts (``select``), and per-GPU leases held
by live runs (``leases``)."""
