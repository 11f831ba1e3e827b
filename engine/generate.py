"""Sampling music from a trained CP model, one token at a time in constant memory.

The CP transformer's causal linear attention has a recurrent form (``model.step``): generating T
tokens costs O(T) with a state the size of one layer's key-value summary, instead of re-running
the whole prefix for every token (O(T^2)). Sampling follows the two-stage output of the model:
the token type first, then every other field given the sampled type, each with its own
temperature and nucleus (top-p) from the profile's ``[generate]`` table.

Randomness comes only from a ``torch.Generator`` seeded by the request, so the same seed gives
the same MIDI bytes and a preview taken from a live run never moves the run's RNG.

    result = generate_from_run(run, "latest", GenerateRequest(emotion="Q1", bars=8, seed=3))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from engine.data import cp_vocab as V
from engine.data.cp_tokens import decode_tokens, emotion_token
from engine.errors import PodiumError

FIELDS = V.FIELDS
TYPE = FIELDS.index("type")


class GenerateError(PodiumError):
    """A request that cannot be generated (bad conditioning, no checkpoint, broken logits)."""


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    """One sample: conditioning, length and sampling. Blank conditioning is drawn by the seed."""

    emotion: str = ""
    """Q1..Q4 (EMOPIA's quadrants); "" picks one with the seed."""
    key: str = ""
    """A key like "C:maj" or "a:min"; "" picks one with the seed."""
    bars: int | None = 8
    """Stop after this many bars (None: only EOS or ``tokens`` end it)."""
    tokens: int | None = None
    """Hard cap on generated tokens (default: the profile's ``generate.max_tokens``)."""
    temperature: float | None = None
    """Overrides every head's temperature (None: the profile's)."""
    top_p: float | None = None
    """Overrides every head's top-p (None: the profile's)."""
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """Generated tokens and what ended them."""

    tokens: np.ndarray
    """(T, 9) int64, starting with the Emotion token."""
    emotion: str
    key: str
    ended: str
    """"eos", "bars", "length" (the token cap) or "max_len" (the model's longest sequence)."""
    seconds: float
    seed: int
    """The seed actually used (the request's, or the next one after a retry)."""


def check_conditioning(emotion: str, key: str) -> tuple[str, str]:
    """Canonical emotion and key, or a GenerateError listing the valid values."""
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
    return emotion, key


def _filter_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    drop = cum - sorted_p > top_p  # keep the token that crosses the threshold
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return out / out.sum(dim=-1, keepdim=True)


def sample_logits(
    logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator, head: str
) -> torch.Tensor:
    """One index per row of ``logits`` (B, V); raises GenerateError on NaN/inf logits."""
    logits = logits.float()
    if not torch.isfinite(logits).all():
        raise GenerateError(f"the {head} head produced non-finite logits (NaN or inf)")
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    probs = _filter_top_p(probs, top_p)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


def _head_settings(cfg: Any, req: GenerateRequest) -> dict[str, tuple[float, float]]:
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


@torch.no_grad()
def sample_cp(model: Any, gen_cfg: Any, request: GenerateRequest, device: Any = "cpu") -> Sample:
    """Generate one piece with ``model`` (a CPTransformer) in eval mode; its mode is restored.

    A NaN/inf in the logits is retried once with the next seed, then reported.
    """
    try:
        return _sample_once(model, gen_cfg, request, device)
    except GenerateError as first:
        if "non-finite" not in str(first):
            raise
        try:
            return _sample_once(model, gen_cfg, replace(request, seed=request.seed + 1), device)
        except GenerateError as second:
            raise GenerateError(
                f"{second} (also after a retry with seed {request.seed + 1})"
            ) from None


def _sample_once(model: Any, gen_cfg: Any, req: GenerateRequest, device: Any) -> Sample:
    t0 = time.perf_counter()
    emotion, key = check_conditioning(req.emotion, req.key)
    gen = torch.Generator(device="cpu").manual_seed(int(req.seed))
    if not emotion:
        emotion = V.EMOTIONS[int(torch.randint(len(V.EMOTIONS), (1,), generator=gen))]
    if not key:
        key = V.KEYS[int(torch.randint(len(V.KEYS), (1,), generator=gen))]
    cap = req.tokens if req.tokens is not None else gen_cfg.max_tokens
    max_len = int(model.cfg.max_len)
    settings = _head_settings(gen_cfg, req)
    was_training = model.training
    model.eval()
    try:
        rows = [emotion_token(emotion, key)]
        x = torch.as_tensor(rows[0], device=device).unsqueeze(0)  # (1, 9)
        state = model.init_state(1, device)
        ended, bars = "length", 0
        for pos in range(cap):
            if pos >= max_len:
                ended = "max_len"
                break
            h, state = model.step(x, state, pos)  # (1, C)
            kind = sample_logits(model.type_logits(h), *settings["type"], gen, "type")  # (1,)
            rest = model.field_logits(h, kind)
            row = torch.zeros(len(FIELDS), dtype=torch.long, device=device)
            row[TYPE] = kind[0]
            for i, f in enumerate(FIELDS):
                if i != TYPE:
                    row[i] = sample_logits(rest[f], *settings[f], gen, f)[0]
            t = int(kind[0])
            if t == V.TYPE_EOS:
                rows.append(row.cpu().numpy())
                ended = "eos"
                break
            if t == V.TYPE_METRICAL and int(row[FIELDS.index("bar_beat")]) == V.BAR:
                bars += 1
                if req.bars is not None and bars > req.bars:
                    ended = "bars"
                    break
            rows.append(row.cpu().numpy())
            x = row.unsqueeze(0)
    finally:
        model.train(was_training)
    return Sample(
        tokens=np.stack(rows).astype(np.int64),
        emotion=emotion,
        key=key,
        ended=ended,
        seconds=time.perf_counter() - t0,
        seed=req.seed,
    )


# -- from a run ------------------------------------------------------------------------------


def load_model(run_path: Path, checkpoint: str, device: Any = "cpu") -> tuple[Any, Any]:
    """The model of a run's checkpoint (eval mode) and the run's generate config."""
    from engine.checkpoints import load_state
    from engine.config import load_profile

    path = run_path / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists() or not path.with_suffix(".json").exists():
        have = sorted(p.stem for p in (run_path / "checkpoints").glob("*.json"))
        raise GenerateError(
            f"run {run_path.name} has no checkpoint {checkpoint!r}"
            + (f" (have: {', '.join(have)})" if have else " (none saved yet)")
        )
    profile = load_profile(run_path / "profile.toml")
    if profile.family != "cp":
        raise GenerateError(f"run {run_path.name}: generation is built for the cp family only")
    state = load_state(path)
    bundle = SimpleNamespace(vocab_sizes=dict(state.get("vocab_sizes") or V.vocab_sizes()))
    model = profile.family_spec.build_model(profile.model, bundle)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), profile.generate


