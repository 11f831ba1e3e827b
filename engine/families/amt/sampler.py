"""Sampling AMT event sequences with the GPT-2's key-value cache and nucleus sampling.

Each row starts from START, SEMANTIC_k and draws one token per step from its own seeded numpy
generator (``sample_rows``), so the same seed gives the same MIDI and a live preview never moves
the run's RNG. A small grammar keeps rows well-formed: after a NOTE comes its DURATION, after a
DURATION a TIME_ON or END, after a TIME_ON another TIME_ON or a NOTE; specials and semantic
tokens are never drawn. A row ends at END, at its token cap, at ``model.max_len``, or when its
time passes the asked seconds (``--bars N`` is read as N bars of 4 beats at ``generate.bpm``).

Conditioning: ``semantic`` (K) or ``text`` (free text, mapped to the nearest cluster by the
vectoriser saved in the checkpoint's data info, in ``draw_conditioning``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from podium.engine.families.amt.config import GenerateConfig
from podium.engine.families.amt.semantic import SemanticModel
from podium.engine.families.amt.tokens import END, START, AMTVocab
from podium.engine.families.registry import Sample, SampleRequest
from podium.engine.generate import GenerateError, sample_rows
from podium.engine.models.modes import eval_mode


@dataclass(frozen=True)
class AMTSample(Sample):
    """A sample that knows its vocabulary (the tick resolution decoding needs)."""

    vocab: AMTVocab | None = None


def check_conditioning(conditioning: Mapping[str, str]) -> dict[str, str]:
    """Canonical values ("" stays ""); GenerateError for a non-numeric semantic token or both
    options at once."""
    semantic = str(conditioning.get("semantic", "") or "").strip()
    text = " ".join(str(conditioning.get("text", "") or "").split())
    if semantic and not semantic.isdigit():
        raise GenerateError(f"--semantic {semantic!r}: must be a token number like 0 or 3")
    if semantic and text:
        raise GenerateError("--semantic and --text: give one (the text picks a semantic token)")
    return {"semantic": str(int(semantic)) if semantic else "", "text": text}


def draw_conditioning(
    conditioning: Mapping[str, str], info: Mapping[str, Any], seed: int
) -> dict[str, str]:
    """Fill in the semantic token: the text's nearest cluster, or one drawn by the seed in
    proportion to the training pieces per cluster. GenerateError for a token the run's
    clustering does not have."""
    cond = check_conditioning(conditioning)
    data = info.get("semantic")
    if not data:
        if cond["text"]:
            raise GenerateError(
                "--text: this checkpoint holds no fitted vectoriser; use --semantic"
            )
        return cond
    model = SemanticModel.from_dict(data)
    if cond["text"]:
        cond["semantic"] = str(int(model.assign([cond["text"]])[0]))
    elif cond["semantic"]:
        if int(cond["semantic"]) >= model.k:
            raise GenerateError(
                f"--semantic {cond['semantic']}: this run has {model.k} semantic tokens "
                f"(0..{model.k - 1})"
            )
    else:
        sizes = np.asarray(model.sizes or [1] * model.k, dtype=np.float64)
        rng = np.random.Generator(np.random.PCG64(int(seed)))
        cond["semantic"] = str(int(rng.choice(model.k, p=sizes / sizes.sum())))
    return cond


def token_cap(request: SampleRequest, gen_cfg: GenerateConfig, max_len: int) -> int:
    if request.tokens is not None:
        return request.tokens
    if request.bars is not None or request.seconds is not None:
        return max_len
    return gen_cfg.max_tokens


def _seconds_cap(request: SampleRequest, gen_cfg: GenerateConfig) -> float | None:
    if request.seconds is not None:
        return float(request.seconds)
    if request.bars is not None:
        return request.bars * 4 * 60.0 / gen_cfg.bpm
    return None


def _grammar(vocab: AMTVocab) -> np.ndarray:
    """(3, vocab) -inf / 0 masks: what may follow a TIME_ON (or the prefix), a NOTE, a DURATION."""
    V = vocab.vocab_size
    ids = np.arange(V)
    time_ = (ids >= vocab.time_base) & (ids < vocab.duration_base)
    note = (ids >= vocab.note_base) & (ids < vocab.time_base)
    duration = ids >= vocab.duration_base
    end = ids == END
    allowed = np.stack([time_ | note, duration, time_ | end])
    return np.where(allowed, 0.0, -np.inf)


AFTER_TIME, AFTER_NOTE, AFTER_DURATION = range(3)


def sample_batch(
    model: Any,
    gen_cfg: GenerateConfig,
    vocab: AMTVocab,
    requests: Sequence[SampleRequest],
    device: Any = None,
) -> list[AMTSample]:
    """One sample per request, in one batch through the cache; the model's mode is restored."""
    if not requests:
        return []
    if device is None:
        device = next(model.parameters()).device
    with eval_mode(model):
        return _sample_batch(model, gen_cfg, vocab, requests, torch.device(device))


