"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), in plain torch.

With the feature map ``phi(x) = elu(x) + 1`` the attention of query ``i`` is

    out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),
    S_i = sum_{j<=i} phi(k_j) v_j^T   (D x E),   z_i = sum_{j<=i} phi(k_j)   (D),

which gives two equal forms:

* ``causal_linear_attention`` (training): CHUNKED. Inside chunks of ``chunk_size`` tokens it is
  masked quadratic attention with the phi-kernel; between chunks it carries the running ``S``
  and ``z``. The textbook "cumulative sum of outer products" materialises a B x H x T x D x E
  tensor and measured ~50x slower on this machine (``bench/bench_linear_attention.py``); the
  chunked form only ever holds one D x E state per chunk.
* ``linear_attention_step`` (generation): the recurrent form, constant memory per token.

The normaliser ``phi(q)^T z`` is computed in float32 even under bf16 autocast: it is a sum of up
to T positive terms and bf16's 8-bit mantissa loses whole tokens' worth of mass long before T=1024.

``CausalLinearAttention`` wraps either form behind q/k/v/out projections. Its ``backend`` picks
the kernel of the parallel form:

* ``torch``: the chunked form above, on any device;
* ``fla``: flash-linear-attention's Triton kernel ``fla.ops.linear_attn.chunk_linear_attn``
  (``pip install 'podium[gpu]'``), CUDA only;
* ``fast_transformers``: the CUDA/CPU kernel of ``pytorch-fast-transformers``
  (``pip install 'podium[fast]'``);
* ``auto``: on CUDA, fla when importable, else fast_transformers when importable, else torch; on
  the CPU, torch (forward + backward at T=1024, B=4, H=8, D=64 the chunked form took 0.9-1.2x
  softmax SDPA's time on 2 threads and 0.6x on one, ``bench/bench_linear_attention.py``). It
  is resolved per device at the first forward, since a model is built on the CPU and moved
  afterwards.

Every backend computes the normaliser the same way (``_normaliser``: float32, ``EPS``); the
kernels only compute the numerator. The recurrent step is always the torch one (it is already
O(1) per token).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-6
"""Added to the normaliser; the same value fast_transformers uses, so both backends agree."""

DEFAULT_CHUNK = 64
"""Chunk length of the parallel form; 64 measured fastest on 2 CPU cores at T=256..1024."""

Backend = Literal["torch", "fla", "fast_transformers", "auto"]
"""What a profile may ask for (``[model] attention_backend``)."""
Resolved = Literal["torch", "fla", "fast_transformers"]
"""What runs: ``auto`` resolved for a device."""
BACKENDS: tuple[str, ...] = get_args(Backend)
LinearState = tuple[Tensor, Tensor]
"""``(S, z)``: S (B, H, D, E) running sum of phi(k) v^T; z (B, H, D) running sum of phi(k)."""


def feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1: positive, so the normaliser can never be zero or change sign."""
    return F.elu(x) + 1.0


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or the input's dtype when that is wider (float64 in tests)."""
    return torch.promote_types(dtype, torch.float32)


def _normaliser(phi_q: Tensor, phi_k: Tensor) -> Tensor:
    """phi(q_i)^T sum_{j<=i} phi(k_j), at least float32, autocast off; shape (B, H, T)."""
    wide = _wide(phi_q.dtype)
    with torch.autocast(device_type=phi_q.device.type, enabled=False):
        z = phi_k.to(wide).cumsum(dim=-2)  # (B, H, T, D)
        return (phi_q.to(wide) * z).sum(dim=-1)  # (B, H, T)


def causal_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, chunk_size: int = DEFAULT_CHUNK, eps: float = EPS
) -> Tensor:
    """Parallel (training) form, chunked.

    Args:
        q, k: (B, H, T, D) raw queries and keys (the feature map is applied here).
        v: (B, H, T, E) values.
        chunk_size: tokens per chunk; any T works (the last chunk is padded, then cut off).
        eps: added to the normaliser.

    Returns:
        (B, H, T, E), in the dtype of the numerator (v's dtype, or the autocast dtype).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1 (got {chunk_size})")
    B, H, T, D = q.shape
    E = v.shape[-1]
    phi_q, phi_k = feature_map(q), feature_map(k)  # (B, H, T, D)
    den = _normaliser(phi_q, phi_k)  # (B, H, T) float32

    C = min(chunk_size, T)
    N = -(-T // C)  # chunks, rounded up
    pad = N * C - T
    if pad:
        # Padding sits after every real token, so the causal mask and the exclusive prefix over
        # chunks keep it out of every real output; phi(0) = 1 is harmless there.
        phi_q = F.pad(phi_q, (0, 0, 0, pad))
        phi_k = F.pad(phi_k, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    qc = phi_q.reshape(B, H, N, C, D)  # (B, H, N, C, D)
    kc = phi_k.reshape(B, H, N, C, D)  # (B, H, N, C, D)
    vc = v.reshape(B, H, N, C, E)  # (B, H, N, C, E)

    # Within each chunk: masked quadratic attention with the phi-kernel.
    scores = qc @ kc.transpose(-1, -2)  # (B, H, N, C, C)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, 0.0)  # (B, H, N, C, C)
    num = scores @ vc  # (B, H, N, C, E)

    # Between chunks: the state of all earlier chunks (exclusive prefix sum over chunks).
    if N > 1:
        kv = kc.transpose(-1, -2) @ vc  # (B, H, N, D, E) one chunk's sum of phi(k) v^T
        kv = kv.to(_wide(kv.dtype))  # accumulate across chunks in >= float32 (cheap: N states)
        state = kv.cumsum(dim=2) - kv  # (B, H, N, D, E) sum over earlier chunks only
        num = num + qc @ state.to(qc.dtype)  # (B, H, N, C, E)

    num = num.reshape(B, H, N * C, E)[:, :, :T]  # (B, H, T, E)
    out = num.to(den.dtype) / (den + eps).unsqueeze(-1)  # (B, H, T, E) at least float32
    return out.to(num.dtype)


def linear_attention_step(
    q: Tensor, k: Tensor, v: Tensor, state: LinearState, *, eps: float = EPS
) -> tuple[Tensor, LinearState]:
    """Recurrent (generation) form: one token, constant memory.

    Args:
        q, k: (B, H, D) this token's raw query and key.
        v: (B, H, E) this token's value.
        state: ``(S, z)``; S (B, H, D, E), z (B, H, D). The state's dtype is the working dtype
            (keep it float32: it accumulates over the whole sequence).

    Returns:
        ``(out, state)``: out (B, H, E) in v's dtype, and the new state (the old one is untouched).
    """
    S, z = state
    with torch.autocast(device_type=q.device.type, enabled=False):
        phi_q = feature_map(q.to(S.dtype))  # (B, H, D)
        phi_k = feature_map(k.to(S.dtype))  # (B, H, D)
        S = S + phi_k.unsqueeze(-1) * v.to(S.dtype).unsqueeze(-2)  # (B, H, D, E)
        z = z + phi_k  # (B, H, D)
        num = (phi_q.unsqueeze(-2) @ S).squeeze(-2)  # (B, H, E)
        den = (phi_q * z).sum(dim=-1, keepdim=True)  # (B, H, 1)
        out = num / (den + eps)  # (B, H, E)
    return out.to(v.dtype), (S, z)


Kernel = Callable[[Tensor, Tensor, Tensor], Tensor]
"""A backend's numerator: phi(q), phi(k) (B, H, T, D) and v (B, H, T, E) -> (B, H, T, E)."""