def sample_name(checkpoint: str, sample: Sample) -> str:
    return f"{checkpoint}-{sample.emotion}-{sample.key.replace(':', '')}-seed{sample.seed}"


def write_midi(sample: Sample, path: Path) -> Path:
    """Decode and write atomically (a half-written .mid never shows in the sample list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    midi = decode_tokens(sample.tokens)
    tmp = path.with_name(f".{path.name}.tmp")
    midi.write(str(tmp))
    tmp.replace(path)
    return path


def generate_from_run(
    run_path: Path,
    checkpoint: str,
    request: GenerateRequest,
    *,
    out: Path | None = None,
    device: Any = "cpu",
    model: Any = None,
    gen_cfg: Any = None,
) -> tuple[Sample, Path]:
    """Sample from a checkpoint (or from ``model``, e.g. a copy of live weights) and write the
    MIDI under ``RUN/samples/`` (or ``out``)."""
    if model is None:
        model, gen_cfg = load_model(run_path, checkpoint, device)
    sample = sample_cp(model, gen_cfg, request, device)
    path = (
        out if out is not None else run_path / "samples" / f"{sample_name(checkpoint, sample)}.mid"
    )
    return sample, write_midi(sample, path)


def render_wav(midi_path: Path, wav_path: Path, rate: int = 22050) -> Path:
    """A WAV of a MIDI file: fluidsynth with a soundfont when both are there, else pretty_midi's
    sine synthesis (always available). 16-bit mono, written atomically."""
    import wave

    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(midi_path))
    audio = None
    try:
        audio = midi.fluidsynth(fs=rate)
    except Exception:  # no pyfluidsynth or no soundfont: the plain synthesiser
        audio = None
    if audio is None or not len(audio):
        audio = midi.synthesize(fs=rate)
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    pcm = (audio / peak * 0.9 * 32767).astype("<i2") if peak > 0 else audio.astype("<i2")
    tmp = wav_path.with_name(f".{wav_path.name}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    tmp.replace(wav_path)
    return wav_path


def tokens_per_second(sample: Sample) -> float:
    n = len(sample.tokens) - 1
    return n / sample.seconds if sample.seconds > 0 else math.inf