@torch.inference_mode()
def _sample_batch(
    model: Any,
    gen_cfg: GenerateConfig,
    vocab: AMTVocab,
    requests: Sequence[SampleRequest],
    device: torch.device,
) -> list[AMTSample]:
    t0 = time.perf_counter()
    B = len(requests)
    gens = [np.random.Generator(np.random.PCG64(int(r.seed))) for r in requests]
    semantic = []
    texts = []
    for b, r in enumerate(requests):
        # ``draw_conditioning`` has mapped a text to its token (with the checkpoint's data
        # info) before this; a blank token left here is drawn uniformly by the seed.
        asked = str(r.conditioning.get("semantic", "") or "").strip()
        texts.append(" ".join(str(r.conditioning.get("text", "") or "").split()))
        if asked and not asked.isdigit():
            raise GenerateError(f"--semantic {asked!r}: must be a token number like 0 or 3")
        if not asked and texts[b]:
            raise GenerateError("--text: map it with draw_conditioning (the run's data info) first")
        k = int(asked) if asked else int(gens[b].integers(model.n_semantic))
        if not 0 <= k < vocab.max_semantic:
            raise GenerateError(
                f"--semantic {k}: this vocabulary holds 0..{vocab.max_semantic - 1}"
            )
        semantic.append(k)
    max_len = int(model.cfg.max_len)
    caps = [token_cap(r, gen_cfg, max_len) for r in requests]
    limits = [_seconds_cap(r, gen_cfg) for r in requests]
    temps = np.array(
        [r.temperature if r.temperature is not None else gen_cfg.temperature for r in requests]
    )
    top_ps = np.array([r.top_p if r.top_p is not None else gen_cfg.top_p for r in requests])
    grammar = _grammar(vocab)
    state = np.full(B, AFTER_DURATION)  # the prefix is followed by what follows a DURATION...
    rows = [[START, vocab.semantic(k)] for k in semantic]
    ended: list[str | None] = [None] * B
    ticks = np.zeros(B, dtype=np.int64)
    cache = model.new_cache(B, device)
    x = torch.tensor(rows, device=device)  # (B, 2)
    first = True
    while True:
        for b in range(B):
            if ended[b] is None:
                made = len(rows[b]) - 2
                if made >= caps[b]:
                    ended[b] = "length"
                elif len(rows[b]) >= max_len:
                    ended[b] = "max_len"
        active = [b for b in range(B) if ended[b] is None]
        if not active:
            break
        z = model.logits(x, cache)[:, -1].double().cpu().numpy()  # (B, vocab)
        if not np.isfinite(z[active]).all():
            raise GenerateError("the model produced non-finite logits (NaN or inf)")
        mask = grammar[state]
        if first:  # ...except END: a piece holds at least one note
            mask[:, END] = -np.inf
            first = False
        z = np.where(np.isfinite(z), z, 0.0) + mask
        u = np.zeros(B)
        u[active] = [gens[b].random() for b in active]
        picks = sample_rows(z, temps, top_ps, u)
        for b in active:
            t = int(picks[b])
            if t == END:
                rows[b].append(t)
                ended[b] = "eos"
                continue
            kind = vocab.kind(t)
            if kind == "time":
                ticks[b] += t - vocab.time_base
                if limits[b] is not None and ticks[b] / vocab.resolution > limits[b]:
                    ended[b] = "bars" if requests[b].seconds is None else "seconds"
                    continue
                state[b] = AFTER_TIME
            else:
                state[b] = AFTER_NOTE if kind == "note" else AFTER_DURATION
            rows[b].append(t)
        x = torch.as_tensor(picks, device=device)[:, None]  # finished rows feed junk, never read
    seconds = time.perf_counter() - t0
    out = []
    for b, r in enumerate(requests):
        tokens = rows[b]
        if tokens[-1] != END:
            tokens = [*tokens, END]
        out.append(
            AMTSample(
                tokens=np.asarray(tokens, dtype=np.int64),
                conditioning={"semantic": str(semantic[b]), "text": texts[b]},
                ended=ended[b] or "length",
                seconds=seconds,
                seed=r.seed,
                note=_note(ended[b] or "length", r, max_len),
                vocab=vocab,
            )
        )
    return out


def _note(ended: str, request: SampleRequest, max_len: int) -> str:
    asked_time = request.bars is not None or request.seconds is not None
    if not asked_time or ended in ("bars", "seconds"):
        return ""
    if ended == "max_len":
        return (
            f"the model holds at most {max_len} tokens (model.max_len) and ended the sample "
            "before the time asked; ask for less, or train a longer model"
        )
    if ended == "eos":
        return "the model ended the piece itself (its END token) before the time asked"
    return f"ended by {ended} before the time asked"
