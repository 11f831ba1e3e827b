"""Sampling event sequences with cached keys, values and relative logits.

Each new token runs one ``MusicTransformer.step``: per layer, its query against the cached keys
plus one row of relative logits, O(L) per token instead of a forward pass over the whole prefix
(``bench/bench_relative_attention.py`` measures the two). A request longer than the model's
``max_len`` does not fail ("size of tensor a (2049) must match (2048)"): the caches slide, the
conditioning tokens stay in the window, and the note says so.

Only event tokens and END are drawn (never PAD or a conditioning token). Randomness comes only
from a numpy generator per request, so the same seed gives the same MIDI bytes and a preview
taken from a live run never moves the run's RNG.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from podium.engine.families.music_transformer import tokens as T
from podium.engine.families.music_transformer.config import CONDITIONS, GenerateConfig
from podium.engine.families.music_transformer.data import ConditionTokens
from podium.engine.families.registry import Sample, SampleRequest
from podium.engine.generate import GenerateError, sample_rows
from podium.engine.models.modes import eval_mode


def check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    """Canonical values before any model is loaded: trimmed, lower case ("" stays "": drawn by
    the seed). Names or the lab's integers; which exist is the run's profile's to say, so they
    are resolved against it when sampling (``resolve_conditioning``)."""
    return {dim: str(conditioning.get(dim, "") or "").strip().lower() for dim in CONDITIONS}


def resolve_conditioning(
    conditioning: Mapping[str, str], conditions: ConditionTokens, seed: int
) -> dict[str, str]:
    """Names for every active dimension: a given name or index resolved, a blank one drawn by
    ``seed``. GenerateError for a value the profile's tables do not hold."""
    rng = np.random.Generator(np.random.PCG64([int(seed), 7]))
    out = {}
    for dim in CONDITIONS:
        value = str(conditioning.get(dim, "") or "").strip()
        if dim not in conditions.dims:
            if value:
                raise GenerateError(
                    f"--{dim} {value!r}: this run's model has no {dim} conditioning"
                )
            continue
        names = conditions.names(dim)
        if not value:
            out[dim] = names[int(rng.integers(len(names)))]
            continue
        name = conditions.resolve(dim, value)
        if name is None:
            listed = ", ".join(f"{n} ({i})" for i, n in enumerate(names))
            raise GenerateError(f"--{dim} {value!r}: must be one of {listed}")
        out[dim] = name
    return out


def token_cap(request: SampleRequest, cfg: GenerateConfig) -> int:
    """The most tokens a request may generate: its own ``tokens``, else ``max_tokens``."""
    return request.tokens if request.tokens is not None else cfg.max_tokens


def seconds_cap(request: SampleRequest, cfg: GenerateConfig) -> float | None:
    """The music a request asks for, in seconds (bars at ``seconds_per_bar``)."""
    if request.seconds is not None:
        return request.seconds
    if request.bars is not None:
        return request.bars * cfg.seconds_per_bar
    return None


def sample_batch(
    model: Any,
    cfg: GenerateConfig,
    conditions: ConditionTokens,
    requests: Sequence[SampleRequest],
    device: Any = None,
) -> list[Sample]:
    """One piece per request, all rows stepped together; the model's mode is restored.

    Each row draws only from its own request's seed. A NaN/inf in an active row's logits is a
    GenerateError naming the seed."""
    if not requests:
        return []
    if device is None:
        device = next(model.parameters()).device
    with eval_mode(model), torch.inference_mode():
        return _sample(model, cfg, conditions, requests, device)


def _sample(
    model: Any,
    cfg: GenerateConfig,
    conditions: ConditionTokens,
    requests: Sequence[SampleRequest],
    device: Any,
) -> list[Sample]:
    t0 = time.perf_counter()
    B = len(requests)
    conds = [resolve_conditioning(r.conditioning, conditions, r.seed) for r in requests]
    prefixes = [conditions.prefix(c) for c in conds]
    P = len(prefixes[0])
    gens = [np.random.Generator(np.random.PCG64(int(r.seed))) for r in requests]
    caps = [token_cap(r, cfg) for r in requests]
    secs = [seconds_cap(r, cfg) for r in requests]
    temps = np.array(
        [r.temperature if r.temperature is not None else cfg.temperature for r in requests]
    )
    top_ps = np.array([r.top_p if r.top_p is not None else cfg.top_p for r in requests])
    banned = np.zeros(model.vocab_size, dtype=bool)
    banned[T.PAD :] = True  # PAD and the conditioning tokens are given, never drawn
    rows: list[list[int]] = [list(p) for p in prefixes]
    music = [0.0] * B
    ended: list[str | None] = [None] * B
    max_len = int(model.cfg.max_len)
    caches = model.init_state(B, device)
    for i in range(P):  # the prefix: only the last one's logits are read
        z, caches = model.step(torch.tensor([p[i] for p in prefixes], device=device), caches)
    for _ in range(max(caps)):
        active = [b for b in range(B) if ended[b] is None]
        if not active:
            break
        logits = z.double().cpu().numpy()
        bad = [b for b in active if not np.isfinite(logits[b]).all()]
        if bad:
            raise GenerateError(
                f"the model produced non-finite logits (NaN or inf) for seed {requests[bad[0]].seed}"
            )
        logits = np.where(np.isfinite(logits), logits, 0.0)
        logits[:, banned] = -np.inf
        u = np.array([gens[b].random() if ended[b] is None else 0.5 for b in range(B)])
        picks = sample_rows(logits, temps, top_ps, u)
        for b in active:
            tok = int(picks[b])
            if tok == T.END:
                ended[b] = "eos"
                continue
            rows[b].append(tok)
            if T.TIME_SHIFT <= tok < T.VELOCITY:
                music[b] += (tok - T.TIME_SHIFT + 1) * T.STEP_S
                if secs[b] is not None and music[b] >= secs[b]:
                    ended[b] = "bars" if requests[b].seconds is None else "seconds"
                    continue
            if len(rows[b]) - P >= caps[b]:
                ended[b] = "length"
        if all(e is not None for e in ended):
            break
        z, caches = model.step(torch.as_tensor(picks, device=device), caches)
    seconds = time.perf_counter() - t0
    out = []
    for b, r in enumerate(requests):
        end = ended[b] or "length"
        n = len(rows[b]) - P
        out.append(
            Sample(
                tokens=np.asarray(rows[b], dtype=np.int64),
                conditioning=conds[b],
                ended=end,
                seconds=seconds,
                seed=r.seed,
                note=_note(end, r, n, music[b], cfg, max_len),
            )
        )
    return out


def _note(
    ended: str, request: SampleRequest, n: int, music: float, cfg: GenerateConfig, max_len: int
) -> str:
    """Why a sample ended short of what was asked, or how it went past the trained length."""
    words = []
    if (request.bars is not None or request.seconds is not None) and ended == "length":
        asked = f"{request.seconds:g} s" if request.seconds is not None else f"{request.bars} bars"
        cap = (
            f"--tokens {request.tokens}"
            if request.tokens is not None
            else (f"generate.max_tokens = {cfg.max_tokens}")
        )
        words.append(f"{music:.0f} s of the {asked} asked: the token cap {cap} ended it")
    elif ended == "eos" and request.tokens is not None:
        words.append(f"{n} of {request.tokens} tokens: the model ended the piece itself")
    if n > max_len:
        words.append(
            f"{n} tokens is past the model's max_len {max_len}: the last {max_len} (and the "
            "conditioning) were in view"
        )
    return "; ".join(words)
