"""Generation, family-blind at the door: a run's family's sampler, from a checkpoint or live
weights, to a MIDI file.

``podium generate``, the control socket's ``generate`` and the dashboard's preview all come here;
a family without a sampler is told so in one line. Sampling itself is the family's
(``Family.sampler``); this module holds what every sampler shares: nucleus sampling in numpy, and
writing and rendering the result.

    sample, path = generate_from_run(run, "latest", SampleRequest(conditioning={"emotion": "Q1"}))
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from podium.engine.errors import PodiumError
from podium.engine.families.registry import Family, Sample, SampleRequest, SamplerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from podium.engine.config import Profile


class GenerateError(PodiumError):
    """A request that cannot be generated (bad conditioning, no checkpoint, broken logits)."""


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


def sampler_of(family: Family) -> SamplerSpec:
    """The family's sampler, or GenerateError saying it has none."""
    if family.sampler is None:
        raise GenerateError(f"family {family.name} has no sampler")
    return family.sampler


def run_profile(run_path: Path) -> Profile:
    from podium.engine.config import load_profile

    return load_profile(run_path / "profile.toml")


def check_request(
    sampler: SamplerSpec, conditioning: Mapping[str, str], family: str
) -> dict[str, str]:
    """The request's conditioning, checked before any model is loaded: only the sampler's
    options, with values it accepts."""
    names = [o.name for o in sampler.options]
    for name in conditioning:
        if name not in names:
            takes = ", ".join(o.flag for o in sampler.options) or "no conditioning"
            raise GenerateError(f"--{name.replace('_', '-')}: family {family} takes {takes}")
    for option in sampler.options:
        value = conditioning.get(option.name, "")
        if option.choices and value and value.upper() not in {c.upper() for c in option.choices}:
            raise GenerateError(
                f"{option.flag} {value!r}: must be one of {', '.join(option.choices)}"
            )
    return sampler.check(conditioning)


def _checkpoint_state(run_path: Path, checkpoint: str) -> dict[str, Any]:
    """A complete checkpoint's state, or GenerateError naming the checkpoints there are."""
    from podium.engine.checkpoints import load_state

    path = run_path / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists() or not path.with_suffix(".json").exists():
        have = sorted(p.stem for p in (run_path / "checkpoints").glob("*.json"))
        raise GenerateError(
            f"run {run_path.name} has no checkpoint {checkpoint!r}"
            + (f" (have: {', '.join(have)})" if have else " (none saved yet)")
        )
    return load_state(path)


def load_model(
    run_path: Path, checkpoint: str, device: Any = "cpu", *, like: nn.Module | None = None
) -> tuple[nn.Module, Profile]:
    """The model of a run's checkpoint (eval mode) and the run's profile. ``like``: the live
    model, in a process that is training (see ``model_from_weights``)."""
    state = _checkpoint_state(run_path, checkpoint)
    return model_from_weights(run_path, state["model"], state.get("data_info"), device, like=like)


def model_from_weights(
    run_path: Path,
    weights: Mapping[str, Any],
    data_info: Mapping[str, Any] | None = None,
    device: Any = "cpu",
    *,
    like: nn.Module | None = None,
) -> tuple[nn.Module, Profile]:
    """A fresh model of the run's profile holding ``weights`` (e.g. a live snapshot), eval mode.

    ``like`` is the live model when this process is training the run (the control socket's
    ``generate``, the dashboard's preview). A plain build would initialise weights from the
    global torch RNG that the training thread is drawing its dropout from, and a run that was
    sampled from would no longer train like one that was not. With ``like`` the model is built
    on the meta device (no initialisation, no RNG, no memory), then filled: ``weights`` for the
    state, the live model for the buffers no state dict holds (tables computed at build time).
    """
    profile = run_profile(run_path)
    return _model_with(profile, weights, data_info, device, like), profile


