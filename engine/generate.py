"""Sampling music from a trained CP model, one token at a time in constant memory.

The CP transformer's causal linear attention has a recurrent form (``model.step``): generating T
tokens costs O(T) with a state the size of one layer's key-value summary, instead of re-running
the whole prefix for every token (O(T^2)). Sampling follows the two-stage output of the model:
the token type first, then every other field given the sampled type, each with its own
temperature and nucleus (top-p) from the profile's ``[generate]`` table.

Randomness comes only from a numpy ``Generator`` seeded by the request, so the same seed gives
the same MIDI bytes and a preview taken from a live run never moves the run's RNG.

    result = generate_from_run(run, "latest", GenerateRequest(emotion="Q1", bars=8, seed=3))
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from engine.data import cp_vocab as V
from engine.data.cp_tokens import decode_tokens, emotion_token
from engine.errors import PodiumError
from engine.models.cp_stepper import CPStepper

FIELDS = V.FIELDS
TYPE = FIELDS.index("type")
OTHER = tuple(f for f in FIELDS if f != "type")
"""The heads sampled after the type, given it."""
OTHER_COLS = [FIELDS.index(f) for f in OTHER]


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
    seconds: float | None = None
    """Stop at the first bar that would start after this much music (at the sampled tempi)."""
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
    """"eos", "bars", "seconds", "length" (the token cap) or "max_len" (the model's longest
    sequence)."""
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


def sample_rows(
    logits: np.ndarray, temperature: np.ndarray, top_p: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """One index per row of ``logits`` (B, V), by inverse CDF on the uniforms ``u`` (B,).

    Per row: temperature (<= 0 means greedy), then the nucleus: the most probable tokens whose
    mass reaches ``top_p``, the token that crosses it included. In numpy on purpose: for
    vocabularies of a few hundred entries, a dozen torch ops per head cost more than the model's
    recurrent step itself. The caller checks that the logits are finite.
    """
    z = np.asarray(logits, dtype=np.float64)  # (B, V)
    greedy = temperature <= 0
    t = np.where(greedy, 1.0, temperature)[:, None]  # (B, 1)
    probs = np.exp((z - z.max(axis=1, keepdims=True)) / t)  # unnormalised: the top one is 1
    order = np.argsort(-probs, axis=1, kind="stable")  # (B, V) most probable first
    sorted_p = probs[np.arange(len(z))[:, None], order]
    cum = np.cumsum(sorted_p, axis=1)
    # Keep a token while the mass before it is under top_p of the total (the top one always).
    drop = cum - sorted_p >= top_p[:, None] * cum[:, -1:]
    drop[:, 0] = False
    sorted_p[drop] = 0.0
    cum = np.cumsum(sorted_p, axis=1)  # (B, V)
    pick = (cum <= u[:, None] * cum[:, -1:]).sum(axis=1)  # first index whose cum passes u
    pick = np.minimum(pick, z.shape[1] - 1)
    out = order[np.arange(len(z)), pick]
    return np.where(greedy, z.argmax(axis=1), out)


def sample_logits(
    logits: torch.Tensor, temperature: float, top_p: float, gen: np.random.Generator, head: str
) -> int:
    """One index from logits (V,) or (1, V); raises GenerateError on NaN/inf logits."""
    z = logits.detach().reshape(1, -1).double().cpu().numpy()
    if not np.isfinite(z).all():
        raise GenerateError(f"the {head} head produced non-finite logits (NaN or inf)")
    return int(
        sample_rows(z, np.array([temperature]), np.array([top_p]), np.array([gen.random()]))[0]
    )


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


def sample_cp(model: Any, gen_cfg: Any, request: GenerateRequest, device: Any = None) -> Sample:
    """Generate one piece with ``model`` (a CPTransformer) in eval mode; its mode is restored.

    A NaN/inf in the logits is retried once with the next seed, then reported.
    """
    return sample_cp_batch(model, gen_cfg, [request], device)[0]


def sample_cp_batch(
    model: Any, gen_cfg: Any, requests: Sequence[GenerateRequest], device: Any = None
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


@torch.inference_mode()
def _sample_batch(
    model: Any, gen_cfg: Any, requests: Sequence[GenerateRequest], device: Any
) -> list[Sample]:
    t0 = time.perf_counter()
    B = len(requests)
    gens = [np.random.Generator(np.random.PCG64(int(r.seed))) for r in requests]
    conds = []
    for r, gen in zip(requests, gens, strict=True):
        emotion, key = check_conditioning(r.emotion, r.key)
        emotion = emotion or V.EMOTIONS[int(gen.integers(len(V.EMOTIONS)))]
        key = key or V.KEYS[int(gen.integers(len(V.KEYS)))]
        conds.append((emotion, key))
    caps = [r.tokens if r.tokens is not None else gen_cfg.max_tokens for r in requests]
    max_len = int(model.cfg.max_len)
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
    was_training = model.training
    model.eval()
    try:
        stepper = CPStepper(model)  # a snapshot of the weights, laid out for one-token steps
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
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    return [
        Sample(
            tokens=np.stack(rows[b]).astype(np.int64),
            emotion=conds[b][0],
            key=conds[b][1],
            ended=ended[b] or ("length" if len(rows[b]) - 1 >= caps[b] else "max_len"),
            seconds=seconds,
            seed=requests[b].seed,
        )
        for b in range(B)
    ]


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


# -- from a run ------------------------------------------------------------------------------


def load_model(run_path: Path, checkpoint: str, device: Any = "cpu") -> tuple[Any, Any]:
    """The model of a run's checkpoint (eval mode) and the run's generate config."""
    from engine.checkpoints import load_state

    path = run_path / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists() or not path.with_suffix(".json").exists():
        have = sorted(p.stem for p in (run_path / "checkpoints").glob("*.json"))
        raise GenerateError(
            f"run {run_path.name} has no checkpoint {checkpoint!r}"
            + (f" (have: {', '.join(have)})" if have else " (none saved yet)")
        )
    state = load_state(path)
    return model_from_weights(run_path, state["model"], state.get("vocab_sizes"), device)


def model_from_weights(
    run_path: Path, weights: dict, vocab_sizes: dict | None = None, device: Any = "cpu"
) -> tuple[Any, Any]:
    """A fresh model of the run's profile holding ``weights`` (e.g. a live snapshot), eval mode."""
    from engine.config import load_profile

    profile = load_profile(run_path / "profile.toml")
    if profile.family != "cp":
        raise GenerateError(f"run {run_path.name}: generation is built for the cp family only")
    bundle = SimpleNamespace(vocab_sizes=dict(vocab_sizes or V.vocab_sizes()))
    model = profile.family_spec.build_model(profile.model, bundle)
    model.load_state_dict(weights)
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
