"""Sampling CP pieces, one token at a time in constant memory.

The CP transformer's causal linear attention has a recurrent form (``CPStepper``): generating T
tokens costs O(T) with a state the size of one layer's key-value summary, instead of re-running
the whole prefix for every token (O(T^2)). Sampling follows the two-stage output of the model:
the token type first, then every other field given the sampled type, each with its own
temperature and nucleus (top-p) from the profile's ``[generate]`` table.

Randomness comes only from a numpy ``Generator`` per request, seeded by it, so the same seed gives
the same MIDI bytes and a preview taken from a live run never moves the run's RNG.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.config import BF16_FROM_PARAMS, GenerateConfig
from podium.engine.families.cp.keys import draw_conditioning
from podium.engine.families.cp.stepper import CPStepper
from podium.engine.families.cp.tokens import emotion_token
from podium.engine.families.registry import Sample, SampleRequest
from podium.engine.generate import GenerateError, sample_rows
from podium.engine.models.modes import eval_mode

FIELDS = V.FIELDS
TYPE = FIELDS.index("type")
OTHER = tuple(f for f in FIELDS if f != "type")
"""The heads sampled after the type, given it."""
OTHER_COLS = [FIELDS.index(f) for f in OTHER]


def check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    """Canonical emotion and key ("" stays "": drawn by the seed), or a GenerateError listing
    the valid values."""
    emotion = str(conditioning.get("emotion", "") or "").strip()
    key = str(conditioning.get("key", "") or "").strip()
    if emotion and emotion.upper() not in V.EMOTIONS:
        raise GenerateError(f"--emotion {emotion!r}: must be one of {', '.join(V.EMOTIONS)}")
    emotion = emotion.upper()
    if key:
        parsed = V.parse_key(key)
        if parsed is None or parsed not in V.KEYS:
            raise GenerateError(
                f"--key {key!r}: not a key; use a tonic and a mode like C:maj, F#:min, Bb:maj, a:min"
            )
        key = parsed
    return {"emotion": emotion, "key": key}


def _head_settings(cfg: GenerateConfig, req: SampleRequest) -> dict[str, tuple[float, float]]:
    out = {}
    for f in FIELDS:
        t = (
            req.temperature
            if req.temperature is not None
            else cfg.temperatures.get(f, cfg.temperature)
        )
        p = req.top_p if req.top_p is not None else cfg.top_ps.get(f, cfg.top_p)
        out[f] = (float(t), float(p))
    return out


def sample_one(
    model: Any, gen_cfg: GenerateConfig, request: SampleRequest, device: Any = None
) -> Sample:
    """Generate one piece with ``model`` (a CPTransformer) in eval mode; its mode is restored.

    A NaN/inf in the logits is retried once with the next seed, then reported.
    """
    return sample_batch(model, gen_cfg, [request], device)[0]


def sample_batch(
    model: Any, gen_cfg: GenerateConfig, requests: Sequence[SampleRequest], device: Any = None
) -> list[Sample]:
    """Generate one piece per request, all in one batch (one recurrent step for all per token).

    Each row draws only from its own request's seed, so a request gives the same piece alone or
    in any batch up to float rounding of the batched matmuls. The model is put in eval mode and
    its mode restored; the global torch and numpy RNGs are never used. A NaN/inf in any active
    row's logits retries the whole batch once with every seed + 1, then raises GenerateError.
    ``device`` defaults to the model's.
    """
    if not requests:
        return []
    if device is None:
        device = next(model.parameters()).device
    with _sampling_threads(torch.device(device), model):
        try:
            return _sample_batch(model, gen_cfg, requests, device)
        except GenerateError as first:
            if "non-finite" not in str(first):
                raise
            again = [replace(r, seed=r.seed + 1) for r in requests]
            try:
                return _sample_batch(model, gen_cfg, again, device)
            except GenerateError as second:
                seeds = ", ".join(str(r.seed) for r in again)
                raise GenerateError(f"{second} (also after a retry with seed {seeds})") from None


@contextlib.contextmanager
def _sampling_threads(device: torch.device, model: Any) -> Iterator[None]:
    """On the CPU, torch's intra-op threads for sampling, then as they were, unless a run
    trains in this process: one thread for a small model, this process's share of the CPUs
    (``cpu_share.plan_threads``) for a big one.

    One token at a time, every op is a matrix-vector product or a vector of a few hundred
    numbers. In a small model a second thread has little to share and a barrier per op, and on
    a loaded machine each barrier waits for a core: the demo model, 1024 tokens on a loaded
    2-core box, 42.6 s (23 CPU-s) on 2 threads against 2.5 s (1.6 CPU-s) on one. A big model
    (``memory_bound``) is bound by the memory each token reads, which one core cannot pull
    alone: emopia-cp's 39M on the idle 2-core box, 1024 tokens in bfloat16,
    19.2 s on one thread and 14.1 s on two (bench/bench_generate.py --size emopia). Its share
    counts the podium runs training on the host, and ``podium generate`` waits passively
    (``OMP_WAIT_POLICY``), so a busy host costs it a slower preview, not spinning threads.

    The count is the process's (torch.set_num_threads from one thread changes the other
    threads' count and MKL's too: checked), so while a run trains here (a preview from the
    live run) it is left alone: a thread count that changes mid-run slows the training thread
    and changes its results in their last bits, and a resume must reproduce them.
    """
    from podium.engine.cpu_share import current_plan, other_podium_runs, plan_threads, usable_cpus

    before = torch.get_num_threads()
    if device.type != "cpu" or current_plan() is not None:
        yield
        return
    threads = 1
    if memory_bound(model):
        threads = min(before, plan_threads(usable_cpus(), other_podium_runs()))
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def _sample_batch(
    model: Any, gen_cfg: GenerateConfig, requests: Sequence[SampleRequest], device: Any
) -> list[Sample]:
    t0 = time.perf_counter()
    B = len(requests)
    gens = [np.random.Generator(np.random.PCG64(int(r.seed))) for r in requests]
    conds = []
    for r in requests:
        # Blank values not drawn by the caller (``generate_from_run`` draws them from the
        # checkpoint's pair table): a key of the emotion's mode.
        drawn = draw_conditioning(check_conditioning(r.conditioning), None, r.seed)
        conds.append((drawn["emotion"], drawn["key"]))
    max_len = int(model.cfg.max_len)
    caps = [token_cap(r, gen_cfg, max_len) for r in requests]
    settings = [_head_settings(gen_cfg, r) for r in requests]
    # (B,) for the type head; (B * 8,) row-major (row, head) for the other heads.
    type_t = np.array([s["type"][0] for s in settings])
    type_p = np.array([s["type"][1] for s in settings])
    rest_t = np.array([s[f][0] for s in settings for f in OTHER])
    rest_p = np.array([s[f][1] for s in settings for f in OTHER])
    bar_beat = FIELDS.index("bar_beat")

    rows = [[emotion_token(e, k)] for e, k in conds]
    ended: list[str | None] = [None] * B
    bars = [0] * B
    music_s = [0.0] * B  # length of the finished bars, at their tempi
    bpm = [120.0] * B  # the latest sampled tempo (120 until one is sampled)
    tempo = FIELDS.index("tempo")
    x = torch.as_tensor(np.stack([r[0] for r in rows]), device=device)  # (B, 9)
    with eval_mode(model):
        # A snapshot of the weights, laid out for one-token steps.
        stepper = CPStepper(model, matrices=cpu_matrices(gen_cfg, model, torch.device(device)))
        layout = _Layout(stepper.rest_sizes)
        keys = np.array([V.key_index(k) for _, k in conds])  # (B,) each row's key token
        state = stepper.init_state(B, device)
        for pos in range(max(caps)):
            active = [b for b in range(B) if ended[b] is None]
            for b in active:
                if pos >= caps[b]:
                    ended[b] = "length"
                elif pos >= max_len:
                    ended[b] = "max_len"
            active = [b for b in active if ended[b] is None]
            if not active:
                break
            h, state = stepper.step(x, state, pos)  # (B, C)
            # One transfer per token: the type logits and the other heads' share of h.
            z = stepper.heads(h).double().cpu().numpy()  # (B, n_type + R + n_rel)
            u = np.zeros((B, 1 + len(OTHER)))
            u[active] = [gens[b].random(1 + len(OTHER)) for b in active]
            out = np.zeros((B, len(FIELDS)), dtype=np.int64)
            type_z = layout.checked(z[:, : stepper.n_type], active, rest=False)
            out[:, TYPE] = sample_rows(type_z, type_t, type_p, u[:, 0])
            rest = layout.checked(stepper.rest_logits(z, out[:, TYPE], keys), active, rest=True)
            picks = sample_rows(layout.padded(rest), rest_t, rest_p, u[:, 1:].reshape(-1))
            out[:, OTHER_COLS] = picks.reshape(B, -1)
            for b in active:
                kind = out[b, TYPE]
                if kind == V.TYPE_EOS:
                    rows[b].append(out[b])
                    ended[b] = "eos"
                    continue
                if kind == V.TYPE_METRICAL and 1 <= out[b, tempo] <= len(V.TEMPO_BINS):
                    bpm[b] = float(V.TEMPO_BINS[out[b, tempo] - 1])
                if kind == V.TYPE_METRICAL and out[b, bar_beat] == V.BAR:
                    if bars[b]:
                        music_s[b] += 4 * 60.0 / bpm[b]  # the bar that just ended
                    bars[b] += 1
                    limit = requests[b].bars
                    if limit is not None and bars[b] > limit:
                        ended[b] = "bars"
                        continue
                    cap_s = requests[b].seconds
                    if cap_s is not None and music_s[b] >= cap_s:
                        ended[b] = "seconds"
                        continue
                rows[b].append(out[b])
            x = torch.as_tensor(out, device=device)  # finished rows feed junk, never read
    seconds = time.perf_counter() - t0
    out = []
    for b, r in enumerate(requests):
        end = ended[b] or ("length" if len(rows[b]) - 1 >= caps[b] else "max_len")
        made = bars[b] - (end in ("bars", "seconds"))  # the Bar that ended it is not kept
        out.append(
            Sample(
                tokens=np.stack(rows[b]).astype(np.int64),
                conditioning={"emotion": conds[b][0], "key": conds[b][1]},
                ended=end,
                seconds=seconds,
                seed=r.seed,
                note=why_it_ended(end, r, made, len(rows[b]) - 1, music_s[b], gen_cfg, max_len),
                bars=made,
            )
        )
    return out


def memory_bound(model: Any) -> bool:
    """Whether sampling ``model`` on the CPU is bound by the memory each token reads (from
    ``BF16_FROM_PARAMS`` parameters on) rather than by Python: it decides both the threads
    (``_sampling_threads``) and, under ``cpu_weights = "auto"``, the matrices' dtype."""
    return sum(p.numel() for p in model.parameters()) >= BF16_FROM_PARAMS