@functools.cache
def _fast_transformers_kernel() -> Kernel | None:
    """fast_transformers' causal_dot_product, or None when the package is not importable."""
    try:
        module = importlib.import_module("fast_transformers.causal_product")
    except (ImportError, OSError):  # OSError: the compiled extension fails to load
        return None
    kernel = module.causal_dot_product

    def numerator(phi_q: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
        with torch.autocast(device_type=phi_q.device.type, enabled=False):
            # The kernel is float32-only and wants contiguous (B, H, T, D) inputs.
            return kernel(
                phi_q.float().contiguous(), phi_k.float().contiguous(), v.float().contiguous()
            )  # (B, H, T, E)

    return numerator


def fla_numerator(chunk_linear_attn: Callable[..., tuple[Tensor, object]]) -> Kernel:
    """Our numerator through fla's ``chunk_linear_attn`` (or a function with its signature).

    fla's layout is (B, T, H, D), ours (B, H, T, D): a transpose, which undoes the one in
    ``CausalLinearAttention._heads``, so no copy is made. fla applies no feature map (phi is
    ours), scales q by ``scale`` (K**-0.5 unless told: we pass 1.0, our attention has no
    scale), and its own normaliser keeps the running sum of k in k's dtype (bf16 under
    autocast) with eps 1e-10: ``normalize=False`` leaves the normaliser to ``_normaliser``,
    float32 with our ``EPS``, so every backend divides by the same thing.
    """

    def numerator(phi_q: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
        o, _ = chunk_linear_attn(
            phi_q.transpose(1, 2).contiguous(),  # (B, T, H, D)
            phi_k.transpose(1, 2).contiguous(),  # (B, T, H, D)
            v.transpose(1, 2).contiguous(),  # (B, T, H, E)
            scale=1.0,
            normalize=False,
        )  # (B, T, H, E)
        return o.transpose(1, 2)  # (B, H, T, E)

    return numerator


@functools.cache
def _fla_kernel() -> Kernel | None:
    """fla's chunked Triton kernel as a numerator, or None when fla (or Triton) is not
    importable. Cached: importing fla's ops compiles nothing but takes a while."""
    try:
        module = importlib.import_module("fla.ops.linear_attn")
    except (ImportError, OSError, RuntimeError):  # RuntimeError: Triton finds no driver
        return None
    return fla_numerator(module.chunk_linear_attn)


def _kernel(backend: Resolved) -> Kernel | None:
    """The numerator kernel of a resolved backend; None for torch (the chunked form)."""
    if backend == "fla":
        return _fla_kernel()
    if backend == "fast_transformers":
        return _fast_transformers_kernel()
    return None


_NOT_IMPORTABLE = {
    "fla": "flash-linear-attention (fla, with Triton) is not importable; install it "
    "(pip install 'podium[gpu]')",
    "fast_transformers": "the package fast_transformers is not importable; install it "
    "(pip install 'podium[fast]')",
}


def check_backend(backend: str) -> None:
    """Raises ``ValueError`` when ``backend`` is unknown or names a kernel that is not
    importable; the device is checked later (``resolve_backend``)."""
    if backend not in BACKENDS:
        raise ValueError(
            f"attention_backend: must be one of {', '.join(map(repr, BACKENDS))} (got {backend!r})"
        )
    if backend in _NOT_IMPORTABLE and _kernel(backend) is None:  # type: ignore[arg-type]
        raise ValueError(
            f"attention_backend: {backend!r} was requested but {_NOT_IMPORTABLE[backend]} "
            'or set attention_backend = "torch" (or "auto")'
        )


def resolve_backend(backend: str, device: torch.device | str) -> Resolved:
    """The backend that runs on ``device`` for the requested one.

    ``auto``: on CUDA fla, then fast_transformers, then torch, the first importable; elsewhere
    torch. Raises ``ValueError`` (one line, ``attention_backend: ...``) for an unknown name,
    for fla off CUDA, and for a requested kernel that is not importable.
    """
    device = torch.device(device)
    if backend == "fla" and device.type != "cuda":
        raise ValueError(
            f"attention_backend: 'fla' runs on CUDA only and this run would train on "
            f'{device.type}; set attention_backend = "auto" (fla on CUDA, torch elsewhere) or '
            '"torch", or give the run a GPU (--gpus)'
        )
    check_backend(backend)
    if backend != "auto":
        return backend  # type: ignore[return-value]
    if device.type == "cuda":
        for candidate in ("fla", "fast_transformers"):
            if _kernel(candidate) is not None:
                return candidate
    return "torch"


def _attention_kernel(kernel: Kernel, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The same maths as ``causal_linear_attention`` with a kernel's numerator."""
    phi_q, phi_k = feature_map(q), feature_map(k)  # (B, H, T, D)
    den = _normaliser(phi_q, phi_k)  # (B, H, T) float32
    num = kernel(phi_q, phi_k, v)  # (B, H, T, E)
    out = num.to(den.dtype) / (den + EPS).unsqueeze(-1)  # (B, H, T, E) at least float32
    return out.to(v.dtype)


class CausalLinearAttention(nn.Module):
    """Multi-head causal linear attention with q/k/v/out projections.

    ``forward`` is the chunked parallel form (or fla's or fast_transformers' kernel), ``step`` the
    recurrent form; in eval mode they give the same outputs. Dropout applies to the output
    projection (linear attention has no attention matrix to drop from).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        backend: Backend = "torch",
        *,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model: must be divisible by n_heads (got {d_model} and {n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.chunk_size = chunk_size
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        check_backend(backend)  # a kernel that is not importable fails here, at build
        self.requested: Backend = backend
        """The backend asked for; ``backend`` says what runs on the weights' device."""
        self._resolved: dict[torch.device, Resolved] = {}

    @property
    def backend(self) -> Resolved:
        """The backend that runs on the device the weights are on ("auto" resolved)."""
        return self._backend_for(self.query.weight.device)

    def _backend_for(self, device: torch.device) -> Resolved:
        if device not in self._resolved:
            self._resolved[device] = resolve_backend(self.requested, device)
        return self._resolved[device]

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C), causal."""
        B, T, C = x.shape
        q = self._heads(self.query(x))  # (B, H, T, Dh)
        k = self._heads(self.key(x))  # (B, H, T, Dh)
        v = self._heads(self.value(x))  # (B, H, T, Dh)
        kernel = _kernel(self._backend_for(x.device))
        if kernel is None:
            y = causal_linear_attention(q, k, v, chunk_size=self.chunk_size)  # (B, H, T, Dh)
        else:
            y = _attention_kernel(kernel, q, k, v)  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.dropout(self.out(y))

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LinearState:
        """An empty recurrent state; float32 unless told otherwise (it accumulates)."""
        dtype = dtype or torch.float32
        S = torch.zeros(
            batch, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=dtype
        )
        z = torch.zeros(batch, self.n_heads, self.head_dim, device=device, dtype=dtype)
        return S, z

    def step(self, x_t: Tensor, state: LinearState) -> tuple[Tensor, LinearState]:
        """One token: x_t (B, C) -> (y_t (B, C), new state)."""
        B, C = x_t.shape
        q = self.query(x_t).view(B, self.n_heads, self.head_dim)  # (B, H, Dh)
        k = self.key(x_t).view(B, self.n_heads, self.head_dim)  # (B, H, Dh)
        v = self.value(x_t).view(B, self.n_heads, self.head_dim)  # (B, H, Dh)
        y, state = linear_attention_step(q, k, v, state)  # (B, H, Dh)
        return self.dropout(self.out(y.reshape(B, C))), state