def _model_with(
    profile: Profile,
    weights: Mapping[str, Any],
    data_info: Mapping[str, Any] | None,
    device: Any,
    like: nn.Module | None,
) -> nn.Module:
    family = profile.family_spec
    sampler_of(family)  # no model is built for a family that cannot sample
    info = dict(data_info or {})
    if like is None:
        model = family.build_model(profile.model, info)
        model.load_state_dict(weights)
        return model.to(device).eval()
    import torch

    with torch.device("meta"):
        model = family.build_model(profile.model, info)
    model = model.to_empty(device=device)
    model.load_state_dict(weights)
    live = dict(like.named_buffers())
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name not in weights:  # a non-persistent buffer: the same in every build
                if name not in live:
                    raise GenerateError(f"the live model has no buffer {name!r} to copy")
                buffer.copy_(live[name])
    return model.eval()


def checkpoint_step(state: Mapping[str, Any]) -> int | None:
    """The training step a checkpoint's state was saved at (None for a state that says not)."""
    saved = state.get("saved")
    step = saved.get("step") if isinstance(saved, Mapping) else None
    if step is None:
        step = (state.get("train_state") or {}).get("step")
    return int(step) if isinstance(step, int) else None


def sample_name(checkpoint: str, sample: Sample) -> str:
    """A file stem: checkpoint, conditioning values and seed ("latest-Q1-Cmaj-seed3")."""
    parts = [checkpoint, *(v for v in sample.conditioning.values() if v), f"seed{sample.seed}"]
    return "-".join(re.sub(r"[^A-Za-z0-9_.#+-]", "", p) for p in parts)


def write_midi(sampler: SamplerSpec, sample: Sample, path: Path) -> Path:
    """Decode and write atomically (a half-written .mid never shows in the sample list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    midi = sampler.to_midi(sample)
    tmp = path.with_name(f".{path.name}.tmp")
    midi.write(str(tmp))
    tmp.replace(path)
    return path


def meta_path(midi_path: Path) -> Path:
    """Where a sample's metadata lives: beside its MIDI, same stem, ``.json``."""
    return midi_path.with_suffix(".json")


def sample_meta(run_path: Path, family: str, request: SampleRequest, sample: Sample) -> dict:
    """What a sample came from and what ended it, JSON-able: the sidecar's content, so that a
    script can tell two samples of the same seed apart when ``latest`` moved in between."""
    return {
        "run": run_path.name,
        "family": family,
        "checkpoint": sample.checkpoint,
        "step": sample.step,
        "seed": sample.seed,
        "requested": dict(sample.requested),
        "conditioning": dict(sample.conditioning),
        "drawn": list(sample.drawn),
        "bars_asked": request.bars,
        "seconds_asked": request.seconds,
        "tokens_asked": request.tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tokens": len(sample.tokens),
        "bars": sample.bars,
        "ended": sample.ended,
        "note": sample.note,
    }