def cpu_matrices(gen_cfg: GenerateConfig, model: Any, device: torch.device) -> torch.dtype | None:
    """The dtype of the stepper's big matrices (``GenerateConfig.cpu_weights``); None keeps the
    model's (on a GPU always)."""
    if device.type != "cpu" or gen_cfg.cpu_weights == "float32":
        return None
    auto_small = gen_cfg.cpu_weights == "auto" and not memory_bound(model)
    return None if auto_small else torch.bfloat16


def token_cap(request: SampleRequest, gen_cfg: GenerateConfig, max_len: int) -> int:
    """The most tokens a request may generate. An explicit ``tokens``; else, when bars or
    seconds are asked, none short of the model's ``max_len`` (past it: they end the piece, and
    ``generate.max_tokens`` must not cut an 8-bar request at 4); else ``generate.max_tokens``."""
    if request.tokens is not None:
        return request.tokens
    if request.bars is not None or request.seconds is not None:
        return max_len + 1
    return gen_cfg.max_tokens


def why_it_ended(
    ended: str,
    request: SampleRequest,
    bars: int,
    tokens: int,
    music_s: float,
    gen_cfg: GenerateConfig,
    max_len: int,
) -> str:
    """The stop reason in words a user can act on, when a sample ended short of what was asked
    ("" when it ended as asked: its bars, its seconds, its token cap alone)."""
    if request.bars is not None and ended != "bars":
        got = f"{bars} of {request.bars} bars"
    elif request.seconds is not None and ended != "seconds":
        got = f"{music_s:.0f} of {request.seconds:g} s of music ({bars} bars)"
    elif ended == "length" and request.tokens is None:
        got = f"{bars} bars"
    else:
        return ""
    rate = f"; {tokens} tokens made {bars} bar{'s' if bars != 1 else ''}"
    if ended == "max_len":
        return (
            f"{got}: the model holds at most {max_len} tokens (model.max_len{rate}); ask for "
            "fewer bars, or train a model with a larger model.max_len"
        )
    if ended == "length":
        cap = (
            f"--tokens {request.tokens}"
            if request.tokens is not None
            else f"generate.max_tokens = {gen_cfg.max_tokens}"
        )
        return (
            f"{got}: the token cap {cap} ended it{rate}; raise it (up to model.max_len {max_len})"
        )
    if ended == "eos":
        return f"{got}: the model ended the piece itself (its end token)"
    return f"{got}: ended by {ended}"