def write_meta(meta: Mapping[str, Any], midi_path: Path) -> Path:
    """The sidecar, written atomically before its MIDI (a listed sample always has one)."""
    path = meta_path(midi_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_meta(midi_path: Path) -> dict[str, Any] | None:
    """A sample's sidecar, or None when it has none (an older sample, a file from elsewhere)."""
    try:
        meta = json.loads(meta_path(midi_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def source_words(checkpoint: str, step: int | None) -> str:
    """ "checkpoint latest (step 120)", "live weights (step 37)"."""
    what = "live weights" if checkpoint == "live" else f"checkpoint {checkpoint}"
    return what + (f" (step {step})" if step is not None else "")


def conditioning_words(
    conditioning: Mapping[str, str], drawn: Sequence[str] = (), detected_key: str | None = None
) -> str:
    """ "emotion Q1 · key requested A:min · detected E:maj": each value, whether it was asked or
    drawn by the seed, and (for an option named ``key``, the musical key) what the analyser
    hears, so that a detected key is never taken for the one asked."""
    parts = []
    for name, value in conditioning.items():
        if not value:
            continue
        how = "drawn" if name in drawn else "requested"
        if name == "key" and detected_key is not None:
            parts.append(f"key {how} {value} · detected {detected_key}")
        else:
            parts.append(f"{name} {value}" + (" (drawn)" if name in drawn else ""))
    if "key" not in conditioning and detected_key is not None:
        parts.append(f"detected key {detected_key}")
    return " · ".join(parts)


def generate_from_run(
    run_path: Path,
    checkpoint: str,
    request: SampleRequest,
    *,
    out: Path | None = None,
    device: Any = "cpu",
    weights: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    like: nn.Module | None = None,
    step: int | None = None,
) -> tuple[Sample, Path]:
    """Sample from a checkpoint (or from ``weights``, e.g. a copy of the live ones, taken at
    ``step``) and write the MIDI under ``RUN/samples/`` (or ``out``), with its metadata beside
    it (``meta_path``). Blank conditioning values are drawn first, by the family's ``draw``
    from the checkpoint's data info (what the training data pairs). In a process that trains
    the run, pass its live model as ``like`` (see ``model_from_weights``): sampling then never
    moves the run's RNG. The sample says which checkpoint and step it came from."""
    import torch

    profile = run_profile(run_path)
    sampler = sampler_of(profile.family_spec)
    asked = check_request(sampler, request.conditioning, profile.family)
    stem = checkpoint if step is None else f"{checkpoint}-step{step}"  # live weights
    if weights is None:
        state = _checkpoint_state(run_path, checkpoint)
        weights, data_info = state["model"], state.get("data_info")
        step, stem = checkpoint_step(state), checkpoint
    model = _model_with(profile, weights, data_info, device, like)
    used = sampler.draw(asked, data_info or {}, request.seed) if sampler.draw else asked
    request = dataclasses.replace(request, conditioning=used)
    sample = sampler.sample(model, profile, [request], torch.device(device))[0]
    # A blank option the family derives from another one that was asked (a text's semantic
    # token) counts as asked, so it is not reported as drawn by the seed.
    derived = {
        o.name: used.get(o.name, "")
        for o in sampler.options
        if o.derived_from and not asked.get(o.name) and asked.get(o.derived_from)
    }
    sample = dataclasses.replace(
        sample, requested={**asked, **derived}, checkpoint=checkpoint, step=step
    )
    path = out if out is not None else run_path / "samples" / f"{sample_name(stem, sample)}.mid"
    write_meta(sample_meta(run_path, profile.family, request, sample), path)
    return sample, write_midi(sampler, sample, path)


def request_from_args(args: Mapping[str, Any]) -> tuple[str, SampleRequest]:
    """The control socket's ``generate`` arguments as (checkpoint, request)::

        {"checkpoint": "latest" | "live" | NAME, "conditioning": {"emotion": "Q1"},
         "bars": 8, "tokens": null, "seconds": null, "temperature": null, "top_p": null, "seed": 0}

    Raises:
        GenerateError: an argument of the wrong type or range, named.
    """

    def number(name: str, cast: type, low: float, high: float) -> Any:
        value = args.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GenerateError(f"args.{name} must be a number (got {value!r})")
        if cast is int and value != int(value):
            raise GenerateError(f"args.{name} must be a whole number (got {value!r})")
        if not low <= value <= high:
            raise GenerateError(f"args.{name} must be between {low:g} and {high:g} (got {value})")
        return cast(value)

    checkpoint = args.get("checkpoint", "latest")
    if not isinstance(checkpoint, str) or not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", checkpoint
    ):
        raise GenerateError(
            f"args.checkpoint must be a checkpoint name or 'live' (got {checkpoint!r})"
        )
    conditioning = args.get("conditioning", {})
    if not isinstance(conditioning, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in conditioning.items()
    ):
        raise GenerateError("args.conditioning must map option names to strings")
    tokens, seconds = number("tokens", int, 1, 100_000), number("seconds", float, 1e-3, 3600)
    bars = number("bars", int, 1, 1024)
    request = SampleRequest(
        conditioning=conditioning,
        bars=bars if bars is not None else (None if tokens or seconds else 8),
        tokens=tokens,
        seconds=seconds,
        temperature=number("temperature", float, 0.0, 10.0),
        top_p=number("top_p", float, 1e-6, 1.0),
        seed=number("seed", int, 0, 2**63 - 1) or 0,
    )
    return checkpoint, request


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
    n = len(sample.tokens) - 1  # the first token is the conditioning prompt
    return n / sample.seconds if sample.seconds > 0 else math.inf