class _Layout:
    """The eight non-type heads' logits as ``CPStepper.rest_logits`` gives them (side by side),
    checked, and padded to one (8, widest vocabulary) block per row that lets a step sample all
    eight in one call, -inf past each vocabulary's end (one call per head cost more than the
    model's step)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = list(sizes)
        self.widest = max(self.sizes)
        self.valid = np.arange(self.widest)[None, :] < np.array(self.sizes)[:, None]  # (8, Vmax)
        self.ends = np.cumsum(self.sizes)  # where each non-type head ends in the rest block

    def checked(self, z: np.ndarray, active: list[int], *, rest: bool) -> np.ndarray:
        """``z`` (B, n_type) or, with ``rest``, (B, R); NaN/inf in an active row is a
        GenerateError naming the head; in a finished row it becomes 0."""
        finite = np.isfinite(z)
        if finite.all():
            return z
        if not finite[active].all():
            col = int(np.argwhere(~finite[active])[0, 1])
            head = OTHER[int(np.searchsorted(self.ends, col, "right"))] if rest else "type"
            raise GenerateError(f"the {head} head produced non-finite logits (NaN or inf)")
        return np.where(finite, z, 0.0)

    def padded(self, rest: np.ndarray) -> np.ndarray:
        """(B, R) side by side -> (B * 8, widest)."""
        out = np.full((len(rest), len(self.sizes), self.widest), -np.inf)
        out[:, self.valid] = rest
        return out.reshape(len(rest) * len(self.sizes), self.widest)
